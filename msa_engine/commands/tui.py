"""``msa tui [SESSION]``: the interactive workbench (``msa_tui``, imported lazily)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("tui", help="open the interactive terminal workbench",
                       description="Open the Textual workbench on SESSION (default: the "
                       "bundled default session).")
    p.add_argument("session", nargs="?", help="a saved session file")
    p.add_argument("--session-dir", help="directory of saved sessions (default: the user's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.session is not None:
        # a session that cannot be read is a one-line error before the screen opens (it
        # opened the bundled default behind a toast that soon went)
        from ..sessions import load_session
        session = load_session(args.session)
    else:
        session = None
    try:
        import msa_tui
    except ImportError as exc:  # pragma: no cover - textual is a dependency
        from ..errors import MSAError
        raise MSAError(f"the workbench needs textual ({exc})") from None
    return msa_tui.run(args.session, args.session_dir, loaded=session)
