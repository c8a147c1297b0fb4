"""The engine's own threads (msa_engine/threads.py): row splits, running a job on them
side by side, errors and the BLAS thread count restored."""

import threading

import pytest

from msa_engine.threads import blas_limit, run_split, split_rows, usable_cores


def _blas_threads() -> list[int]:
    """Threads of every BLAS library loaded, scipy's (numba's, loaded by any kernel
    call) included."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg.cython_blas  # noqa: F401

    return [i["num_threads"] for i in threadpoolctl.threadpool_info()
            if i["user_api"] == "blas"]


def test_split_rows_covers_every_row_once():
    for n in (0, 1, 7, 100, 257):
        for threads in (1, 2, 3, 8):
            for min_rows in (1, 16, 128):
                sl = split_rows(n, threads, min_rows)
                rows = [i for s in sl for i in range(s.start, s.stop)]
                assert rows == list(range(n))
                assert 1 <= len(sl) <= max(1, threads)
                if len(sl) > 1:
                    assert min(s.stop - s.start for s in sl) >= min_rows - 1
    assert len(split_rows(1024, 2, 128)) == 2 and len(split_rows(200, 2, 128)) == 1


def test_run_split_runs_each_slice_in_its_own_thread_and_keeps_order():
    seen = []
    together = threading.Barrier(3)       # all three at once: idents are not reused

    def job(i, sl):
        together.wait(10)
        seen.append(threading.get_ident())
        return i, sl.start

    out = run_split(job, split_rows(30, 3, 1))
    assert out == [(0, 0), (1, 10), (2, 20)]
    assert len(set(seen)) == 3 and threading.get_ident() in seen
    assert usable_cores() >= 1


def test_run_split_reraises_and_restores_blas_threads():
    blas = _blas_threads
    before = blas()
    inside = []

    def job(i, sl):
        inside.append(blas())
        if i == 1:
            raise ValueError("slice 1 failed")
        return i

    with pytest.raises(ValueError, match="slice 1 failed"):
        run_split(job, split_rows(4, 2, 1))
    assert all(n == 1 for b in inside for n in b)
    assert blas() == before


def test_run_split_on_fewer_threads_than_slices_gives_the_same_results():
    sl = split_rows(40, 5, 1)
    one = run_split(lambda i, s: (i, s.start, s.stop), sl, threads=1)
    two = run_split(lambda i, s: (i, s.start, s.stop), sl, threads=2)
    assert one == two == [(i, s.start, s.stop) for i, s in enumerate(sl)]


def test_blas_limit_nested_in_two_threads_restores_the_count_once_both_are_out():
    blas = _blas_threads
    before = blas()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with blas_limit(1):
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second():
        first_in.wait(10)
        with blas_limit(1):
            second_in.set()
            first_out.wait(10)
            seen["inside after the first left"] = blas()

    ts = [threading.Thread(target=f) for f in (first, second)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert all(n == 1 for n in seen["inside after the first left"])
    assert blas() == before


def test_a_single_slice_still_gets_its_blas_threads():
    """One worker (one chain group, e.g. a single chain with threads = cores) runs with
    the BLAS threads asked for, as the sampler driver's spare cores are given to BLAS."""
    blas = _blas_threads
    for n in (1, 2):
        assert run_split(lambda i, s: blas(), [slice(0, 1)], blas=n) == [[n] * len(blas())]


@pytest.mark.parametrize("entry", ["solve", "anneal"])
def test_theories_run_on_one_blas_thread_whatever_numpy_was_given(entry):
    """msa.solve and msa.anneal hold BLAS at one thread (a script that imported numpy
    before msa_engine has one per core): a Monte Carlo saddle's path follows the
    rounding, which differs between one thread and two (measured at d = 50, see
    theory._one_blas_thread); the caller's count is restored afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import msa_engine as msa

    data = msa.make_data({"task": "linear", "d": 8, "P": 12, "P_test": 4, "seed": 1})
    p = msa.Problem(data, msa.Network.make("linear", N=50, g_w=1.0, g_a=1.0, kappa=0.1,
                                           chi=10.0))
    seen = []

    def callback(rec):
        seen.append(_blas_threads())

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        assert all(n == 2 for n in before)
        if entry == "solve":
            msa.solve(p, "tree", callback=callback)
        else:
            msa.anneal(p, "tree", [1.0, 10.0], callback=callback)
        assert _blas_threads() == before
    assert seen and all(n == 1 for b in seen for n in b)


def test_a_linear_solve_from_the_cli_side_imports_neither_scipy_nor_numba():
    """Where msa_engine is imported before numpy (the CLI, the TUI), BLAS runs one
    thread already and the theories' one-thread limit imports nothing (building the
    thread controller imports scipy.linalg: 0.28 s of a 0.004 s linear solve)."""
    import subprocess
    import sys

    code = ("import sys, msa_engine as msa\n"
            "d = msa.make_data({'task': 'linear', 'd': 8, 'P': 12, 'P_test': 4, 'seed': 1})\n"
            "p = msa.Problem(d, msa.Network.make('linear', N=50, g_w=1.0, g_a=1.0,"
            " kappa=0.1, chi=10.0))\n"
            "msa.solve(p, 'tree'); msa.anneal(p, 'one-loop', [1.0, 10.0])\n"
            "print([m for m in ('scipy', 'numba', 'threadpoolctl') if m in sys.modules])\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENBLAS_NUM_THREADS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_the_lowest_count_asked_for_holds_while_callers_overlap():
    """A simulation holding two BLAS threads (spare cores) and a theory entering with one
    (reproducibility) in another thread: one thread while both are inside, two again
    when the theory leaves, the count from before when both have left."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = _blas_threads
    sim_in, theory_done, sim_may_leave = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def simulation():
        with blas_limit(2):
            seen["simulation alone"] = blas()
            sim_in.set()
            theory_done.wait(10)
            seen["simulation after the theory left"] = blas()
            sim_may_leave.wait(10)

    def theory():
        sim_in.wait(10)
        with blas_limit(1):
            seen["both inside"] = blas()
        theory_done.set()

    with threadpoolctl.threadpool_limits(limits=3, user_api="blas"):
        before = blas()
        ts = [threading.Thread(target=f) for f in (simulation, theory)]
        for t in ts:
            t.start()
        theory_done.wait(20)
        sim_may_leave.set()
        for t in ts:
            t.join(20)
        assert blas() == before
    assert all(n == 2 for n in seen["simulation alone"])
    assert all(n == 1 for n in seen["both inside"])
    assert all(n == 2 for n in seen["simulation after the theory left"])
