"""The one documented exception type of the engine, and its warning class.

Every validation failure, numerical failure that the engine detects, and
unreadable input raises :class:`MSAError`.  The CLI prints its message as a
single line (``msa: error: <message>``) and exits with code 2; the TUI shows it
as a notification.  Anything else escaping the engine is a bug.
"""

from __future__ import annotations


class MSAError(ValueError):
    """A clear, one-line problem with the user's input or with a computation.

    The message names the offending field or quantity and, where possible,
    what to do about it (``kappa must be > 0 (got -0.1)``).  It is always one
    line: line breaks quoted from the input (a key named ``"a\nb"``) are escaped.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"), *args)


class NotNormalisable(MSAError):
    """A tilted measure that does not exist at the t̄ asked for (THEORY §6: ReLU's, or the
    linear one, beyond its existence bound).  Solvers catch it to say which iterate got
    there."""


class Cancelled(Exception):
    """Raised by a progress callback to stop a long computation cooperatively."""


class MSAWarning(UserWarning):
    """Something the user should know, but that does not invalidate a result."""
