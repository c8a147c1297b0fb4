"""``msa export SESSION [--format png|svg|pdf|csv] [--figure F] [--out DIR]``."""

from __future__ import annotations

import argparse

from ..export import FIGURE_NAMES, FORMATS, export_session
from ..sessions import load_session
from . import chi_arg


def register(sub) -> None:
    p = sub.add_parser("export", help="write a session's figures (matplotlib) or results table",
                       description="Figures: " + ", ".join(FIGURE_NAMES) + ". PNG/SVG/PDF need "
                       "the optional matplotlib extra: pip install 'msa-workbench[plots]'.")
    p.add_argument("session")
    p.add_argument("--format", default="png", help=f"one of {', '.join(FORMATS)} (default png)")
    p.add_argument("--figure", action="append", choices=FIGURE_NAMES,
                   help="figure to write (repeatable; default: all)")
    p.add_argument("--entry", help="result shown by single-result figures (default: exact, "
                   "else one-loop)")
    p.add_argument("--chi", type=chi_arg, help="χ of that result, or N for the session's "
                   "mean field (default: the session's χ)")
    p.add_argument("--out", default=".", help="output folder (default: current)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    session = load_session(args.session)
    chi = args.chi
    if chi == "N":          # as `msa compare --chi N`: the session's width
        chi = float(session.problem().network.N)
    paths = export_session(session, args.format, args.out, args.figure or FIGURE_NAMES,
                           args.entry, chi)
    for p in paths:
        print(p)
    return 0
