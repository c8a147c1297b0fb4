"""numba's ``njit`` for the engine's kernels, and a one-line notice while they compile.

The kernels are compiled on first use and cached on disk (``cache=True``), so a fresh
install (or an upgrade, or a new ``NUMBA_CACHE_DIR``) spends its first simulation or
non-linear solve compiling them, with nothing on screen, which looks like a hang:
``msa simulate`` 30 s on the 2-core development machine and 48–50 s on a slower one
(``msa bench``, ``startup/simulate_cold``), a first erf ``msa solve --theory tree`` 24 s
there.  Every module that defines kernels imports ``njit`` from here; the first such
import registers one listener for numba's ``numba:compile`` event (numba raises it on
a cache miss only, never on a cache hit).  The first time a kernel of ``msa_engine``
is compiled, the *reporter* gets :data:`MESSAGE`, once per process.

The engine itself reports nowhere (``reporter`` is ``None``: a library does not print);
the ``msa`` command line sets one that writes ``msa: note: …`` to stderr, the TUI one
that shows a notification and a line in its log.  The listener runs in the compiling
thread (a TUI worker), so a reporter must be thread-safe.
"""

from __future__ import annotations

import threading
from typing import Callable

MESSAGE = ("compiling the numba kernels (first run after installing or upgrading: about a "
           "minute; later runs load them from the cache)")

_lock = threading.Lock()
_reporter: Callable[[str], None] | None = None
_told = False


def set_reporter(reporter: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """Make ``reporter`` receive the compile notice (``None``: nobody); returns the
    previous one, to restore."""
    global _reporter
    with _lock:
        previous, _reporter = _reporter, reporter
    return previous


def _compiling(event) -> None:
    global _told
    data = event.data if isinstance(event.data, dict) else {}
    func = getattr(data.get("dispatcher"), "py_func", None)
    if not str(getattr(func, "__module__", "")).startswith("msa_engine"):
        return
    with _lock:
        if _told or _reporter is None:
            return
        _told = True
        reporter = _reporter
    try:
        reporter(MESSAGE)
    except Exception:  # a notice must never break the computation it announces
        pass


def _attach() -> None:
    try:
        from numba.core import event
    except ImportError:  # pragma: no cover - a numba without the event API: no notice
        return

    class _CompileListener(event.Listener):
        def on_start(self, ev):
            _compiling(ev)

        def on_end(self, ev):
            pass

    event.register("numba:compile", _CompileListener())


def __getattr__(name: str):
    # ``njit`` is imported on first use (PEP 562), so that setting a reporter (the CLI
    # does, before every command) does not import numba: a linear solve never needs it
    if name == "njit":
        from numba import njit
        with _lock:
            if "njit" not in globals():
                _attach()
                globals()["njit"] = njit
        return njit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
