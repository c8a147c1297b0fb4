"""Cost of the non-linear MSA tree level against Langevin (issue 6).  Not a test:
``python -m benchmarks.bench_nonlinear [--quick] [--case issue|small]``.

A mean-field erf network (N = 100, χ = N) on the Hermite task: the time of the annealed
tree level (with its own Monte Carlo error) against the time marginal Langevin needs for
the standard error of its test mean to fall to 0.01·std(y).  The Langevin time is
extrapolated from a pilot run, ``t ∝ 1/SE²`` after burn-in.

``--case issue`` is the issue's size (d = 50, P = 100); ``--case small`` the size the
mean-field tests use (d = 10, P = 16).  A tree level that fails is reported with its
one-line reason and its time to failure; the Langevin time is measured all the same.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import msa_engine as msa
from msa_engine.sampling import simulate

CASES = {"issue": {"d": 50, "P": 100, "P_test": 50}, "small": {"d": 10, "P": 16, "P_test": 40}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a shorter Langevin pilot")
    ap.add_argument("--case", choices=sorted(CASES), default="issue")
    ap.add_argument("--kappa", type=float, default=0.05)
    args = ap.parse_args(argv)
    data = msa.make_data({"task": "hermite", **CASES[args.case], "seed": 0})
    p = msa.Problem(data, msa.Network.make("erf", N=100, g_w=1.5, g_a=0.8, kappa=args.kappa,
                                           chi="mean-field"))
    target = 0.01 * float(np.std(data.y_train))
    print(f"case {args.case}: d={data.d} P={data.P} P*={data.P_test} kappa={args.kappa}, "
          f"target test-mean SE {target:.4f}", flush=True)
    t0 = time.perf_counter()
    try:
        tree = msa.solve(p, "tree", seed=0)
    except msa.MSAError as exc:
        tree = None
        print(f"tree level: FAILED after {time.perf_counter() - t0:.1f} s: {exc}", flush=True)
    t_tree = time.perf_counter() - t0
    if tree is not None:
        se_tree = float(np.sqrt(np.mean(tree.test_mean_se ** 2)))
        print(f"tree level: {t_tree:.1f} s, test-mean SE {se_tree:.4f}, residual mean z² "
              f"{tree.extras['residual_z2']:.2f}", flush=True)
    steps, burn = (1000, 500) if args.quick else (4000, 1000)
    t0 = time.perf_counter()
    sim = simulate(p, steps=steps, burn_in=burn, thin=2, seed=1)
    t_sim = time.perf_counter() - t0
    se = float(np.sqrt(np.mean(sim.test_mean_se ** 2)))
    t_needed = (t_sim * steps / (steps + burn)) * (se / target) ** 2 + t_sim * burn / (steps + burn)
    print(f"langevin pilot: {t_sim:.1f} s for {steps} steps, test-mean SE {se:.4f}, R-hat "
          f"{sim.rhat_max:.3f}; time to SE {target:.4f}: ~{t_needed:.0f} s", flush=True)
    if tree is not None:
        print(f"speed-up of the tree level: ~{t_needed / t_tree:.1f}x")
    return 0 if tree is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
