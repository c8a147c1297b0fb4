"""Langevin step throughput, side by side (issue 7, THEORY §7): the engine's sampler
against a vectorised NumPy loop and a PyTorch CPU loop (``benchmarks/baselines.py``)
doing the same MALA step, on the same problem, seed and number of chains, in the
same process; and against the machine's DGEMM rate.

Not a test: run ``python -m benchmarks.bench_samplers [--quick]`` or ``msa bench``.

What is timed
-------------
* ``ours``: the engine's real stepping path, ``_Run.advance`` — the numba chunk
  kernels drawing from per-chain random streams, the chains split between Python
  threads (one per core), BLAS on one thread; with fewer chains than cores also
  ``simulate(threads=cores)`` (spare cores to BLAS), the faster reported
  (``simulate_threads_ours``) — for ``steps`` steps past the
  end of the measurements' window (``burn_in`` beyond the run), so no observables
  are measured: like the baselines, it is the Markov chain alone.  ``simulate_s``
  (extra key, small and medium only) is the end-to-end ``simulate()`` per
  chain-step, with the Rao-Blackwellised observables measured at every step
  (``thin=1``), the per-chunk diagnostics and the final R̂/ESS.
* ``numpy``: :class:`~benchmarks.baselines.NumpyMALA`, timed with BLAS on all cores
  (numpy's default) and on one thread, the faster reported (``threads_numpy``): on a
  loaded machine spinning BLAS threads thrash.  It uses the same
  algebra as the engine (linear full sampler without ``P×N`` matrices, linear
  marginal sampler in the Woodbury form when ``P > d``), so ``speedup_vs_numpy`` is
  the implementation alone.  ``numpy_general_s`` (extra key) is the general form
  ``H = XWᵀ, …`` that one writes first; it differs only for linear φ.
* ``torch``: :class:`~benchmarks.baselines.TorchMALA`, autograd gradient,
  ``torch.randn`` noise, the faster of torch's default threads and one thread
  (``threads_torch``); ``None`` when torch is missing.

Every implementation must draw ``N·d`` (full: ``N(d+1)``) Gaussian increments and
one uniform per chain-step.  ``noise_s`` (extra key) is the time numpy's generator
takes for that — the floor of any implementation drawing with numpy, so
``max_speedup_vs_numpy = numpy_s / noise_s`` bounds what such an implementation can
reach against the NumPy loop.  The engine draws inside its kernels (per-chain lane
streams: 16 xoshiro256++ lanes and a 64-bit ziggurat, SIMD,
``msa_engine/sampling/rng_numba.py``): ``noise_ours_s`` is that floor (drawn as the
kernels draw, on one core), and ``numpy_s / noise_ours_s`` the bound for the engine.

Seconds are per chain-step (one MALA step of one chain); medians of ``repeats``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
from numba import njit

import msa_engine as msa
from msa_engine.threads import usable_cores
from msa_engine.sampling.rng_numba import (draw_normals, normals_needed, seed_states, uniform,
                                          words_needed)
from msa_engine.sampling.run import _initial_log_step, _Run, simulate

from .baselines import NumpyMALA, TorchMALA, torch_available

SIZES = {"small": (30, 20, 100), "medium": (100, 200, 1000), "large": (200, 1000, 4000)}
CHAINS = {"small": 8, "medium": 2, "large": 1}
G_W, G_A, KAPPA, CHI = 1.5, 0.8, 0.1, 1.0
TARGET_SECONDS = 0.4        # aim of one timed block
# every contender runs this long before it is timed (after its first, compiling step):
# on the slow 2-core VM a sampler that had just started ran ~1.7× slower for its first
# ~0.1 s (the second core waking up, caches), which `--quick`'s 0.1 s blocks timed —
# small full linear 22–24 against 12.4 µs a chain-step with 0.4 s blocks
WARM_SECONDS = 0.25


def matmul_flops(sampler: str, act: str, d: int, P: int, N: int) -> float:
    """Matrix-product FLOPs one chain-step needs (multiply-add = 2 FLOPs).

    full, non-linear φ: ``H = XWᵀ`` (2PNd), ``Φa`` (2PN), ``Φᵀr`` (2PN),
    ``∂E/∂W = DᵀX`` (2PNd): ``4PNd + 4PN``.

    full, linear φ: nothing of size ``P×N`` is needed, because ``f = X(Wᵀa)`` and
    ``∂E/∂W = (χ/κ) a (Xᵀr)ᵀ``: ``Wᵀa`` (2Nd), ``Xv`` (2Pd), ``Xᵀr`` (2Pd), ``Wu``
    (2Nd): ``4Nd + 4Pd``.  (The baselines, written as researchers write them, do the
    ``4PNd`` of the general form; their GFLOP/s below are counted with the same,
    smaller, number, i.e. as useful work.)

    marginal, non-linear φ or ``P ≤ d``: ``XWᵀ`` (2PNd), ``K = ΦΦᵀ`` counted as the
    symmetric product (P²N), Cholesky (P³/3) and the SPD inverse (2P³/3),
    ``t = A⁻¹y`` (2P²), ``GΦ`` (2P²N), ``MᵀX`` (2PNd): ``4PNd + 3P²N + P³ + 2P²``.

    marginal, linear φ, ``P > d`` (Woodbury, ``d×d`` only): ``S = WᵀW`` as symmetric
    (Nd²), Cholesky and SPD inverse of ``M = (XᵀX)⁻¹ + (c/κ)S`` (d³), ``W A`` (2Nd²):
    ``3Nd² + d³``.  (Until 2026-11-30 the step went through ``T = I + (c/κ)L_bᵀSL_b``
    with ``XᵀX = L_b L_bᵀ`` and two more triangular products each way, and was credited
    ``3Nd² + 5d³``; the count follows the FLOPs the step needs, so that a cheaper
    algorithm is not reported as a higher rate.)
    """
    if sampler == "full":
        if act == "linear":
            return 4.0 * N * d + 4.0 * P * d
        return 4.0 * P * N * d + 4.0 * P * N
    if act == "linear" and P > d:
        return 3.0 * N * d * d + float(d) ** 3
    return 4.0 * P * N * d + 3.0 * P * P * N + float(P) ** 3 + 2.0 * P * P


@njit(nogil=True)
def _draw_steps(st, steps, n_w, n_a, zbuf, wbuf):  # pragma: no cover - numba
    """The random numbers of ``steps`` chain-steps as the kernels draw them: ``n_w``
    normals (``W``), ``n_a`` (``a``, full sampler), one uniform."""
    for _ in range(steps):
        draw_normals(st, zbuf, n_w, wbuf)
        if n_a > 0:
            draw_normals(st, zbuf, n_a, wbuf)
        uniform(st)


def _problem(size: str, act: str) -> msa.Problem:
    d, P, N = SIZES[size]
    data = msa.make_data({"task": "linear", "d": d, "P": P, "P_test": max(10, P // 2),
                          "seed": 0})
    return msa.Problem(data, msa.Network.make(act, N=N, g_w=G_W, g_a=G_A, kappa=KAPPA,
                                              chi=CHI))


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _per_step(run_n, repeats: int, target: float = TARGET_SECONDS) -> tuple[float, int]:
    """Median seconds per step of ``run_n(n)`` (compiled already), with ``n`` calibrated
    from the warm-up (:data:`WARM_SECONDS` of running) so that a timed block lasts about
    ``target`` seconds."""
    n, spent = 1, 0.0
    while True:
        t0 = time.perf_counter()
        run_n(n)
        t1 = time.perf_counter() - t0
        spent += t1
        if spent >= WARM_SECONDS:
            break
        n = min(2000, 2 * n)
    n = int(max(1, min(2000, target * n / max(t1, 1e-7))))
    return _median_time(lambda: run_n(n), repeats) / n, n


def bench_one(sampler: str, act: str, size: str, repeats: int = 3, quick: bool = False,
              seed: int = 0, with_torch: bool = True) -> dict:
    """One side-by-side record (see the module docstring)."""
    d, P, N = SIZES[size]
    C = CHAINS[size]
    prob = _problem(size, act)
    data = prob.data
    ndim = N * (d + 1) if sampler == "full" else N * d
    h = math.exp(_initial_log_step(prob, ndim))
    target = TARGET_SECONDS / 4 if quick else TARGET_SECONDS

    # ours: the driver's stepping path, no observables (burn-in beyond the run); the
    # default threads (one chain group per core, one BLAS thread) and, when there are
    # fewer chains than cores, also simulate(threads=cores), which gives the spare
    # cores to BLAS — the faster reported, as for the baselines
    ours_s, run = math.inf, None
    for thr in sorted({None, usable_cores()} if C < usable_cores() else {None},
                      key=lambda t: t or 0):
        r = _Run(prob, sampler, C, 1, 10 ** 12, 1, "mala", h, seed, 1, threads=thr)
        r.advance(r.steps_done + 1)                          # compile / warm up
        t, n_steps = _per_step(lambda n: r.advance(r.steps_done + n), repeats, target)
        if t / C < ours_s:
            ours_s, steps, run, ours_threads = t / C, n_steps, r, thr
    ours_acc = float(np.sum(run.acc)) / (C * run.steps_done)

    # baselines in their best thread setting: BLAS / intra-op threads on every core
    # (what one gets by default) or one thread (better on a loaded machine, where
    # spinning BLAS threads thrash); the faster of the two is reported
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    def best_of_threads(make, run_fn):
        best, best_n = math.inf, 1
        for nthreads in sorted({1, usable_cores()}):
            with threadpool_limits(limits=nthreads, user_api="blas"):
                obj = make()
                run_fn(obj, 1)
                t = _per_step(lambda n: run_fn(obj, n), repeats, target)[0]
            if t < best:
                best, best_n = t, nthreads
        return best / C, best_n

    def numpy_maker(structured):
        return lambda: NumpyMALA(sampler, act, data.X_train, data.y_train, N, G_W, G_A,
                                 KAPPA, CHI, C, seed=seed, structured=structured)

    nb = numpy_maker(True)()
    structured = nb.linear_full or nb.wood is not None
    numpy_s, numpy_threads = best_of_threads(numpy_maker(True), lambda o, n: o.run(n, h))
    numpy_general_s = numpy_s
    if structured:
        numpy_general_s = best_of_threads(numpy_maker(False), lambda o, n: o.run(n, h))[0]

    torch_s, torch_threads = None, None
    if with_torch and torch_available():
        import torch  # noqa: PLC0415

        default = torch.get_num_threads()

        def torch_run(obj, n):
            obj.run(n, h)

        best = math.inf
        for nthreads in sorted({1, default}):
            torch.set_num_threads(nthreads)
            try:
                tb = TorchMALA(sampler, act, data.X_train, data.y_train, N, G_W, G_A, KAPPA,
                               CHI, C, seed=seed)
                tb.run(1, h)
                t = _per_step(lambda n: tb.run(n, h), repeats, target)[0] / C
            finally:
                torch.set_num_threads(default)
            if t < best:
                best, torch_threads = t, nthreads
        torch_s = best

    # the floor: numpy drawing one chain-step's Gaussian increments (+ the uniform)
    g = np.random.default_rng(seed)
    buf = np.empty(ndim)
    ubuf = np.empty(1)

    def noise(n):
        for _ in range(n):
            g.standard_normal(out=buf)
            g.random(out=ubuf)

    noise_s = _per_step(noise, repeats, target / 4)[0]
    st = seed_states(np.random.SeedSequence(seed), 1)[0]
    n_w, n_a = N * d, ndim - N * d
    zbuf = np.empty(normals_needed(n_w))
    wbuf = np.empty(words_needed(n_w), dtype=np.uint64)

    def noise_ours(n):
        _draw_steps(st, n, n_w, n_a, zbuf, wbuf)

    noise_ours(1)
    noise_ours_s = _per_step(noise_ours, repeats, target / 4)[0]

    flops = matmul_flops(sampler, act, d, P, N)
    rec = {
        "name": f"langevin/{sampler}/{act}", "size": size, "d": d, "P": P, "N": N,
        "chains": C, "steps_timed_ours": steps, "repeats": repeats, "step_size": h,
        "ours_s": ours_s, "numpy_s": numpy_s, "torch_s": torch_s,
        "speedup_vs_numpy": numpy_s / ours_s,
        "numpy_general_s": numpy_general_s, "speedup_vs_numpy_general": numpy_general_s / ours_s,
        "speedup_vs_torch": (torch_s / ours_s) if torch_s is not None else None,
        "gflops": flops / ours_s / 1e9,
        "gflops_numpy": flops / numpy_s / 1e9,
        "gflops_torch": (flops / torch_s / 1e9) if torch_s is not None else None,
        "matmul_flops_per_chain_step": flops,
        "chain_steps_per_s_ours": 1.0 / ours_s, "chain_steps_per_s_numpy": 1.0 / numpy_s,
        "chain_steps_per_s_torch": (1.0 / torch_s) if torch_s is not None else None,
        "noise_s": noise_s, "max_speedup_vs_numpy": numpy_s / noise_s,
        "noise_ours_s": noise_ours_s, "max_speedup_vs_numpy_ours": numpy_s / noise_ours_s,
        "max_gflops": flops / noise_ours_s / 1e9,
        "acceptance_ours": ours_acc,
        "threads_ours": run.threads, "blas_threads_ours": run._blas_threads(),
        "simulate_threads_ours": ours_threads,
        "threads_numpy": numpy_threads, "threads_torch": torch_threads,
        "torch_note": None if torch_available() else "torch not installed (pip install "
                                                      "msa-workbench[bench]); skipped",
    }
    if sampler == "marginal" and act == "linear" and P > d:
        rec.update(woodbury_floor(d, N, flops, noise_ours_s, repeats, target / 4))
    if size != "large":
        e2e_steps = int(max(8, min(400, 0.5 * target / max(ours_s * C, 1e-7))))
        simulate(prob, sampler=sampler, chains=C, steps=4, burn_in=0, step_size=h, seed=seed)

        def e2e():
            simulate(prob, sampler=sampler, chains=C, steps=e2e_steps, burn_in=0, step_size=h,
                     seed=seed, chunk=max(1, e2e_steps // 4))

        rec["simulate_s"] = _median_time(e2e, max(1, repeats - 1)) / (C * e2e_steps)
    else:
        rec["simulate_s"] = None
    return rec


def woodbury_floor(d: int, N: int, flops: float, noise_ours_s: float, repeats: int,
                   target: float) -> dict:
    """The least time one chain-step of the linear Woodbury marginal sampler can take on
    this machine's BLAS: its two ``N×d`` products, ``S = WᵀW`` and ``W A``, timed alone
    on the same shapes (numpy's BLAS, the faster of one thread and every core), plus
    drawing its ``N·d`` normals at the engine's rate spread over every core.  Everything
    else a step does (the ``d³`` algebra, the proposal's pass and the reverse MALA
    term's over ``N×d`` arrays) is left out, so ``floor_s`` is a lower bound, and
    ``floor_frac_of_dgemm`` the highest fraction of DGEMM any implementation built on
    these BLAS products can reach (issue 7's 60% target for "large")."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    rng = np.random.default_rng(1)
    W = rng.standard_normal((N, d))
    B = rng.standard_normal((d, d))
    S, G = np.empty((d, d)), np.empty((N, d))
    best = {}
    for nthreads in sorted({1, usable_cores()}):
        with threadpool_limits(limits=nthreads, user_api="blas"):
            for name, fn in (("gram", lambda: np.dot(W.T, W, S)),
                             ("product", lambda: np.dot(W, B, G))):
                fn()
                t = _per_step(lambda n, fn=fn: [fn() for _ in range(n)], repeats, target)[0]
                best[name] = min(best.get(name, math.inf), t)
    floor = best["gram"] + best["product"] + noise_ours_s / usable_cores()
    return {"floor_s": floor, "floor_gram_s": best["gram"], "floor_product_s": best["product"],
            "floor_gflops": flops / floor / 1e9}


def sampler_records(quick: bool, dgemm_gflops: float, repeats: int = 3,
                    progress=None) -> list[dict]:
    """All records of issue 7's Langevin table (INTERFACE.md): sizes small, medium
    (and large unless ``quick``) × samplers full, marginal × activations linear, erf.
    ``frac_of_dgemm`` is our achieved GFLOP/s over ``dgemm_gflops``."""
    sizes = ["small", "medium"] if quick else list(SIZES)
    reps = max(1, min(repeats, 2)) if quick else repeats
    out = []
    for size in sizes:
        for sampler in ("full", "marginal"):
            for act in ("linear", "erf"):
                if progress is not None:
                    progress(f"langevin {sampler}/{act} {size}")
                rec = bench_one(sampler, act, size, repeats=reps, quick=quick)
                rec["dgemm_gflops"] = dgemm_gflops
                ok = bool(dgemm_gflops and dgemm_gflops > 0)
                rec["frac_of_dgemm"] = rec["gflops"] / dgemm_gflops if ok else None
                if "floor_gflops" in rec:
                    rec["floor_frac_of_dgemm"] = (rec["floor_gflops"] / dgemm_gflops
                                                  if ok else None)
                    rec["frac_of_floor"] = rec["floor_s"] / rec["ours_s"]
                out.append(rec)
    return out


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Langevin sampler throughput against NumPy, "
                                             "PyTorch and DGEMM (issue 7)")
    ap.add_argument("--quick", action="store_true", help="small and medium sizes only")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", metavar="PATH", help="also write the records to PATH as JSON")
    args = ap.parse_args(argv)
    try:
        from .harness import dgemm_gflops  # noqa: PLC0415
        dg = dgemm_gflops()
    except ImportError:  # pragma: no cover - harness missing
        dg = float("nan")
    print(f"DGEMM (numpy 2048² matmul, all {usable_cores()} cores): {dg:.1f} GFLOP/s")
    if not torch_available():
        print("torch is not installed: the PyTorch comparison is skipped "
              "(pip install 'msa-workbench[bench]')")
    hdr = (f"{'name':24s} {'size':6s} {'C':>2s} {'ours/s':>9s} {'numpy/s':>9s} {'torch/s':>9s} "
           f"{'x numpy':>7s} {'x torch':>7s} {'GFLOP/s':>8s} {'%DGEMM':>6s} {'np-rng/s':>9s} "
           f"{'our-rng/s':>9s} {'x np-gen':>8s} {'x np-rng':>8s}")
    print("chain-steps per second (medians); ratios measured side by side.  np-rng/our-rng: "
          "drawing one chain-step's random numbers alone (numpy's / the engine's "
          "generator); x np-gen: against the general-form NumPy loop; x np-rng: the most "
          "any implementation drawing with numpy can reach against the NumPy loop")
    print(hdr)

    def row(r):
        ts = r["chain_steps_per_s_torch"]
        print(f"{r['name']:24s} {r['size']:6s} {r['chains']:2d} "
              f"{r['chain_steps_per_s_ours']:9.0f} {r['chain_steps_per_s_numpy']:9.0f} "
              f"{_fmt(ts, '9.0f'):>9s} {r['speedup_vs_numpy']:7.2f} "
              f"{_fmt(r['speedup_vs_torch'], '7.2f'):>7s} {r['gflops']:8.2f} "
              f"{_fmt(None if r['frac_of_dgemm'] is None else 100 * r['frac_of_dgemm'], '6.1f'):>6s} "
              f"{1.0 / r['noise_s']:9.0f} {1.0 / r['noise_ours_s']:9.0f} "
              f"{r['speedup_vs_numpy_general']:8.2f} {r['max_speedup_vs_numpy']:8.2f}", flush=True)

    recs = sampler_records(args.quick, dg, repeats=args.repeats,
                           progress=lambda s: print(f"  … {s}", file=sys.stderr, flush=True))
    for r in recs:
        row(r)
    if args.json:
        import json  # noqa: PLC0415
        with open(args.json, "w") as fh:
            json.dump({"dgemm_gflops": dg, "records": recs}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
