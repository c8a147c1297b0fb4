"""The engine's own threads: how many cores there are, the BLAS thread count while they
run, and running one nogil kernel on slices of its rows side by side (issue 7).

The numba kernels never use ``parallel`` (numba's default threading layer aborts when
two Python threads enter it at once, and the TUI runs a solve beside a simulation);
instead their callers split independent rows (chains) between Python threads, the
kernels releasing the GIL.  While they do, BLAS gets one thread: a script that imported
numpy before msa_engine has one OpenBLAS thread per core, which with one kernel thread
per core would oversubscribe the machine.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable

_CTL = None
_CTL_LOCK = threading.Lock()
# the thread counts asked for by the callers inside blas_limit (the lowest holds), and
# the limiter that restores the count from before the first of them
_REQUESTS: list = []
_RESTORE: list = [None]


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _controller():
    """The BLAS thread controller (made once, under the lock), or None without
    threadpoolctl."""
    global _CTL
    if _CTL is None:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415
        except ImportError:  # pragma: no cover - threadpoolctl is a scipy dependency
            return None
        # the controller sees the BLAS libraries loaded when it is made: load the one
        # numba's kernels call (scipy's) first, beside numpy's
        import scipy.linalg.cython_blas  # noqa: F401, PLC0415
        _CTL = ThreadpoolController().select(user_api="blas")
    return _CTL


def _take_control() -> None:
    """Let this thread set OpenBLAS's process-wide count.  threadpoolctl (≥ 3.6) lets
    only the thread that first set it change it, and silently ignores the others: a
    simulation's worker thread asking for two threads while the main thread had set a
    count got none of it.  Every change here is made under :data:`_CTL_LOCK`."""
    try:
        from threadpoolctl import OpenBLASController  # noqa: PLC0415
    except ImportError:  # pragma: no cover - older threadpoolctl: no such rule
        return
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


def _apply(n: int) -> None:
    """Set every BLAS to ``n`` threads (under the lock); the first change made while
    callers are inside is kept, to restore the count from before them at the end."""
    ctl = _controller()
    if ctl is None or all(lib.num_threads == n for lib in ctl.lib_controllers):
        return
    _take_control()
    limiter = ctl.limit(limits=n)
    if _RESTORE[0] is None:
        _RESTORE[0] = limiter


@contextlib.contextmanager
def blas_limit(n: int):
    """Context setting the BLAS thread count to ``n`` for its duration, and back
    afterwards; a no-op when it already is ``n`` (e.g. one thread under
    ``OPENBLAS_NUM_THREADS=1``, which msa_engine sets when imported before numpy) or
    when threadpoolctl is missing.  The setting is process-wide: while callers in
    several threads are inside at once (the TUI runs a solve beside a simulation), the
    lowest count any of them asked for holds — a theory's one thread (for
    reproducibility, :func:`msa_engine.theory._one_blas_thread`) over a simulation's
    spare cores, which the solve's own thread occupies anyway — and when the last one
    leaves, the count from before the first is restored."""
    n = int(n)
    if n == 1 and _one_thread_by_environment():
        yield
        return
    with _CTL_LOCK:
        _REQUESTS.append(n)
        _apply(min(_REQUESTS))
    try:
        yield
    finally:
        with _CTL_LOCK:
            _REQUESTS.remove(n)
            if _REQUESTS:
                _apply(min(_REQUESTS))
            elif _RESTORE[0] is not None:
                _take_control()
                _RESTORE[0].restore_original_limits()
                _RESTORE[0] = None
                _take_control()      # and leave the count to whoever sets it next


def _one_thread_by_environment() -> bool:
    """Whether every BLAS of this process runs one thread without being told: msa_engine
    was imported before numpy with ``OPENBLAS_NUM_THREADS=1`` (the CLI, the TUI, sweep
    workers), numpy's BLAS is OpenBLAS, and nothing has changed thread counts since
    (threadpoolctl not imported).  Then :func:`blas_limit` ``(1)`` need not build its
    controller, which imports scipy.linalg (0.28 s: a linear ``msa solve`` imports
    neither scipy nor numba)."""
    import sys  # noqa: PLC0415

    from . import _BLAS_ONE_THREAD_AT_LOAD  # noqa: PLC0415
    if not _BLAS_ONE_THREAD_AT_LOAD or "threadpoolctl" in sys.modules:
        return False
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        return False
    np = sys.modules.get("numpy")
    if np is None:
        return True
    try:
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]
    except (AttributeError, KeyError, TypeError):
        return False
    return "openblas" in str(blas).lower()


def split_rows(n: int, threads: int, min_rows: int) -> list[slice]:
    """``n`` rows cut into at most ``threads`` contiguous slices of at least ``min_rows``
    rows each (one slice when there are too few)."""
    k = max(1, min(int(threads), n // max(1, int(min_rows))))
    cuts = [round(i * n / k) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:])]


def run_split(job: Callable[[int, slice], object], slices: list[slice],
              blas: int | None = 1, threads: int | None = None) -> list:
    """``job(i, slices[i])`` for every slice, on ``threads`` threads (default: one per
    slice; the caller's thread is one of them), each taking every ``threads``-th slice in
    turn, with ``blas`` BLAS threads (``None``: as it is) while they run;
    returns the results in order and re-raises the first exception.  With a split that
    does not depend on ``threads``, neither do the results."""
    n = len(slices)
    workers = n if threads is None else max(1, min(int(threads), n))
    out: list = [None] * n
    errors: list = []

    def share(w):
        try:
            for i in range(w, n, workers):
                out[i] = job(i, slices[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    with (contextlib.nullcontext() if blas is None else blas_limit(blas)):
        pool = [threading.Thread(target=share, args=(w,), daemon=True)
                for w in range(1, workers)]
        for t in pool:
            t.start()
        try:
            share(0)
        finally:
            for t in pool:
                t.join()
    if errors:
        raise errors[0]
    return out
