"""Shared measurement helpers for ``msa bench`` (issue 7): the machine's DGEMM rate,
robust timers, the record format of ``msa bench --json`` and log-log exponent fits.

Every comparison in ``msa bench`` runs side by side in one process, so ratios between
implementations stay meaningful on a loaded machine even when absolute times do not.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Sequence

import numpy as np

from msa_engine.threads import usable_cores


cpu_count = usable_cores   # cores this process may run on (its affinity mask)


def dgemm_measure(n: int = 2048, repeats: int = 3) -> dict:
    """NumPy ``n×n @ n×n`` in float64 on all cores: the machine's practical FLOP ceiling.

    The engine caps OpenBLAS at one thread (``msa_engine/__init__.py``: multithreaded
    BLAS made small solves 14× slower); threadpoolctl lifts that cap for this
    measurement only, since the physical limit of the machine uses every core.
    Returns the median GFLOP/s over ``repeats`` (after one warm-up), the best, and the
    thread count BLAS actually used.  On a machine shared with other jobs, all-core BLAS
    can fall below one core (its threads wait for each other); one thread is measured
    as well, and ``gflops`` is the higher of the two medians (``threads`` says which).
    """
    from threadpoolctl import threadpool_info, threadpool_limits

    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n))
    B = rng.standard_normal((n, n))
    C = np.empty((n, n))
    flops = 2.0 * n ** 3
    rates = {}
    for limit in sorted({cpu_count(), 1}, reverse=True):
        with threadpool_limits(limits=limit, user_api="blas"):
            threads = max((p.get("num_threads", 1) for p in threadpool_info()
                           if p.get("user_api") == "blas"), default=1)
            np.matmul(A, B, out=C)                               # warm-up
            times = []
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                np.matmul(A, B, out=C)
                times.append(time.perf_counter() - t0)
        rates[int(threads)] = (flops / statistics.median(times) / 1e9, flops / min(times) / 1e9)
    threads = max(rates, key=lambda t: rates[t][0])
    return {"n": n, "threads": threads, "gflops": rates[threads][0],
            "gflops_best": rates[threads][1], "repeats": max(1, repeats),
            "gflops_by_threads": {str(t): r[0] for t, r in sorted(rates.items())}}


def dgemm_gflops(n: int = 2048, repeats: int = 3) -> float:
    """Median GFLOP/s of NumPy's ``n×n`` matmul on all cores (see :func:`dgemm_measure`)."""
    return float(dgemm_measure(n, repeats)["gflops"])


def time_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 0) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeats`` calls, and the last return value."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (a > 0) or not math.isfinite(a) or not math.isfinite(b):
        return None
    return b / a


def record(name: str, size: str, ours_s: float, numpy_s: float | None = None,
           torch_s: float | None = None, gflops: float | None = None, **extra) -> dict:
    """One row of ``msa bench --json``; speed-ups are ``reference time / our time``."""
    rec = {"name": name, "size": size, "ours_s": ours_s, "numpy_s": numpy_s,
           "torch_s": torch_s, "speedup_vs_numpy": _ratio(ours_s, numpy_s),
           "speedup_vs_torch": _ratio(ours_s, torch_s), "gflops": gflops}
    rec.update(extra)
    return rec


REQUIRED_KEYS = ("name", "size", "ours_s", "numpy_s", "torch_s", "speedup_vs_numpy",
                 "speedup_vs_torch", "gflops")


def fit_exponent(xs: Sequence[float], ts: Sequence[float]) -> float | None:
    """Least-squares slope of ``log t`` against ``log x`` (the cost exponent)."""
    pts = [(x, t) for x, t in zip(xs, ts) if x and t and x > 0 and t > 0]
    if len(pts) < 2 or len({x for x, _ in pts}) < 2:
        return None
    lx = np.log([x for x, _ in pts])
    lt = np.log([t for _, t in pts])
    return float(np.polyfit(lx, lt, 1)[0])
