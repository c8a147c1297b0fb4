"""``msa compare A B [C ...] [--recompute] [--json]``: sessions side by side."""

from __future__ import annotations

import argparse

from ..analysis import compare
from ..sessions import load_session
from . import chi_arg


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare sessions side by side",
                       description="One column per session: chi, N, each theory's discrepancies "
                       "and error against exact, Q, the Sigma_W outlier, and simulation z-scores.")
    p.add_argument("sessions", nargs="+")
    p.add_argument("--chi", type=chi_arg, help="compare at this chi; N (or mean-field): each "
                   "session's own mean field (default: each session's own chi)")
    p.add_argument("--width", type=_width, metavar="N",
                   help="compare at this width N (default: each session's own N)")
    p.add_argument("--recompute", action="store_true",
                   help="solve every theory afresh instead of reading the stored numbers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _width(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (got {text!r})")
    return n


def run(args: argparse.Namespace) -> int:
    from ..cli import print_json
    from ..errors import MSAError
    if len(args.sessions) < 2:
        raise MSAError("compare needs at least two sessions")
    sessions = [load_session(p) for p in args.sessions]
    _warn_if_unlike(sessions)
    result = compare(sessions, chi=args.chi, N=args.width, recompute=args.recompute)
    if args.json:
        print_json(result)
        return 0
    from rich import box
    from rich.table import Table
    from .render import console, esc, fmt
    cols = result["sessions"]
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
              title="compare" + (" (recomputed)" if args.recompute else ""))
    t.add_column("", no_wrap=True)
    for col in cols:
        t.add_column(esc(col["name"]), justify="right", no_wrap=True)
    t.add_row("χ", *[fmt(c["chi"], 4) for c in cols])
    t.add_row("N", *[str(c["N"]) for c in cols])
    t.add_row("γ", *[fmt(c["gamma"], 3) for c in cols])
    names = []
    for c in cols:
        names += [n for n in c["theories"] if n not in names]
    for key, label in (("test_discrepancy", "test disc"), ("train_discrepancy", "train disc"),
                       ("test_error_vs_exact", "test err vs exact")):
        for n in names:
            vals = [c["theories"].get(n, {}).get(key) for c in cols]
            if all(v is None for v in vals):
                continue
            styles = _contrast(vals) if key == "test_error_vs_exact" else [""] * len(vals)
            t.add_row(f"{label}: {n}", *[f"[{s}]{fmt(v, 3)}[/]" if s else fmt(v, 3)
                                         for v, s in zip(vals, styles)])
    for n in ("one-loop", "exact", "rescaling", "tree"):
        if any(n in c["theories"] for c in cols):
            t.add_row(f"Q: {n}", *[fmt(c["theories"].get(n, {}).get("Q"), 4) for c in cols])
    # Σ_W from the most accurate theory each session has (an erf session has no exact):
    # one theory for every column showed "—" where a session lacked it
    best = [next((n for n in ("exact", "one-loop", "tree") if n in c["theories"]), None)
            for c in cols]
    if any(best):
        for key, label, digits in (("weight_cov_top_eigenvalue", "Σ_W λ_top", 4),
                                   ("weight_cov_teacher_overlap", "Σ_W teacher ovl", 3)):
            t.add_row(label, *["—" if n is None else
                               f"{fmt(c['theories'][n].get(key), digits)} ({n})"
                               for c, n in zip(cols, best)])
    sims = []
    for c in cols:
        sims += [s for s in c["simulations"] if s not in sims]
    for s in sims:
        mixed = [c["simulations"].get(s, {}).get("converged", True) for c in cols]
        for n in names:
            vals = [c["simulations"].get(s, {}).get("z_test", {}).get(n) for c in cols]
            if all(v is None for v in vals):
                continue
            # a z-score from chains that had not mixed is neither agreement nor
            # disagreement: shown plain and starred (the highlights say why)
            t.add_row(f"{s} vs {n}: max|z|", *[
                "—" if v is None else (f"{v['max_abs_z']:.3g} *" if not ok else
                                       f"[red]{v['max_abs_z']:.3g}[/]" if v["max_abs_z"] > 4.5
                                       else f"[green]{v['max_abs_z']:.3g}[/]")
                for v, ok in zip(vals, mixed)])
    c = console()
    c.print(t)
    for line in result["highlights"]:
        c.print(f"• {esc(line)}")
    return 0


def _contrast(vals):
    """Mark the column where a theory's error is far (10×) from the others'."""
    good = [v for v in vals if v is not None and v > 0]
    if len(good) < 2:
        return [""] * len(vals)
    lo, hi = min(good), max(good)
    if hi < 10 * lo:
        return [""] * len(vals)
    return ["bold green" if v == lo else "bold red" if v == hi else "" for v in vals]


def _warn_if_unlike(sessions) -> None:
    """Sessions are compared to set scaling regimes side by side on one problem; other
    data or another activation make their discrepancies incomparable: say so."""
    import json
    import warnings
    from ..errors import MSAWarning
    for what, get in (("data", lambda s: s.config.get("data")),
                      ("activation", lambda s: (s.config.get("network") or {}).get("activation"))):
        seen = {json.dumps(get(s), sort_keys=True, default=str) for s in sessions}
        if len(seen) > 1:
            names = ", ".join(f"{s.name}: {_short(get(s))}" for s in sessions)
            warnings.warn(f"the sessions differ in their {what} ({names}); their numbers "
                          "are not of one problem", MSAWarning, stacklevel=2)


def _short(value) -> str:
    if isinstance(value, dict):
        return value.get("task", "?") + "(" + ", ".join(
            f"{k}={v}" for k, v in value.items() if k in ("d", "P", "seed")) + ")"
    return str(value)
