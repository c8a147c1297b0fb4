"""msa-workbench's Textual user interface (``msa tui``): a thin client of ``msa_engine``.

The engine never imports this package; ``msa tui`` imports it lazily.
"""

from __future__ import annotations


def run(session: str | None = None, session_dir: str | None = None, *,
        loaded=None) -> int:
    """Open the workbench on ``session`` (default: the bundled default session);
    ``loaded``: that session already read (:func:`msa_engine.sessions.load_session`)."""
    from .app import run as _run
    return _run(session, session_dir, loaded=loaded)


__all__ = ["run"]
