"""Figures and tables of a session as files: PNG/SVG/PDF through matplotlib (the
optional ``plots`` extra) and CSV.  The figures are the TUI's own
(:mod:`msa_engine.figures`), drawn by matplotlib instead of braille."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .errors import MSAError
from .figures import convergence, fig2, predictions, spectrum
from .plots import DEFAULT_PALETTE, MARKERS, Plot
from .sessions import Session

FIGURE_NAMES = ("fig2-test", "fig2-train", "predictions", "spectrum", "convergence")
FORMATS = ("png", "svg", "pdf", "csv")
# matplotlib marker for each of the terminal glyphs, in the same order
_MPL_MARKERS = ("o", "^", "s", "D", "P", "X", "o", "^")


def pick_entry(session: Session, name: str | None = None, chi: float | None = None) -> dict | None:
    """The entry a single-result figure shows: ``name`` at ``chi`` (default: the
    session's own χ; exact, else one-loop, else the first result)."""
    from .analysis import main_point
    c, N = main_point(session, chi)
    cands = session.find(chi=c, N=N)
    if not cands and chi is not None:
        have = sorted({e["chi"] for e in session.find(N=N)})
        raise MSAError(f"session {session.name!r} has no result at chi = {c:g} (N = {N}); "
                       f"it has chi = {', '.join(f'{x:g}' for x in have) or 'none'}")
    cands = cands or session.find()
    if name:
        cands = [e for e in cands if e["name"] == name]
        if not cands:
            raise MSAError(f"session {session.name!r} has no result named {name!r} at chi = {c:g}")
    for pref in ("exact", "one-loop"):
        for e in cands:
            if e["name"] == pref:
                return e
    return cands[0] if cands else None


def build_figure(session: Session, which: str, entry: dict | None) -> Plot:
    if which in ("fig2-test", "fig2-train"):
        return fig2([("", session.entries)], which.split("-")[1])
    if which == "predictions":
        data = session.data()
        return predictions(entry, data.y_train, data.y_test)
    if which == "spectrum":
        net = session.config["network"]
        return spectrum(entry, net.get("g_w"), session.data().d)
    if which == "convergence":
        return convergence(entry.get("log", []) if entry else [],
                           title=f"Convergence: {entry['name']}" if entry else "Convergence")
    raise MSAError(f"figure must be one of {', '.join(FIGURE_NAMES)} (got {which!r})")


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MSAError("figure export needs matplotlib: pip install 'msa-workbench[plots]'") from None
    return plt


def draw(plot: Plot, path: Path) -> Path:
    """Draw ``plot`` with matplotlib into ``path`` (format from the suffix)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=120)
    for k, s in enumerate(plot.series):
        color = s.color if isinstance(s.color, str) else DEFAULT_PALETTE[
            (s.color if isinstance(s.color, int) else k) % len(DEFAULT_PALETTE)]
        glyph = s.marker or MARKERS[k % len(MARKERS)]
        marker = _MPL_MARKERS[MARKERS.index(glyph)] if glyph in MARKERS else "o"
        xs = np.asarray(s.xs, float)
        ys = np.asarray(s.ys, float)
        if s.kind == "bars":
            ax.bar(xs, ys, color=color, label=s.label, width=0.8)
            continue
        style = {"line": "-", "points": "none", "linepoints": "-"}.get(s.kind, "-")
        mk = None if s.kind == "line" else marker
        if s.yerr is not None and any(e for e in s.yerr if e is not None):
            ax.errorbar(xs, ys, yerr=np.asarray([e or 0.0 for e in s.yerr], float), fmt=mk or "o",
                        linestyle=style, color=color, label=s.label, capsize=3, ms=5)
        else:
            ax.plot(xs, ys, linestyle=style, marker=mk, color=color, label=s.label, ms=5)
    for y, label in plot.hlines:
        ax.axhline(y, color="0.5", linestyle="--", linewidth=1, label=label)
    if plot.diagonal and plot.series:
        vals = [v for s in plot.series for v in list(s.xs) + list(s.ys)
                if v is not None and math.isfinite(v)]
        if vals:
            lo, hi = min(vals), max(vals)
            ax.plot([lo, hi], [lo, hi], color="0.6", linewidth=1, label="y = x")
    if plot.xlog:
        ax.set_xscale("log")
    if plot.ylog:
        ax.set_yscale("log")
    ax.set_title(plot.title)
    ax.set_xlabel(plot.xlabel)
    ax.set_ylabel(plot.ylabel)
    if not plot.series:
        ax.text(0.5, 0.5, plot.empty_message, ha="center", va="center", transform=ax.transAxes)
    elif len(plot.series) + len(plot.hlines) > 0:
        ax.legend(fontsize=8, loc="best")
    for i, note in enumerate(plot.notes):
        fig.text(0.01, 0.01 + 0.04 * i, note, fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


RESULT_COLUMNS = ("name", "kind", "N", "chi", "train_discrepancy", "train_discrepancy_se",
                  "test_discrepancy", "test_discrepancy_se", "Q", "weight_cov_top_eigenvalue",
                  "converged")


def table_rows(session: Session) -> list[list]:
    """The results table's rows, one per entry, in :data:`RESULT_COLUMNS` (full precision)."""
    return [[r.get(c) for c in RESULT_COLUMNS] for r in session.sweep_rows()]


def write_table_csv(session: Session, path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RESULT_COLUMNS)
        w.writerows(table_rows(session))
    return path


def export_session(session: Session, fmt: str, out_dir: str | Path,
                   figures=FIGURE_NAMES, entry_name: str | None = None,
                   chi: float | None = None) -> list[Path]:
    """Write the session's figures (or its results table, for ``csv``) into ``out_dir``."""
    if fmt not in FORMATS:
        raise MSAError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    entry = None if fmt == "csv" else pick_entry(session, entry_name, chi)  # refused first
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MSAError(f"cannot create folder {str(out)!r}: {exc.strerror or exc}") from None
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in session.name) or "session"
    if fmt == "csv":
        return [_writing(write_table_csv, session, out / f"{stem}-results.csv")]
    _pyplot()
    return [_writing(draw, build_figure(session, f, entry),
                     out / f"{stem}-{f}.{fmt}") for f in figures]


def _writing(write, what, path: Path) -> Path:
    """``write(what, path)``, an unwritable ``path`` (a folder in its place, no
    permission, a full disk) a one-line error naming it."""
    try:
        return write(what, path)
    except OSError as exc:
        raise MSAError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
