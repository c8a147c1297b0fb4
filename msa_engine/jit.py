"""numba's ``njit`` for the engine's kernels, and a one-line notice while they compile.

The kernels are compiled on first use and cached on disk (``cache=True``), so a fresh
install (or an upgrade, or a new ``NUMBA_CACHE_DIR``) spends its first simulation or
non-linear solve compiling them, with nothing on screen, which looks like a hang:
``msa simulate`` 30 s on the 2-core development machine and 48–50 s on a slower one
(``msa bench``, ``startup/simulate_cold``), a first erf ``msa solve --theory tree`` 24 s
there.  Every module that defines kernels imports ``njit`` from here; the first such
import registers one listener for numba's ``numba:compile`` event (numba raises it on
a cache miss only, never on a cache hit).  The first time a kernel of ``msa_engine``
is compiled, the latest *reporter* pushed gets :data:`MESSAGE`, once per process.

The engine itself reports nowhere (no reporter pushed: a library does not print); the
``msa`` command line pushes one (:func:`push_reporter`) that writes ``msa: note: …`` to
stderr (:func:`stderr_note`; the workers of its local process pool, which compile for
themselves, too: one line each), the TUI one that shows a notification and a line in its
log.  Dask workers, in other processes or on other machines, say nothing.  The listener
runs in the compiling thread (a TUI worker), so a reporter must be thread-safe.

The engine's kernels are cached under a stamp that includes a digest of every kernel
source (:func:`sources_digest`): numba alone would keep a kernel compiled against the
previous version of a function it calls from another file.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path
from typing import Callable

# one line at 100 columns with the CLI's "msa: note: " (a first simulate compiles for
# 30–50 s, a first non-linear solve ≈ 20–30 s; any later cache miss, e.g. a code path
# not used before, for seconds)
MESSAGE = "compiling numba kernels (once after an install or upgrade; up to a minute; cached)"

_lock = threading.Lock()
# the reporters pushed and not yet removed, latest last: the latest gets the notice
# (a stack with removal by token, so that callers that overlap — a TUI opened from a
# script, two apps in one process — may end in any order)
_reporters: list[tuple[object, Callable[[str], None]]] = []
_told = False


def push_reporter(reporter: Callable[[str], None]) -> object:
    """Make ``reporter`` receive the compile notice until :func:`remove_reporter` of the
    token returned."""
    token = object()
    with _lock:
        _reporters.append((token, reporter))
    return token


def remove_reporter(token: object) -> None:
    """Take back the reporter pushed with ``token`` (wherever it is in the stack)."""
    with _lock:
        _reporters[:] = [(t, r) for t, r in _reporters if t is not token]


def current_reporter() -> Callable[[str], None] | None:
    """The reporter that would get the notice now (``None``: nobody)."""
    with _lock:
        return _reporters[-1][1] if _reporters else None


def stderr_note(message: str) -> None:
    """The command line's reporter: ``msa: note: …`` on stderr."""
    print(f"msa: note: {message}", file=sys.stderr, flush=True)


def pool_worker_init(forward: bool) -> None:
    """Initializer of a local process pool's workers (:mod:`msa_engine.executors`): each
    compiles for itself, and says so on the stderr it shares with the command line when
    ``forward`` (the parent's reporter was :func:`stderr_note`; never under the TUI,
    whose screen a worker must not write on)."""
    if forward:
        push_reporter(stderr_note)
    # the warnings of a config (its data's scale, idle [theory] options) were reported
    # by the command that loaded it; a worker rebuilding the data would repeat them,
    # once a worker and as Python's multi-line warnings, on the same stderr
    import warnings
    from .errors import MSAWarning
    warnings.simplefilter("ignore", MSAWarning)


def _ours(func) -> bool:
    module = str(getattr(func, "__module__", ""))
    return module == "msa_engine" or module.startswith("msa_engine.")


def _compiling(event) -> None:
    global _told
    data = event.data if isinstance(event.data, dict) else {}
    if not _ours(getattr(data.get("dispatcher"), "py_func", None)):
        return
    with _lock:
        if _told or not _reporters:
            return
        _told = True
        reporter = _reporters[-1][1]
    try:
        reporter(MESSAGE)
    except Exception:  # a notice must never break the computation it announces
        pass


def _attach() -> None:
    try:
        from numba.core import event

        class _CompileListener(event.Listener):
            def on_start(self, ev):
                _compiling(ev)

            def on_end(self, ev):
                pass

        event.register("numba:compile", _CompileListener())
    except Exception:  # pragma: no cover - a numba without this event API: no notice
        pass


def sources_digest() -> str:
    """SHA-256 of the source of every engine module that defines numba kernels (those
    that mention ``njit``), in path order; read once.

    numba keys a cached kernel on its own file (its time stamp, or in recent numba a
    hash of its content) and its own bytecode only, so a kernel that calls (and
    inlines) a function from another file keeps the old code after that file alone
    changes: after a ``git pull`` into an editable install the kernels run the previous
    code, other numbers whenever the change alters results.  Measured: the samplers'
    proposal kernel went on running the previous ziggurat fast path of ``rng_numba``
    (6.2 against 4.7–5.3 ns a normal) after only that file had changed.  The engine's
    kernels therefore carry this digest in their cache stamp (:func:`_engine_njit`), so
    that any change to a kernel source recompiles them all."""
    global _digest
    with _lock:
        if _digest is None:
            root = Path(__file__).resolve().parent
            h = hashlib.sha256()
            for path in sorted(root.rglob("*.py")):
                try:        # editors' lock files are dangling links; files may vanish
                    text = path.read_bytes() if path.is_file() else b""
                except OSError:
                    continue
                if b"njit" in text:
                    h.update(path.relative_to(root).as_posix().encode() + b"\0" + text)
            _digest = h.hexdigest()
        return _digest


_digest: str | None = None


def _engine_njit(numba_njit):
    """numba's ``njit``, with each engine kernel (``cache=True``, defined in
    ``msa_engine``) cached with :func:`sources_digest` added to its file's stamp.  In
    the stamp, not the key: numba then starts a kernel's index afresh when the digest
    changes, reusing its data files, where a key would add new ones at every edit.
    Explicit signatures (eager compilation) are passed to numba unchanged; the engine
    uses none."""
    from numba.core.caching import FunctionCache, IndexDataCacheFile

    class EngineCache(FunctionCache):
        def __init__(self, py_func):
            super().__init__(py_func)
            stamp = (self._impl.locator.get_source_stamp(), sources_digest())
            self._cache_file = IndexDataCacheFile(self._cache_path, self._impl.filename_base,
                                                  stamp)

    def njit(*args, **kwargs):
        if args and not callable(args[0]):
            return numba_njit(*args, **kwargs)

        def wrap(func):
            cache = kwargs.get("cache", False)
            dispatcher = numba_njit(**{**kwargs, "cache": False})(func)
            if cache and hasattr(dispatcher, "enable_caching"):   # not NUMBA_DISABLE_JIT
                if _ours(func):
                    dispatcher._cache = EngineCache(func)
                else:
                    dispatcher.enable_caching()
            return dispatcher

        return wrap(args[0]) if args else wrap

    return njit


def __getattr__(name: str):
    # ``njit`` is imported on first use (PEP 562), so that setting a reporter (the CLI
    # does, before every command) does not import numba: a linear solve never needs it
    if name == "njit":
        from numba import njit
        with _lock:
            if "njit" not in globals():
                _attach()
                globals()["njit"] = _engine_njit(njit)
        return globals()["njit"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
