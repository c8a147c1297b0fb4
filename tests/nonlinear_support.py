"""Shared fixed cases and helpers of the non-linear theory tests (THEORY §4, §6, §9).

The cases are fixed in advance (issue 6): erf on the Hermite task (odd target), ReLU on
the Hermite and XOR tasks, χ ∈ {1, √N, N} with N = 100.
"""

import math

import numpy as np

import msa_engine as msa
from msa_engine import diagnostics as diag
from msa_engine.sampling.run import _Run

G_W, G_A = 1.5, 0.8
N = 100
Z_ORDER = 3.0      # an ordering of two theories must hold by this many standard errors


def hermite_problem(activation="erf", chi=float(N), P_test=40, d=10, P=16, kappa=0.05,
                    g_w=G_W, g_a=G_A):
    data = msa.make_data({"task": "hermite", "d": d, "P": P, "P_test": P_test, "seed": 0})
    return msa.Problem(data, msa.Network.make(activation, N=N, g_w=g_w, g_a=g_a,
                                              kappa=kappa, chi=chi))


def xor_problem(chi=float(N), g_w=G_W, g_a=G_A):
    data = msa.make_data({"task": "xor", "d": 10, "P": 40, "P_test": 40, "seed": 0})
    return msa.Problem(data, msa.Network.make("relu", N=N, g_w=g_w, g_a=g_a, kappa=0.05,
                                              chi=chi))


def simulate_with_batches(problem, steps, burn_in, thin=2, chains=4, seed=3, chunk=500):
    """``simulate`` (marginal MALA), also returning jackknife SEs of the Σ_W outlier excess
    and of its top eigenvector's teacher overlap over the (chain, batch) blocks."""
    run = _Run(problem, "marginal", chains, steps, burn_in, thin, "mala", None, seed, chunk)
    while run.steps_done < run.total:
        run.advance(min(run.steps_done + chunk, run.total))
    res = run.result((), 0.0, float("nan"))
    m = run.m_done
    counts = np.bincount((np.arange(m) * run.nbatch) // run.m_total, minlength=run.nbatch)
    blocks = run.SWb.reshape(-1, *run.SWb.shape[2:])
    n_blocks = np.tile(counts, run.SWb.shape[0])
    tot, ntot = blocks.sum(axis=0), n_blocks.sum()
    teacher = problem.data.teacher
    s2 = problem.network.g_w / problem.data.d

    def summary(S):
        ev, V = np.linalg.eigh(0.5 * (S + S.T))
        return ev[-1] / s2 - 1.0, abs(V[:, -1] @ teacher) / np.linalg.norm(teacher)

    reps = np.array([summary((tot - b) / (ntot - nb)) for b, nb in zip(blocks, n_blocks)])
    G = len(reps)
    se = np.sqrt((G - 1) / G * np.sum((reps - reps.mean(axis=0)) ** 2, axis=0))
    return res, {"excess": summary(tot / ntot)[0], "excess_se": float(se[0]),
                 "overlap": summary(tot / ntot)[1], "overlap_se": float(se[1])}


def zscores(theory, sim):
    return np.concatenate([
        (theory.train_mean - sim.train_mean) / np.hypot(theory.train_mean_se, sim.train_mean_se),
        (theory.test_mean - sim.test_mean) / np.hypot(theory.test_mean_se, sim.test_mean_se)])


def rms_error(theory, sim, which="test"):
    """rms deviation from the simulation, with the simulation's (and theory's) MC noise
    subtracted in quadrature (an unbiased estimate of the squared deviation)."""
    a = getattr(theory, f"{which}_mean")
    b = getattr(sim, f"{which}_mean")
    se2 = getattr(theory, f"{which}_mean_se") ** 2 + getattr(sim, f"{which}_mean_se") ** 2
    return math.sqrt(max(float(np.mean((a - b) ** 2 - se2)), 0.0))


def _msd(theory, sim):
    """D and the pieces of its error: D depends on the simulation through
    ``−(2/P*) (f − f_sim)·δf_sim`` and on the theory through ``(2/P*) (f − f_sim)·δf``."""
    d = theory.test_mean - sim.test_mean
    D = float(np.mean(d ** 2 - theory.test_mean_se ** 2 - sim.test_mean_se ** 2))
    return D, 2.0 * d / d.size


def _theory_var(theory, a):
    reps = theory.extras.get("test_mean_jackknife")
    if reps is None:            # deterministic theory (NNGP, rescaling)
        assert np.all(theory.test_mean_se == 0)
        return 0.0
    proj = reps @ a
    G = proj.size
    return float((G - 1) / G * np.sum((proj - proj.mean()) ** 2))


def difference(th_a, th_b, sim):
    """``D_a − D_b`` and its standard error."""
    Da, ga = _msd(th_a, sim)
    Db, gb = _msd(th_b, sim)
    # simulation: one functional of the per-draw test means, with its own ESS
    u = sim.traces["test_mean"] @ (ga - gb)
    var = float(diag.mcse_mean(u)) ** 2 + _theory_var(th_a, ga) + _theory_var(th_b, gb)
    return Da - Db, float(np.sqrt(var))
