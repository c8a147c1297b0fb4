"""The ``msa`` command line: the headless contract that scripts rely on.

Each subcommand lives in a module with ``register(subparsers)``; the module
sets ``func`` on its parser, a callable ``func(args) -> int``.  Every
:class:`MSAError` becomes one line on stderr (``msa: error: …``) and exit
code 2; warnings become one ``msa: warning: …`` line each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import warnings
from typing import Sequence

from . import __version__, jit
from .errors import Cancelled, MSAError, MSAWarning

# modules contributing subcommands, in help order
COMMAND_MODULES = ["msa_engine.commands.solve", "msa_engine.commands.simulate",
                   "msa_engine.commands.sweep",
                   "msa_engine.commands.replay", "msa_engine.commands.compare",
                   "msa_engine.commands.export", "msa_engine.commands.tui",
                   "msa_engine.commands.bench"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage too)
        raise MSAError(message)


def json_safe(obj):
    """Replace non-finite floats by None so that ``json.dumps`` emits valid JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(json_safe(obj), indent=None) + "\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="msa", description="msa-workbench: theories and simulations of "
                     "feature learning in Bayesian two-layer networks.")
    parser.add_argument("--version", action="version", version=f"msa-workbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


_TERMINATED = threading.Event()      # set by entry_point's SIGTERM handler


def _warning_line(message, category, filename, lineno, file=None, line=None):
    print(f"msa: warning: {message}", file=sys.stderr)


_POSITIONALS = ("config", "session", "sessions")


def _refuse_empty(args: argparse.Namespace) -> None:
    """An empty argument is an error, never "the default": ``--out "$DIR"`` with ``DIR``
    unset wrote into the current folder, ``--traces ""`` silently wrote no traces."""
    for dest, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            name = dest if dest in _POSITIONALS else "--" + dest.replace("_", "-")
            raise MSAError(f"{name} is empty (an unset shell variable?)")


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _warning_line
    warnings.simplefilter("always", MSAWarning)
    # the kernels' first compilation announces itself (msa_engine/jit.py); set without
    # importing numba, which a linear solve never needs
    notice = jit.push_reporter(jit.stderr_note)
    _safe_streams()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        _refuse_empty(args)
        return int(args.func(args) or 0)
    except MSAError as exc:
        print(f"msa: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Cancelled):
        if _TERMINATED.is_set():
            print("msa: terminated (SIGTERM)", file=sys.stderr)
            return 143
        print("msa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout went away: nothing more to say, and the interpreter's
        # last flush at exit must not fail loudly on the closed pipe
        _stdout_to_devnull()
        return 0
    except OSError as exc:
        # what is left unconverted is writing the output (a full disk: `> /dev/full`)
        _stdout_to_devnull()
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"msa: error: cannot write the output: {exc.strerror or exc}{where}",
              file=sys.stderr)
        return 1
    except Exception as exc:
        if _interrupted(exc):
            # raised by code that a Ctrl-C interrupted halfway (a lock released twice)
            if _TERMINATED.is_set():
                print("msa: terminated (SIGTERM)", file=sys.stderr)
                return 143
            print("msa: interrupted", file=sys.stderr)
            return 130
        # never a traceback for a user (a hand-edited session can still surprise the
        # code); MSA_DEBUG=1 shows it for a bug report
        if os.environ.get("MSA_DEBUG"):
            raise
        print(f"msa: error: unexpected {type(exc).__name__}: {exc} (MSA_DEBUG=1 shows the "
              "traceback; please report it)", file=sys.stderr)
        return 1
    finally:
        jit.remove_reporter(notice)


def _interrupted(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _safe_streams() -> None:
    """A closed stdout (``>&-``) is a null one, and text the terminal's encoding cannot
    show (χ, λ under ``PYTHONIOENCODING=ascii`` or a Latin-1 locale) is replaced rather
    than stopping the command with a UnicodeEncodeError."""
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")
    for stream in (sys.stdout, sys.stderr):
        try:
            "χλΣ̂".encode(stream.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            try:
                stream.reconfigure(errors="replace")
            except (AttributeError, ValueError):
                pass


def entry_point() -> None:  # console script
    import signal

    def first_ctrl_c(signum, frame):
        # the first Ctrl-C interrupts; a later one, while the command stops its workers,
        # saves and exits, is ignored: it landed in the interpreter's own exit handlers
        # ("Exception ignored in atexit callback", a traceback after "msa: interrupted")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    def sigterm(signum, frame):
        # a scheduler's notice before it preempts or ends a job: stop as a Ctrl-C does,
        # so that a sweep writes its completed points (throttled ones included) and the
        # workers are stopped, rather than dying where it stands
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _TERMINATED.set()
        raise KeyboardInterrupt

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, first_ctrl_c)
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, sigterm)
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry_point()
