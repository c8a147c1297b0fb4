"""Executors for sweeps: in process, a local process pool, or Dask distributed.

A sweep is a list of independent tasks (:mod:`msa_engine.sweep`): a whole
annealing chain over the χ grid for one (N, theory), or one simulation.
Each executor runs them and streams their entries back as they complete, so
the driver merges them into the session and autosaves.  Seeds derive from
the grid point, never from the worker, and every task runs the same code, so
all executors give the same numbers.

Failure handling: a task whose worker dies is retried up to ``retries``
times; a task that raises :class:`MSAError` (a genuine numerical failure) is
not retried, and its completed points are kept.  Points that still fail are
recorded in the session with their error; every other point is kept.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
import time
import uuid
from typing import Callable

from .errors import Cancelled, MSAError

# (task, entries, error[, final]): ``final`` False where an executor streams a task's
# points one by one (in process) and reports the task's end apart, with no entries
TaskDone = Callable[..., None]


# a local pool worker's queue back to the sweep's process (set by _pool_worker_init)
_progress_queue = None
PROGRESS_INTERVAL = 0.25        # seconds between a pool task's progress reports


def _pool_worker_init(forward: bool, progress) -> None:
    global _progress_queue
    import signal
    from . import jit
    # Ctrl-C is the sweep's process's to handle: it stops the workers itself.  A worker
    # interrupted too printed its own KeyboardInterrupt traceback, and one interrupted
    # between tasks left the pool half-shut, which a second Ctrl-C turned into a hang
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    jit.pool_worker_init(forward)
    _progress_queue = progress


class SigintIgnored:
    """SIGINT ignored in this process for a moment: while pool workers are started (a
    child inherits an ignored signal from the moment it starts, before its initializer
    runs), and while an interrupted sweep stops its workers and saves (a second Ctrl-C
    there broke a lock mid-release: "RuntimeError: release unlocked lock").  Only in the
    main thread, where Python lets a program set signal handlers."""

    def __enter__(self):
        import signal
        self.old = None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        return self

    def __exit__(self, *exc):
        import signal
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        return False


def _progress_reporter(key, entries: list):
    """``(callback, on_point)`` for :func:`execute_task` in a pool worker that report
    the task's progress (:class:`~msa_engine.sweep.TaskProgress` points) on the pool's
    queue: a simulation's share of its steps at most every :data:`PROGRESS_INTERVAL`,
    a theory chain's points as they complete."""
    queue, last = _progress_queue, [-math.inf]
    if queue is None or key is None:
        return None, entries.append

    def callback(rec):
        steps, total = getattr(rec, "steps_done", None), getattr(rec, "steps_total", None)
        now = time.monotonic()
        if steps is None or not total or now - last[0] < PROGRESS_INTERVAL:
            return
        last[0] = now
        queue.put((key, min(steps / total, 0.999)))

    def on_point(entry):
        entries.append(entry)
        queue.put((key, float(len(entries))))
    return callback, on_point


def run_task_standalone(payload: dict, task: dict, key: int | None = None) -> dict:
    """Run one sweep task in a worker from a self-contained payload (``key``: the task's
    index, under which a local pool's worker reports its progress).

    Returns ``{"entries": [...], "error": None | str}``; an ``MSAError`` inside a
    theory chain keeps the points completed before it.
    """
    from .sessions import Session
    from .sweep import execute_task
    session = Session.from_payload(payload)
    entries: list = []
    callback, on_point = _progress_reporter(key, entries)
    try:
        # one worker per core already: a simulation's own chain threads would
        # oversubscribe the cores
        execute_task(session, task, callback, on_point=on_point, threads=1)
    except MSAError as exc:
        return {"entries": entries, "error": str(exc)}
    return {"entries": entries, "error": None}


class SerialExecutor:
    """In this process, in order: live solver iterations and sampler chunks reach the
    callback, and cancellation works inside a task.  The default of the API and TUI."""

    name = "serial"
    workers = 1

    def run(self, session, tasks: list, done: TaskDone, callback=None,
            cancel: threading.Event | None = None) -> None:
        from .sweep import execute_task
        for task in tasks:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            entries: list = []

            def on_point(entry, _task=task, _entries=entries):
                _entries.append(entry)
                done(_task, [entry], None, final=False)
            try:
                execute_task(session, task, callback, on_point, cancel)
            except MSAError as exc:
                done(task, [], str(exc))
            else:
                done(task, [], None)


class LocalPoolExecutor:
    """A local process pool (no setup).  Workers are started with ``spawn`` so that a
    pool created from a threaded program (the TUI) is safe."""

    name = "local-pool"

    def __init__(self, workers: int | None = None, retries: int = 2):
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.retries = int(retries)
        self.pool = None                      # the current pool (tests kill its workers)

    def _new_pool(self, progress=None):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        from . import jit
        # the workers compile the kernels for themselves; under the command line they
        # say so on its stderr (msa_engine/jit.py), never under the TUI
        forward = jit.current_reporter() is jit.stderr_note
        self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                        initializer=_pool_worker_init,
                                        initargs=(forward, progress))
        return self.pool

    def worker_pids(self) -> list[int]:
        procs = getattr(self.pool, "_processes", None) or {}
        return list(procs)

    def run(self, session, tasks: list, done: TaskDone, callback=None,
            cancel: threading.Event | None = None) -> None:
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool
        from .sweep import TaskProgress
        payload = session.payload()
        attempts = {i: 0 for i in range(len(tasks))}
        pending = list(range(len(tasks)))
        # the workers' progress (TaskProgress) comes back on a queue, read between waits
        progress = mp.get_context("spawn").Queue() if callback else None

        def report(futures):
            while progress is not None:
                try:
                    i, points = progress.get_nowait()
                except Exception:        # queue.Empty (or a queue a killed worker broke)
                    return
                if i in futures.values():    # not a late report of a finished task
                    callback(TaskProgress(i, points))

        while pending:
            pool = self._new_pool(progress)
            with SigintIgnored():        # submit starts the workers
                futures = {pool.submit(run_task_standalone, payload, tasks[i],
                                       i if progress is not None else None): i for i in pending}
            pending = []
            broken = False
            stopped = False
            try:
                while futures:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    finished, _ = wait(list(futures), timeout=0.2, return_when=FIRST_COMPLETED)
                    report(futures)
                    for fut in finished:
                        i = futures.pop(fut)
                        if callback:
                            callback(TaskProgress(i, None))    # its entries follow
                        try:
                            out = fut.result()
                        except BrokenProcessPool:
                            broken = True
                            attempts[i] += 1
                            if attempts[i] > self.retries:
                                done(tasks[i], [], f"worker lost {attempts[i]} times; giving up")
                            else:
                                pending.append(i)
                            continue
                        except Exception as exc:   # an unexpected error inside the task
                            done(tasks[i], [], f"{type(exc).__name__}: {exc}")
                            continue
                        done(tasks[i], out["entries"], out["error"])
                    if broken:
                        # the pool is unusable: every unfinished task is retried
                        for fut, i in futures.items():
                            attempts[i] += 1
                            if attempts[i] > self.retries:
                                done(tasks[i], [], f"worker lost {attempts[i]} times; giving up")
                            else:
                                pending.append(i)
                        futures = {}
            except BaseException:
                # cancelled, Ctrl-C, or anything else: running tasks cannot be cancelled
                # inside a process pool, so the workers are stopped (waiting for them, a
                # second Ctrl-C left the process hung at exit, joining workers that would
                # never be told to stop)
                stopped = True
                with SigintIgnored():
                    self._terminate_workers()
                raise
            finally:
                pool.shutdown(wait=not (broken or stopped or (cancel is not None
                                                               and cancel.is_set())),
                              cancel_futures=True)

    def _terminate_workers(self) -> None:
        procs = list((getattr(self.pool, "_processes", None) or {}).values())
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=10)


class DaskExecutor:
    """Dask distributed: ``local[:WORKERS]`` starts a LocalCluster, ``tcp://HOST:PORT``
    connects to a running scheduler (for example one started on a SLURM login node by
    dask-jobqueue).  Needs the ``distributed`` extra."""

    name = "dask"

    def __init__(self, address: str = "local", retries: int = 2):
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise MSAError("Dask is not installed: pip install 'msa-workbench[distributed]'") from None
        self.address = address
        self.retries = int(retries)
        self.client = None
        self.cluster = None
        self.workers = None

    def connect(self):
        """Start or reach the cluster (also done by :meth:`run`): a sweep connects first,
        so that a bad address is refused before its session file is written."""
        return self.client or self._connect()

    def _connect(self):
        from distributed import Client, LocalCluster
        if self.address.startswith("local"):
            n = self.address.partition(":")[2]
            try:
                n = int(n) if n else (os.cpu_count() or 1)
            except ValueError:
                raise MSAError(f"--dask local[:WORKERS]: {n!r} is not a number") from None
            if n < 1:
                raise MSAError(f"--dask local[:WORKERS] needs WORKERS >= 1 (got {n})")
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=40)
            self.client = Client(self.cluster)
            self.workers = n
        else:
            try:
                self.client = Client(self.address, timeout=15)
            except (OSError, TimeoutError, ValueError) as exc:
                raise MSAError(f"cannot connect to the Dask scheduler {self.address}: {exc}") from None
            self.workers = len(self.client.scheduler_info().get("workers", {}))
        return self.client

    def close(self):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        self.client = self.cluster = None

    def run(self, session, tasks: list, done: TaskDone, callback=None,
            cancel: threading.Event | None = None) -> None:
        from distributed import as_completed
        client = self.client or self._connect()
        payload = client.scatter(session.payload(), broadcast=True)
        tag = uuid.uuid4().hex[:8]
        futures = {client.submit(run_task_standalone, payload, t, key=f"msa-{tag}-{i}",
                                 pure=False, retries=self.retries): i
                   for i, t in enumerate(tasks)}
        try:
            ac = as_completed(list(futures))
            while not ac.is_empty():
                if cancel is not None and cancel.is_set():
                    client.cancel(list(futures))
                    raise Cancelled()
                batch = ac.next_batch(block=False) if ac.has_ready() else []
                if not batch:
                    time.sleep(0.05)
                    continue
                for fut in batch:
                    i = futures[fut]
                    try:
                        out = fut.result()
                    except Exception as exc:   # KilledWorker after repeated losses, etc.
                        done(tasks[i], [], f"{type(exc).__name__}: {exc}")
                        continue
                    done(tasks[i], out["entries"], out["error"])
        finally:
            if cancel is not None and cancel.is_set():
                client.cancel(list(futures))


def make_executor(workers: int | None = None, dask: str | None = None,
                  scheduler: str | None = None, retries: int = 2):
    """The executor for the CLI flags: ``--scheduler`` > ``--dask`` > ``--workers``."""
    if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) or retries < 0:
        raise MSAError(f"--retries must be an integer >= 0 (got {retries!r})")
    if scheduler:
        if not scheduler.startswith(("tcp://", "tls://", "ws://", "wss://", "inproc://")):
            raise MSAError(f"--scheduler must look like tcp://HOST:PORT (got {scheduler!r})")
        return DaskExecutor(scheduler, retries)
    if dask:
        if not dask.startswith("local"):
            raise MSAError(f"--dask must be local or local:WORKERS (got {dask!r}); "
                           "use --scheduler tcp://HOST:PORT for a running cluster")
        return DaskExecutor(dask, retries)
    if workers is not None and workers < 1:
        raise MSAError(f"--workers must be >= 1 (got {workers})")
    if workers == 1:
        return SerialExecutor()
    return LocalPoolExecutor(workers, retries)
