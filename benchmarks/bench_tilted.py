"""Step cost of the tilted-measure MALA kernel (issue 6) against its numpy reference, and
how fast samplers of the tilted measure mix (:func:`mixing`).
Not a test: ``python -m benchmarks.bench_tilted``.

Both advance the same chains with the same random numbers (they agree to round-off, which
tests/test_nonlinear_tilted.py checks step for step); reported: microseconds a
chain-step, the median of repeated runs, side by side in one process.  Shapes: the
mean-field tests' (erf, d = 10, P = 16, m = 10) and the issue's cost case (d = 50,
P = 100, m = 50), at 256 and 1024 chains.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import msa_engine as msa
from msa_engine.diagnostics import mcse_mean, pooled_autocorr_time
from msa_engine.theory import tilted as T
from msa_engine.theory.nonlinear import _c


def _time(fn, args_fn, reps):
    out = []
    for _ in range(reps):
        args = args_fn()
        t0 = time.perf_counter()
        fn(*args)
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


def measure(d, P, chains, steps=40, reps=5, activation="erf"):
    data = msa.make_data({"task": "hermite", "d": d, "P": P, "P_test": 5, "seed": 0})
    p = msa.Problem(data, msa.Network.make(activation, N=100, g_w=1.5, g_a=0.8, kappa=1.0,
                                           chi=100.0))
    g = T.TiltedGeometry(p)
    m = g.m
    rng = np.random.default_rng(3)
    tb = 0.1 * rng.standard_normal(P) / np.sqrt(P)
    xi, lu = rng.standard_normal((steps, chains, m)), np.log(rng.random((steps, chains)))
    ze, lu2 = rng.standard_normal((steps, chains, m)), np.log(rng.random((steps, chains)))
    L = np.linalg.cholesky(np.eye(m) + 0.2 * np.ones((m, m)) / m)
    Z0 = rng.standard_normal((chains, m))

    def args():
        Z = Z0.copy()
        LP, S, GR = (a.copy() for a in T._np_logp_grad(g.code, g.A, tb, 0.8, Z))
        return (Z, LP, S, GR, g.A, tb, 0.8, g.code, L, 0.3, xi, lu, ze, lu2, 1, 0, 2,
                np.zeros((chains, steps // 2, m)), np.zeros((2, chains)))

    T.tilted_chunk(*args())          # compile / load the cache outside the timing
    per = steps * chains * 1e-6
    ours = _time(T.tilted_chunk, args, reps) / per
    ref = _time(T.reference_chunk, args, reps) / per
    return ours, ref


def _log_target(geom, tbar, c, Z):
    """log p_t̄ (unnormalised) in the whitened coordinate: −|z|²/2 + (c/2) s², and s."""
    s = geom.phi(Z) @ tbar
    return -0.5 * np.einsum("ij,ij->i", Z, Z) + 0.5 * c * s * s, s


def _gaussian_fits(Z, symmetric):
    """Candidate Gaussian approximations ``(means, L)`` of the states ``Z``: an equal
    mixture over ``means`` with covariance ``L Lᵀ``.  For odd φ (``p(z) = p(−z)``) the
    zero-mean Gaussian of the second moment and the ± pair fitted to the states folded
    by the top eigenvector's sign (the preconditioner's fold); else the fitted Gaussian."""
    m = Z.shape[1]
    jitter = 1e-9 * np.eye(m)
    if not symmetric:
        return [(Z.mean(0)[None], np.linalg.cholesky(np.cov(Z.T) + jitter))]
    M2 = Z.T @ Z / Z.shape[0]
    F = T.fold_mirror_modes(Z)
    mu = F.mean(0)
    return [(np.zeros((1, m)), np.linalg.cholesky(M2 + jitter)),
            (np.stack([mu, -mu]), np.linalg.cholesky(np.cov(F.T) + jitter))]


def _log_mixture(Z, means, L):
    Li = np.linalg.inv(L)
    parts = [-0.5 * np.sum(((Z - mu) @ Li.T) ** 2, axis=1) for mu in means]
    return (np.logaddexp.reduce(parts, axis=0) - np.sum(np.log(np.diag(L)))
            - math.log(len(means)))


def independence_acceptance(geom, tbar, c, Z, rng, pairs=1 << 16) -> float:
    """Acceptance rate of an independence sampler whose proposal is the best Gaussian fit
    to the states ``Z`` (``E_{z~p, z'~q} min(1, w(z')/w(z))``, ``w = p/q``, estimated
    from ``pairs`` random pairs)."""
    best = 0.0
    Zp = Z[rng.integers(0, Z.shape[0], pairs)]
    for means, L in _gaussian_fits(Z, geom.code != 2):
        Q = rng.standard_normal(Zp.shape) @ L.T + means[rng.integers(0, len(means), pairs)]
        wq = _log_target(geom, tbar, c, Q)[0] - _log_mixture(Q, means, L)
        wp = _log_target(geom, tbar, c, Zp)[0] - _log_mixture(Zp, means, L)
        best = max(best, float(np.mean(np.exp(np.minimum(0.0, wq - wp)))))
    return best


def elliptical_slice(geom, tbar, c, Z, iters, rng):
    """Elliptical slice sampling (Murray, Adams & MacKay 2010) of ``p_t̄`` with the
    zero-mean Gaussian of the states' second moment as its reference, from the states
    ``Z``: a move along an ellipse changes the Gaussian bulk of ``z`` freely and is never
    rejected.  Returns the ``(chains, iters)`` trace of s² and the mean number of
    density evaluations per iteration."""
    n, m = Z.shape
    M2 = Z.T @ Z / n + 1e-9 * np.eye(m)
    L = np.linalg.cholesky(M2)
    M2i = np.linalg.inv(M2)

    def log_like(X):     # p_t̄ / N(0, M2)
        lp, s = _log_target(geom, tbar, c, X)
        return lp + 0.5 * np.einsum("ij,jk,ik->i", X, M2i, X), s

    z = Z.copy()
    lz, s = log_like(z)
    trace = np.empty((n, iters))
    evals = 0
    for it in range(iters):
        nu = rng.standard_normal((n, m)) @ L.T
        level = lz + np.log(rng.random(n))
        th = rng.uniform(0.0, 2.0 * math.pi, n)
        lo, hi = th - 2.0 * math.pi, th.copy()
        act = np.arange(n)
        while act.size:
            zp = z[act] * np.cos(th[act])[:, None] + nu[act] * np.sin(th[act])[:, None]
            lp, sp = log_like(zp)
            evals += act.size
            ok = lp > level[act]
            z[act[ok]], lz[act[ok]], s[act[ok]] = zp[ok], lp[ok], sp[ok]
            act = act[~ok]
            below = th[act] < 0.0
            lo[act[below]] = th[act[below]]
            hi[act[~below]] = th[act[~below]]
            th[act] = rng.uniform(lo[act], hi[act])
        trace[:, it] = s * s
    return trace, evals / (n * iters)


def mixing(problem, tbar, chains: int = 512, seed: int = 1, warm: int = 2000,
           steps: int = 800, ess_iters: int = 600) -> dict:
    """How fast the tilted measure at ``tbar`` can be sampled (issue 6's cost criterion).

    MALA as the solver runs it (``warm`` steps of burn-in and adaptation, then ``steps``):
    ``tau_mala`` the autocorrelation time of s² in steps.  Two samplers that do not
    diffuse, measured on the same measure: an independence sampler with the best Gaussian fit as its proposal
    (``independence_acceptance``), and elliptical slice sampling (``tau_ess`` in
    iterations, ``ess_evals`` density evaluations an iteration; a MALA step is about two
    evaluations' cost, its gradient being the second product)."""
    c = _c(problem)
    tbar = np.ascontiguousarray(tbar, dtype=float)
    sp = T.TiltedSampler(problem, chains=chains, seed=seed)
    for _ in range(max(1, warm // 500)):
        sp.sample(tbar, c, 100, 2, 300)
    Zs = sp.sample(tbar, c, steps // 2, 2, 0)
    n, draws, m = Zs.shape
    s2 = (sp.geom.phi(Zs.reshape(-1, m)) @ tbar).reshape(n, draws) ** 2
    Z = Zs.reshape(-1, m)
    rng = np.random.default_rng(seed)
    trace, evals = elliptical_slice(sp.geom, tbar, c, Zs[:, -1], ess_iters, rng)
    burn = ess_iters // 6
    kept = trace[:, burn:]
    return {"c": c, "chains": n, "tau_mala": 2.0 * pooled_autocorr_time(s2),
            "mala_step_size": math.exp(sp.log_h), "s2_mean": float(s2.mean()),
            "s2_se": float(mcse_mean(s2)),
            "independence_acceptance": independence_acceptance(sp.geom, tbar, c, Z, rng),
            "tau_ess": pooled_autocorr_time(kept), "ess_evals": evals,
            "ess_s2_mean": float(kept.mean()), "ess_s2_se": float(mcse_mean(kept))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)
    print("activation  d    P  chains   ours µs   numpy µs   numpy/ours")
    for act in ("erf", "relu"):
        for d, P in ((10, 16), (50, 100)):
            for chains in (256, 1024):
                ours, ref = measure(d, P, chains, reps=a.reps, activation=act)
                print(f"{act:10s} {d:3d} {P:4d} {chains:7d} {ours:9.2f} {ref:10.2f} "
                      f"{ref / ours:11.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
