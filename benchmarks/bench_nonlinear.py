"""Cost of the non-linear MSA tree level against Langevin (issue 6).  Not a test:
``python -m benchmarks.bench_nonlinear [--case issue|small] [--kappa K] [--N N] [--steps S]``.

A mean-field erf network (χ = N) on the Hermite task: the time of the annealed tree level
(with its own Monte Carlo error) against the time marginal Langevin needs for the
standard error of its test mean to fall to 0.01·std(y), and to the tree level's own test
SE.  Langevin runs ``--steps`` steps (4 chains, a fifth more as burn-in); its time to a
standard error is extrapolated from that run, ``t ∝ 1/SE²`` after burn-in, and is only
meaningful when its R̂ is near 1 (printed).  The test means of the two are compared by
z-scores (the tree level is the N → ∞ limit, so O(1/N) differences are expected).

``--case issue`` is the issue's size (d = 50, P = 100, κ = 1 by default: at κ = 0.05
neither side mixes, see README); ``--case small`` the size the mean-field tests use
(d = 10, P = 16, κ = 0.05).  The tree level does not depend on N at χ = N (its tilt
``g_a χ/N`` is g_a); Langevin's cost grows with N.  A tree level that fails is reported
with its one-line reason and its time to failure; Langevin is measured all the same.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import msa_engine as msa
from msa_engine.sampling import simulate

from .bench_tilted import mixing

CASES = {"issue": {"d": 50, "P": 100, "P_test": 50, "kappa": 1.0, "steps": 40_000},
         "small": {"d": 10, "P": 16, "P_test": 40, "kappa": 0.05, "steps": 8_000}}


def stage_times(log, start: float, end: float) -> list[tuple[str, float, int, float]]:
    """Where a solve's time went: ``(stage, χ, iterations, seconds)`` for each run of
    consecutive log records at one (stage, χ), timed from the record before it (or
    ``start``), then ``("final", χ, 0, s)`` for the time after the last record (the final
    runs on fresh samples).  Record times are ``time.time()`` stamps."""
    out: list[list] = []
    prev = start
    for rec in log:
        key = (rec.stage, float(rec.chi))
        if not out or (out[-1][0], out[-1][1]) != key:
            out.append([key[0], key[1], 0, 0.0])
        out[-1][2] += 1
        out[-1][3] += rec.time - prev
        prev = rec.time
    if log:
        out.append(["final", float(log[-1].chi), 0, end - prev])
    return [tuple(r) for r in out]


def print_mixing(mx: dict) -> None:
    """The lines of :func:`benchmarks.bench_tilted.mixing` at the solved saddle."""
    print(f"  the tilted measure at the saddle (c = {mx['c']:g}, {mx['chains']} fresh chains):")
    print(f"    MALA: autocorrelation time of s² {mx['tau_mala']:.0f} steps (step size "
          f"{mx['mala_step_size']:.3f})")
    print(f"    independence sampler, best Gaussian fit as proposal: acceptance "
          f"{mx['independence_acceptance']:.4f}")
    print(f"    elliptical slice sampling (never rejects, moves the Gaussian bulk freely): "
          f"autocorrelation time {mx['tau_ess']:.0f} iterations × {mx['ess_evals']:.1f} "
          f"evaluations; mean s² {mx['ess_s2_mean']:.1f} (MALA {mx['s2_mean']:.1f})",
          flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--case", choices=sorted(CASES), default="issue")
    ap.add_argument("--kappa", type=float, default=None)
    ap.add_argument("--N", type=int, default=100)
    ap.add_argument("--steps", type=int, default=None, help="Langevin steps after burn-in")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-mixing", action="store_true",
                    help="skip the mixing diagnostics of the solved tilted measure")
    args = ap.parse_args(argv)
    case = CASES[args.case]
    kappa = case["kappa"] if args.kappa is None else args.kappa
    steps = case["steps"] if args.steps is None else args.steps
    data = msa.make_data({"task": "hermite", "d": case["d"], "P": case["P"],
                          "P_test": case["P_test"], "seed": 0})
    p = msa.Problem(data, msa.Network.make("erf", N=args.N, g_w=1.5, g_a=0.8, kappa=kappa,
                                           chi="mean-field"))
    target = 0.01 * float(np.std(data.y_train))
    print(f"case {args.case}: d={data.d} P={data.P} P*={data.P_test} N={args.N} "
          f"kappa={kappa}, target test-mean SE {target:.4f}", flush=True)
    t0, wall0 = time.perf_counter(), time.time()
    try:
        tree = msa.solve(p, "tree", seed=args.seed)
    except msa.MSAError as exc:
        tree = None
        print(f"tree level: FAILED after {time.perf_counter() - t0:.1f} s: {exc}", flush=True)
    t_tree = time.perf_counter() - t0
    se_tree = None
    if tree is not None:
        se_tree = float(np.sqrt(np.mean(tree.test_mean_se ** 2)))
        print(f"tree level: {t_tree:.1f} s, test-mean SE {se_tree:.4f}, residual mean z² "
              f"{tree.extras['residual_z2']:.2f}, noise {tree.extras['residual_noise']:.3f}, "
              f"{tree.extras['chains']} chains", flush=True)
        # the cost criterion is far off (issue 6): say where the time goes
        parts = stage_times(tree.log, wall0, time.time())
        at_target = sum(t for _, chi, _, t in parts if abs(chi - p.network.chi) < 1e-9)
        print(f"  where it went: {at_target:.0f} s at the target χ = {p.network.chi:g} "
              f"({at_target / t_tree:.0%}), the anneal before it {t_tree - at_target:.0f} s")
        for stage, chi, its, t in parts:
            print(f"    {stage:10s} χ = {chi:8.4g}  {its:3d} iterations  {t:7.1f} s")
        if not args.no_mixing:
            # a writable copy: the result's arrays are read-only, another numba type
            print_mixing(mixing(p, np.array(tree.tbar)))
    burn = steps // 5
    t0 = time.perf_counter()
    sim = simulate(p, steps=steps, burn_in=burn, thin=4, seed=1)
    t_sim = time.perf_counter() - t0
    se = float(np.sqrt(np.mean(sim.test_mean_se ** 2)))
    t_burn = t_sim * burn / (steps + burn)

    def time_to(s):
        return (t_sim - t_burn) * (se / s) ** 2 + t_burn

    print(f"langevin: {t_sim:.1f} s for {steps} steps (+{burn} burn-in), test-mean SE "
          f"{se:.4f}, R-hat {sim.rhat_max:.3f}; time to SE {target:.4f}: "
          f"~{time_to(target):.0f} s", flush=True)
    if tree is None:
        return 1
    z = (tree.test_mean - sim.test_mean) / np.hypot(tree.test_mean_se, sim.test_mean_se)
    print(f"tree vs langevin on the test points: max|z| {np.max(np.abs(z)):.2f}, mean z² "
          f"{np.mean(z ** 2):.2f}")
    print(f"speed-up of the tree level: ~{time_to(target) / t_tree:.2f}x at SE {target:.4f}, "
          f"~{time_to(se_tree) / t_tree:.2f}x at the tree's own SE {se_tree:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
