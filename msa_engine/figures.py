"""The workbench's figures, built from session entries (plain dicts) as :class:`Plot`s.

Shared by the TUI (braille rendering, :mod:`msa_engine.plots`), ``msa replay`` and
``msa export`` (matplotlib), so that every front end draws the same numbers.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from .plots import MARKERS, Plot, Series
from .results import convergence_problems

FIGURES = ("fig2", "predictions", "spectrum", "convergence")
TITLES = {"fig2": "Discrepancy vs χ (Fig. 2)", "predictions": "Predictions vs targets",
          "spectrum": "Σ_W spectrum", "convergence": "Convergence trace"}


def _ok(entries: Iterable[dict]) -> list[dict]:
    return [e for e in entries if e.get("status", "ok") == "ok" and e.get("summary")]


def fig2(groups: Sequence[tuple[str, Sequence[dict]]], which: str = "test") -> Plot:
    """Discrepancy against χ (log-log): a line per theory (and width), simulations with
    error bars.  ``groups`` is ``[(prefix, entries), …]``, one per session compared."""
    key = f"{which}_discrepancy"
    series: list[Series] = []
    # several sessions: a colour per theory (the same in every session) and a marker per
    # session; by position alone, 12 series reused 8 markers and colours, and a
    # three-row legend named only the first session's
    several = len(groups) > 1
    widths_all = {e.get("N") for _, entries in groups for e in _ok(entries)}
    kinds = sorted({_curve(e, len(widths_all) > 1) for _, entries in groups
                    for e in _ok(entries)}, key=lambda k: tuple(str(v) for v in k))
    stuck: dict[tuple, list] = defaultdict(list)    # curve -> sessions with unconverged points
    for g, (prefix, entries) in enumerate(groups):
        by: dict[tuple, list] = defaultdict(list)
        widths = {e.get("N") for e in _ok(entries)}
        for e in _ok(entries):
            by[(e.get("kind"), e.get("name"), e.get("N"))].append(e)
        for (kind, name, N), es in sorted(by.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
            es = sorted(es, key=lambda e: float(e.get("chi") or 0))
            sim_tag = "sim " if kind == "simulation" and not str(name).startswith("sim") else ""
            label = f"{prefix}{sim_tag}{name}"
            if len(widths) > 1:
                label += f" N={N}"
            unmixed = sum(bool(convergence_problems(e["summary"])) for e in es)
            if unmixed:     # their error bars are not to be read as such
                label += (" (unconverged)" if unmixed == len(es) else
                          f" ({unmixed} of {len(es)} unconverged)")
                stuck[_curve(es[0], len(widths_all) > 1)].append(
                    prefix.rstrip(": ") or f"session {g + 1}")
            xs = [float(e.get("chi") or float("nan")) for e in es]
            ys = [e["summary"].get(key) for e in es]
            ses = [e["summary"].get(f"{key}_se") for e in es]
            sim = kind == "simulation"
            style = {}
            if several:
                style = {"color": kinds.index(_curve(es[0], len(widths_all) > 1)),
                         "marker": MARKERS[g % len(MARKERS)]}
            series.append(Series(label, xs, [float("nan") if y is None else y for y in ys],
                                 yerr=[s if s is not None else 0.0 for s in ses] if sim else None,
                                 kind="points" if sim or len(xs) == 1 else "linepoints",
                                 **style))
    legend = None
    if several:
        legend = [("━", i, ("sim " if k[0] == "simulation" and not str(k[1]).startswith("sim")
                            else "") + str(k[1]) + (f" N={k[2]}" if k[2] is not None else "")
                   + (f" (unconverged in {', '.join(stuck[k])})" if stuck.get(k) else ""))
                  for i, k in enumerate(kinds)]
        legend += [(MARKERS[g % len(MARKERS)], None, prefix.rstrip(": ") or f"session {g + 1}")
                   for g, (prefix, _) in enumerate(groups)]
    return Plot(series, title=f"{which.capitalize()} discrepancy vs χ (Fig. 2)", xlabel="χ",
                ylabel=f"{which} discrepancy", xlog=True, ylog=True, legend=legend,
                empty_message="no results yet: press r (theories), s (simulate) or w (sweep χ)")


def _curve(e: dict, by_width: bool) -> tuple:
    """What a Fig. 2 curve is of, across sessions: kind, name and (several widths) N."""
    return (e.get("kind"), e.get("name"), e.get("N") if by_width else None)


def predictions(entry: dict | None, y_train: np.ndarray | None, y_test: np.ndarray | None) -> Plot:
    plot = Plot(title="Predictions vs targets", xlabel="target y", ylabel="posterior mean f̄",
                diagonal=True, empty_message="no result selected: run a theory (r)")
    if not entry or not entry.get("summary") or y_test is None:
        return plot
    s = entry["summary"]
    plot.title = f"Predictions vs targets: {entry.get('name')} at χ={float(entry.get('chi') or 0):.4g}"
    if s.get("test_mean") is not None and len(s["test_mean"]) == len(y_test):
        plot.series.append(Series("test", list(y_test), s["test_mean"], kind="points",
                                  yerr=s.get("test_mean_se"), marker="●", color=0))
    if y_train is not None and s.get("train_mean") is not None and len(s["train_mean"]) == len(y_train):
        plot.series.append(Series("train", list(y_train), s["train_mean"], kind="points",
                                  marker="▲", color=1))
    return plot


def spectrum(entry: dict | None, g_w: float | None = None, d: int | None = None) -> Plot:
    plot = Plot(title="Σ_W spectrum", xlabel="eigenvalue index", ylabel="eigenvalue",
                empty_message="no result selected: run a theory (r)")
    if not entry or not entry.get("summary"):
        return plot
    s = entry["summary"]
    ev = [float(v) for v in s.get("weight_cov_eigenvalues") or []]
    if not ev:
        return plot
    idx = list(range(1, len(ev) + 1))
    plot.series.append(Series("bulk", idx[1:], ev[1:], kind="bars", color=0))
    plot.series.append(Series("outlier λ_top", idx[:1], ev[:1], kind="points", color=3, marker="◆"))
    if g_w and d:
        plot.hlines.append((g_w / d, f"prior g_w/d = {g_w / d:.3g}"))
    ov = s.get("weight_cov_teacher_overlap")
    excess = s.get("weight_cov_excess")
    plot.title = f"Σ_W spectrum: {entry.get('name')} at χ={float(entry.get('chi') or 0):.4g}"
    plot.notes.append(
        f"λ_top = {ev[0]:.4g}" + (f"  ({excess:+.1%} over the prior g_w/d)"
                                  if excess is not None else "")
        + (f"  teacher overlap |v·β̂| = {ov:.3f}" if ov is not None else "  (no teacher direction)"))
    return plot


def convergence(records: Sequence, title: str = "Convergence trace") -> Plot:
    """Residual per solver iteration (log), or |R̂ − 1| per sampler chunk."""
    recs = [record_dict(r) for r in records]
    plot = Plot(title=title, xlabel="iteration", ylog=True,
                empty_message="no convergence log yet")
    if not recs:
        return plot
    chunks = [r for r in recs if is_chunk(r)]
    if chunks and len(chunks) == len(recs):
        plot.xlabel, plot.ylabel = "steps", "|R̂ − 1|"
        plot.series.append(Series("R̂ − 1", [r.get("steps_done", i) for i, r in enumerate(chunks)],
                                  [record_value(r) for r in chunks], kind="linepoints"))
        return plot
    plot.ylabel = "residual"
    stages: dict[str, tuple[list, list]] = {}
    for i, r in enumerate(recs):
        v = record_value(r)
        if v is None or is_chunk(r):
            continue
        xs, ys = stages.setdefault(str(r.get("stage", "?")), ([], []))
        xs.append(i)
        ys.append(max(v, 1e-300))
    for name, (xs, ys) in stages.items():
        plot.series.append(Series(name, xs, ys, kind="linepoints" if len(xs) < 40 else "line"))
    return plot


def record_dict(rec: Any) -> dict:
    if isinstance(rec, dict):
        return rec
    if hasattr(rec, "to_dict"):
        return rec.to_dict()
    import dataclasses
    if dataclasses.is_dataclass(rec):
        return dataclasses.asdict(rec)
    return dict(vars(rec))


def is_chunk(rec: dict) -> bool:
    return "steps_done" in rec


def record_value(rec: dict) -> float | None:
    """The quantity a convergence trace follows: the residual, or a chunk's R̂ − 1."""
    if is_chunk(rec):
        v = rec.get("rhat_max")
        return None if v is None else abs(float(v) - 1.0) or 1e-12
    v = rec.get("residual")
    return None if v is None else float(v)
