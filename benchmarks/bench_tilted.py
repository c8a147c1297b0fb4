"""Step cost of the tilted-measure MALA kernel (issue 6) against its numpy reference.
Not a test: ``python -m benchmarks.bench_tilted``.

Both advance the same chains with the same random numbers (they agree to round-off, which
tests/test_nonlinear_tilted.py checks step for step); reported: microseconds a
chain-step, the median of repeated runs, side by side in one process.  Shapes: the
mean-field tests' (erf, d = 10, P = 16, m = 10) and the issue's cost case (d = 50,
P = 100, m = 50), at 256 and 1024 chains.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import msa_engine as msa
from msa_engine.theory import tilted as T


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
