"""Theory solve times, time to equal accuracy and cost exponents (issue 7).

Run through ``msa bench`` (or ``python -m benchmarks.bench_theory [--quick]``).

* **Solve times** of the exact linear quadrature, the one loop and the rescaling at
  P ∈ {100, 500, 2000} (``--quick``: {100, 500}) on the linear task with d = 200,
  P* = 100, mean-field scaling χ = N and N = 2P: the one loop is an expansion in 1/N at
  fixed P (THEORY §4) and is asked for at N above P.  ``ours_s`` is ``msa.solve`` (kernel,
  eigendecomposition, annealing and observables included).  ``numpy_s`` is a plain
  NumPy/SciPy reference of the same computation, written here independently
  (exact, rescaling: a dense ``eigh`` of the P×P kernel, a brute log-q grid or a bracketed
  root; one loop: the tree annealed with the engine's dense reference Newton
  ``solve_tree``, one P×P solve per step, then the same loop step).  Each record carries
  the largest difference of the test means between the two.
* **Time to equal accuracy**: on the README's problem (d = 30, P = 20, N = 100, χ = N) the
  one loop's solve time against the time marginal Langevin needs for the standard error
  of its test mean to reach (a) the one loop's rms deviation from the exact posterior and
  (b) 1% of std(y), extrapolated from a pilot run as ``t ∝ 1/SE²`` (burn-in counted once).
* **Exponents**: slopes of log time against log P (theories, from the solve records) and
  of the Langevin step cost against log P, log N, log d (``simulate``, one at a time).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import msa_engine as msa
from msa_engine.theory import chi_grid
from msa_engine.theory import linear as lin
from msa_engine.theory.gp import Spectral

from .harness import fit_exponent, record, time_call

THEORY_D = 200
THEORY_P_TEST = 100
SIZES = (100, 500, 2000)
QUICK_SIZES = (100, 500)
THEORY_NAMES = ("exact", "one-loop", "rescaling")
G_W, G_A, KAPPA = 1.5, 0.8, 0.1


def theory_problem(P: int, d: int = THEORY_D, N: int | None = None,
                   P_test: int = THEORY_P_TEST) -> msa.Problem:
    data = msa.make_data({"task": "linear", "d": d, "P": P, "P_test": P_test, "seed": 1})
    return msa.Problem(data, msa.Network.make("linear", N=N or 2 * P, g_w=G_W, g_a=G_A,
                                              kappa=KAPPA, chi="mean-field"))


# --------------------------------------------------------------------------- references
def _dense_spectrum(problem):
    data, net = problem.data, problem.network
    s2 = net.g_w / data.d
    C = s2 * data.X_train @ data.X_train.T
    lam, U = np.linalg.eigh(C)
    lam = np.maximum(lam, 0.0)
    return lam, U.T @ data.y_train, (s2 * data.X_test @ data.X_train.T) @ U


def reference_exact(problem) -> np.ndarray:
    """Exact posterior test mean by brute force on a log-q grid (dense eigh; THEORY §5)."""
    net = problem.network
    lam, yr, M = _dense_spectrum(problem)
    chi, N, g_a, kappa = net.chi, net.N, net.g_a, net.kappa

    def logp(u):
        q = np.exp(u)[:, None]
        den = q * lam + kappa
        return ((N / 2) * u - np.exp(u) * N / (2 * g_a) - 0.5 * np.log(den).sum(1)
                - 0.5 * chi * (yr ** 2 / den).sum(1))

    coarse = np.linspace(math.log(g_a) - 30, math.log(g_a) + 30, 3001)
    lc = logp(coarse)
    inside = coarse[lc > lc.max() - 60]
    step = coarse[1] - coarse[0]
    u = np.linspace(inside[0] - step, inside[-1] + step, 4001)
    lu = logp(u)
    p = np.exp(lu - lu.max())
    p /= p.sum()
    q = np.exp(u)
    return M @ (yr * (p @ (q[:, None] / (q[:, None] * lam + kappa))))


def reference_rescaling(problem) -> np.ndarray:
    """Rescaling test mean: dense eigh, the scalar one-loop equation bracketed and solved
    with ``scipy.optimize.brentq`` (its largest-density root), then the GP mean."""
    from scipy.optimize import brentq
    net = problem.network
    lam, yr, M = _dense_spectrum(problem)
    g_a, N, chi, kappa = net.g_a, net.N, net.chi, net.kappa

    def h(Q):
        den = Q * lam + kappa
        return Q * (1 + (g_a / N) * (np.sum(lam / den) - chi * np.sum(lam * yr ** 2 / den ** 2))) - g_a

    def logp(Q):
        den = Q * lam + kappa
        return ((N / 2) * math.log(Q) - Q * N / (2 * g_a) - 0.5 * np.log(den).sum()
                - 0.5 * chi * (yr ** 2 / den).sum())

    grid = g_a * np.logspace(-14, 14, 2801)
    hs = np.array([h(Q) for Q in grid])
    roots = [brentq(h, grid[i], grid[i + 1], xtol=1e-300, rtol=1e-15)
             for i in np.nonzero((hs[:-1] < 0) & (hs[1:] >= 0))[0]]
    Q = max(roots, key=logp)
    return Q * (M @ (yr / (Q * lam + kappa)))


def reference_one_loop(problem) -> np.ndarray:
    """The one loop with its tree annealed by the dense reference Newton (P×P solves)."""
    sp = Spectral.of(problem, low_rank=False)
    tbar = None
    for chi in chi_grid(problem.network.chi):
        tbar, *_ = lin.solve_tree(problem.with_chi(float(chi)), tbar)
    return lin.one_loop(problem, sp, tbar0=tbar).test_mean


REFERENCES = {"exact": reference_exact, "rescaling": reference_rescaling,
              "one-loop": reference_one_loop}
REFERENCE_NOTES = {
    "exact": "dense eigh + brute log-q grid (NumPy)",
    "rescaling": "dense eigh + brentq on the scalar equation (NumPy/SciPy)",
    "one-loop": "tree annealed by dense Newton (P×P solve per step) + loop step",
}


# --------------------------------------------------------------------------- solve times
def theory_records(quick: bool = False, repeats: int = 3, sizes=None, progress=None,
                   reference: bool = True) -> list[dict]:
    """Solve-time records of the linear theories, ours against the NumPy references."""
    sizes = tuple(sizes or (QUICK_SIZES if quick else SIZES))
    out = []
    msa.solve(theory_problem(20, d=10), "exact")   # imports (scipy.optimize) outside timing
    for P in sizes:
        pb = theory_problem(P, d=min(THEORY_D, 10 * P))
        for name in THEORY_NAMES:
            if progress:
                progress(f"theory {name} at P = {P}")
            reps = 1 if P >= 2000 else repeats
            ours_s, res = time_call(lambda: msa.solve(pb, name), repeats=reps)
            numpy_s = diff = None
            if reference:
                numpy_s, ref_mean = time_call(lambda: REFERENCES[name](pb), repeats=1)
                diff = float(np.max(np.abs(ref_mean - res.test_mean)))
            out.append(record(
                f"theory/{name}", f"P={P}", ours_s, numpy_s, None, None,
                P=P, d=pb.data.d, N=pb.network.N, chi=pb.network.chi, P_test=pb.data.P_test,
                iterations=len(res.log), max_abs_diff_vs_numpy=diff,
                numpy_reference=REFERENCE_NOTES[name] if reference else None))
    return out


def theory_exponents(records: list[dict]) -> dict:
    """Slope of log solve time against log P for each theory in ``records``."""
    out = {}
    for name in THEORY_NAMES:
        rows = [r for r in records if r["name"] == f"theory/{name}"]
        out[f"theory/{name}"] = {"P": fit_exponent([r["P"] for r in rows],
                                                   [r["ours_s"] for r in rows])}
    return out


# --------------------------------------------------------------------------- accuracy
def accuracy_record(quick: bool = False, progress=None) -> dict:
    """One loop against Langevin on the same linear problem: time to equal accuracy."""
    from msa_engine.sampling import simulate
    data = msa.make_data({"task": "linear", "d": 30, "P": 20, "P_test": 40, "seed": 1})
    pb = msa.Problem(data, msa.Network.make("linear", N=100, g_w=G_W, g_a=G_A, kappa=KAPPA,
                                            chi="mean-field"))
    if progress:
        progress("time to equal accuracy: theory")
    t_theory, loop = time_call(lambda: msa.solve(pb, "one-loop"), repeats=3)
    exact = msa.solve(pb, "exact")
    dev = float(np.sqrt(np.mean((loop.test_mean - exact.test_mean) ** 2)))
    frac_target = 0.01 * float(np.std(data.y_train))
    simulate(pb, steps=20, burn_in=20, chunk=20, seed=0)          # compile outside timing
    steps, burn = (2000, 500) if quick else (8000, 2000)
    if progress:
        progress(f"time to equal accuracy: Langevin pilot ({steps} steps)")
    t0 = time.perf_counter()
    sim = simulate(pb, steps=steps, burn_in=burn, seed=1)
    t_sim = time.perf_counter() - t0
    se = float(np.sqrt(np.mean(sim.test_mean_se ** 2)))
    t_step = t_sim / (steps + burn)

    def needed(target):
        return t_step * burn + t_step * steps * (se / target) ** 2

    return record(
        "accuracy/one-loop-vs-langevin", "d=30,P=20,N=100", t_theory, None, None, None,
        one_loop_rms_error_vs_exact=dev, target_fraction_of_std_y=0.01,
        target_std_y=frac_target, pilot_steps=steps, pilot_burn_in=burn, pilot_s=t_sim,
        pilot_test_mean_se=se, chains=sim.chains,
        langevin_s_to_theory_error=needed(dev), langevin_s_to_1pct_std_y=needed(frac_target),
        theory_speedup_at_theory_error=needed(dev) / t_theory,
        theory_speedup_at_1pct_std_y=needed(frac_target) / t_theory)


# --------------------------------------------------------------------------- exponents
SCALING_BASE = {"d": 50, "P": 100, "N": 400}
SCALING_VARY = {"P": (50, 100, 200, 400), "N": (200, 400, 800, 1600), "d": (25, 50, 100, 200)}


def _step_cost(sampler: str, d: int, P: int, N: int, budget_s: float) -> float:
    from msa_engine.sampling import simulate
    data = msa.make_data({"task": "linear", "d": d, "P": P, "P_test": 10, "seed": 0})
    pb = msa.Problem(data, msa.Network.make("linear", N=N, g_w=G_W, g_a=G_A, kappa=KAPPA,
                                            chi=1.0))
    kw = dict(sampler=sampler, chains=1, burn_in=0, step_size=1e-3, seed=0)
    t0 = time.perf_counter()
    simulate(pb, steps=10, chunk=10, **kw)                       # compile + estimate
    est = max((time.perf_counter() - t0) / 10, 1e-6)
    steps = int(min(20000, max(20, budget_s / est)))
    t0 = time.perf_counter()
    simulate(pb, steps=steps, chunk=steps, **kw)
    return (time.perf_counter() - t0) / steps


def sampler_exponents(quick: bool = False, progress=None) -> dict:
    """Slopes of the Langevin step cost (one chain) in P, N and d, one varied at a time."""
    out = {}
    budget = 0.25 if quick else 0.6
    for sampler in ("marginal", "full"):
        exps, points = {}, {}
        for var, values in SCALING_VARY.items():
            if quick:
                values = values[1:]
            ts = []
            for v in values:
                if progress:
                    progress(f"step cost: {sampler} sampler, {var} = {v}")
                args = dict(SCALING_BASE, **{var: v})
                ts.append(_step_cost(sampler, args["d"], args["P"], args["N"], budget))
            exps[var] = fit_exponent(values, ts)
            points[var] = {"values": list(values), "step_s": ts}
        out[f"langevin/{sampler}"] = {**exps, "base": dict(SCALING_BASE), "points": points}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    recs = theory_records(args.quick, progress=lambda m: print(m, flush=True))
    for r in recs:
        print(r)
    print(theory_exponents(recs))
    print(accuracy_record(args.quick))
    print(sampler_exponents(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
