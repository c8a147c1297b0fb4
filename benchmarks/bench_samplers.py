"""Throughput of the Langevin samplers (THEORY §7): steps per second at the sizes of the
performance issue.  Not a test: run ``python -m benchmarks.bench_samplers [--quick]``.

A "step" advances every chain once (4 chains here); the measurement of the
Rao-Blackwellised observables at every kept step is included, as in real runs.
"""

from __future__ import annotations

import argparse
import time

import msa_engine as msa
from msa_engine.sampling import simulate

SIZES = {"small": (30, 20, 100), "medium": (100, 200, 1000), "large": (200, 1000, 4000)}
STEPS = {"small": 400, "medium": 40, "large": 4}


def bench(size: str, sampler: str, chains: int = 4) -> float:
    d, P, N = SIZES[size]
    data = msa.make_data({"task": "linear", "d": d, "P": P, "P_test": max(10, P // 2), "seed": 0})
    p = msa.Problem(data, msa.Network.make("erf", N=N, g_w=1.5, g_a=0.8, kappa=0.1, chi=1.0))
    simulate(p, sampler=sampler, chains=chains, steps=4, burn_in=0, step_size=0.01)  # compile
    steps = STEPS[size]
    t0 = time.perf_counter()
    simulate(p, sampler=sampler, chains=chains, steps=steps, burn_in=0, step_size=0.01,
             chunk=steps)
    return steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small and medium sizes only")
    args = ap.parse_args(argv)
    sizes = ["small", "medium"] if args.quick else list(SIZES)
    print(f"{'size':8s} {'d':>4s} {'P':>5s} {'N':>5s} {'sampler':9s} {'steps/s':>10s}")
    for size in sizes:
        for sampler in ("marginal", "full"):
            d, P, N = SIZES[size]
            print(f"{size:8s} {d:4d} {P:5d} {N:5d} {sampler:9s} {bench(size, sampler):10.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
