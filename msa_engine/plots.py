"""Hand-written terminal plots: a braille canvas with axes, log scales and error bars.

Pure ``rich`` (no textual import), so plots can be rendered and tested alone.
A :class:`Plot` is a description (series, scales, labels); :func:`render`
draws it into ``width × height`` cells and returns a ``rich.text.Text``.
Each series has its own marker glyph as well as a colour, so plots stay
legible in 256 colours and in monochrome.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from rich.style import Style
from rich.text import Text

MARKERS = ("●", "▲", "■", "◆", "✚", "✖", "○", "△")
# braille dot bits, indexed [dx][dy] inside a 2×4 cell
_BRAILLE = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
DEFAULT_PALETTE = ("#0178D4", "#FFA62B", "#4EBF71", "#BA3C5B", "#A684E8", "#47C5D8",
                   "#E8D44D", "#E0E0E0")


@dataclass
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    yerr: Sequence[float] | None = None
    kind: str = "line"          # "line", "points", "linepoints", "bars"
    color: int | str | None = None   # palette index or colour string
    marker: str | None = None


@dataclass
class Plot:
    series: list[Series] = field(default_factory=list)
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    xlog: bool = False
    ylog: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)   # (y, label)
    notes: list[str] = field(default_factory=list)
    empty_message: str = "nothing to plot yet"
    diagonal: bool = False      # draw y = x (predictions against targets)
    # the legend's entries when not one per series, as (glyph, palette index or colour or
    # None, label): several sessions compared name each theory's colour and each
    # session's marker once, instead of every (session, theory) pair
    legend: list[tuple[str, int | str | None, str]] | None = None


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


_BIG = 1.7976931348623157e308       # the largest double


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = hi / max(n, 1) - lo / max(n, 1)      # hi - lo overflows for values near ±1e308
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, v = [], start
    while v <= hi + 1e-9 * step:
        ticks.append(0.0 if abs(v) < 1e-12 * step else v)
        v += step
    return ticks


def _log_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Ticks at decades (or 1-2-5 within one decade) between ``lo`` and ``hi`` (> 0)."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = [10.0 ** k for k in range(a, b + 1) if lo * (1 - 1e-9) <= 10.0 ** k <= hi * (1 + 1e-9)]
    if len(decades) >= 2:
        stride = max(1, math.ceil(len(decades) / n))
        return decades[::stride]
    out = [m * 10.0 ** k for k in range(a, b + 1) for m in (1, 2, 5)
           if lo * (1 - 1e-9) <= m * 10.0 ** k <= hi * (1 + 1e-9)]
    return out if len(out) >= 2 else _nice_ticks(lo, hi, n)


def fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        m, e = f"{v:.0e}".split("e")
        return f"{m}e{int(e)}"
    return f"{v:.3g}"


class _Axis:
    def __init__(self, values: list[float], log: bool, extra: Sequence[float] = ()):
        vals = [float(v) for v in list(values) + list(extra) if _finite(v) and (not log or v > 0)]
        self.log = log
        if not vals:
            lo, hi = (1.0, 10.0) if log else (0.0, 1.0)
        else:
            lo, hi = min(vals), max(vals)
        if log:
            if hi / lo < 1 + 1e-9:
                lo, hi = lo / 1.5, hi * 1.5
            else:
                pad = (math.log10(hi) - math.log10(lo)) * 0.05
                lo, hi = lo / 10 ** pad, hi * 10 ** pad
            # values near the ends of the double range (a hand-edited session's
            # chi = 1e308) padded to inf or 0 here
            lo, hi = max(lo, 1e-307), min(hi, 1e308)
        else:
            if hi - lo < 1e-12 * max(1.0, abs(hi)):
                lo, hi = lo - max(abs(lo) * 0.1, 0.5), hi + max(abs(hi) * 0.1, 0.5)
            else:
                pad = hi * 0.04 - lo * 0.04       # hi - lo overflows for values near ±1e308
                lo, hi = lo - pad, hi + pad
            lo, hi = max(lo, -_BIG), min(hi, _BIG)
        self.lo, self.hi = lo, hi

    def frac(self, v: float) -> float | None:
        if not _finite(v) or (self.log and v <= 0):
            return None
        if self.log:
            return (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def ticks(self, n: int) -> list[float]:
        return _log_ticks(self.lo, self.hi, n) if self.log else _nice_ticks(self.lo, self.hi, n)


class Canvas:
    """A ``w × h`` cell canvas of braille dots (2×4 per cell) plus glyph overlays."""

    def __init__(self, w: int, h: int):
        self.w, self.h = max(w, 1), max(h, 1)
        self.bits = [[0] * self.w for _ in range(self.h)]
        self.color: list[list[str | None]] = [[None] * self.w for _ in range(self.h)]
        self.glyph: dict[tuple[int, int], tuple[str, str | None]] = {}

    def dot(self, px: float, py: float, color: str | None) -> None:
        """``px`` in [0, 2w), ``py`` in [0, 4h) measured from the bottom."""
        ix, iy = int(px), int(4 * self.h - 1 - py)
        if 0 <= ix < 2 * self.w and 0 <= iy < 4 * self.h:
            cx, cy = ix // 2, iy // 4
            self.bits[cy][cx] |= _BRAILLE[ix % 2][iy % 4]
            self.color[cy][cx] = color

    def line(self, x0, y0, x1, y1, color) -> None:
        n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for i in range(n + 1):
            t = i / n
            self.dot(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, color)

    def put(self, px: float, py: float, ch: str, color) -> None:
        cx, cy = int(px) // 2, int(4 * self.h - 1 - py) // 4
        if 0 <= cx < self.w and 0 <= cy < self.h:
            self.glyph[(cx, cy)] = (ch, color)

    def rows(self, axis_style: Style) -> list[Text]:
        out = []
        for cy in range(self.h):
            t = Text()
            for cx in range(self.w):
                if (cx, cy) in self.glyph:
                    ch, col = self.glyph[(cx, cy)]
                    t.append(ch, Style(color=col, bold=True) if col else axis_style)
                elif self.bits[cy][cx]:
                    col = self.color[cy][cx]
                    t.append(chr(0x2800 + self.bits[cy][cx]), Style(color=col) if col else axis_style)
                else:
                    t.append(" ")
            out.append(t)
        return out


def default_marker(i: int) -> str:
    """The marker of the ``i``-th series that has none of its own.  The palette has as
    many colours as there are markers, so cycling both by ``i`` gave series ``i`` and
    ``i + 8`` the same look (a replay or comparison of nine curves and more); the marker
    is shifted by one for each round of the markers: with the default palette the first
    64 series differ in colour or marker (36 with the TUI's six theme colours, where
    cycling both repeated after 24)."""
    n = len(MARKERS)
    return MARKERS[(i + i // n) % n]


def render(plot: Plot, width: int, height: int, palette: Sequence[str] = DEFAULT_PALETTE,
           axis_color: str | None = None) -> Text:
    """Draw ``plot`` into ``width × height`` terminal cells."""
    axis_style = Style(color=axis_color, dim=axis_color is None)
    series = [s for s in plot.series if any(_finite(x) and _finite(y) for x, y in zip(s.xs, s.ys))]
    lines: list[Text] = []
    if plot.title:
        lines.append(Text(plot.title[:width], style=Style(bold=True)))
    if not series or width < 20 or height < 6:
        lines.append(Text(plot.empty_message if not series else "(window too small for the plot)",
                          style=axis_style))
        return Text("\n").join(lines)

    def colour(i: int, s: Series) -> str:
        if isinstance(s.color, str):
            return s.color
        return palette[(s.color if isinstance(s.color, int) else i) % len(palette)]

    def marker(i: int, s: Series) -> str:
        return s.marker or default_marker(i)

    xs_all = [x for s in series for x in s.xs]
    ys_all = [y for s in series for y in s.ys]
    extra_y = [y for y, _ in plot.hlines]
    for s in series:
        if s.yerr is not None:
            for y, e in zip(s.ys, s.yerr):
                if _finite(y) and _finite(e):
                    extra_y += [y - e, y + e] if not plot.ylog or y - e > 0 else [y + e]
    xa, ya = _Axis(xs_all, plot.xlog), _Axis(ys_all, plot.ylog, extra_y)
    if plot.diagonal:
        lo, hi = min(xa.lo, ya.lo), max(xa.hi, ya.hi)
        xa.lo = ya.lo = lo
        xa.hi = ya.hi = hi

    legend = _legend(plot, series, colour, marker, width)
    n_notes = len(plot.notes)
    ph = height - len(lines) - 2 - len(legend) - n_notes   # plot rows (minus x axis + labels)
    yticks = ya.ticks(max(2, ph // 3))
    ylab_w = max(len(fmt_tick(t)) for t in yticks) + 1
    pw = width - ylab_w - 1
    if ph < 3 or pw < 10:
        lines.append(Text("(window too small for the plot)", style=axis_style))
        return Text("\n").join(lines)
    cv = Canvas(pw, ph)
    W, H = 2 * pw - 1, 4 * ph - 1

    def pt(x, y):
        fx, fy = xa.frac(x), ya.frac(y)
        return None if fx is None or fy is None else (fx * W, fy * H)

    if plot.diagonal:
        a, b = pt(xa.lo, ya.lo), pt(xa.hi, ya.hi)
        if a and b:
            cv.line(*a, *b, axis_color or "grey50")
    for y, _label in plot.hlines:
        fy = ya.frac(y)
        if fy is not None:
            for px in range(0, W + 1, 3):
                cv.dot(px, fy * H, axis_color or "grey50")
    for i, s in enumerate(series):
        col = colour(i, s)
        pts = [(x, y) for x, y in zip(s.xs, s.ys)]
        if s.kind in ("line", "linepoints"):
            prev = None
            for x, y in pts:
                p = pt(x, y)
                if p and prev:
                    cv.line(*prev, *p, col)
                prev = p
        if s.kind == "bars":
            for x, y in pts:
                p, base = pt(x, y), ya.frac(ya.lo if ya.log else max(ya.lo, 0.0))
                if p and base is not None:
                    cv.line(p[0], base * H, p[0], p[1], col)
        if s.yerr is not None:
            for (x, y), e in zip(pts, s.yerr):
                if not _finite(e) or e <= 0:
                    continue
                lo = y - e if not plot.ylog or y - e > 0 else ya.lo
                a, b = pt(x, lo), pt(x, y + e)
                if a and b:
                    cv.line(a[0], a[1], b[0], b[1], col)
                    cv.put(b[0], b[1], "┬", col)
                    cv.put(a[0], a[1], "┴", col)
        if s.kind in ("points", "linepoints"):
            for x, y in pts:
                p = pt(x, y)
                if p:
                    cv.put(p[0], p[1], marker(i, s), col)

    # y tick rows
    tick_rows: dict[int, str] = {}
    for t in yticks:
        fy = ya.frac(t)
        if fy is not None:
            tick_rows[int(round((1 - fy) * (ph - 1)))] = fmt_tick(t)
    for r, row in enumerate(cv.rows(axis_style)):
        label = tick_rows.get(r, "")
        line = Text(label.rjust(ylab_w - 1) + " ", style=axis_style)
        line.append("┤" if label else "│", style=axis_style)
        line.append_text(row)
        lines.append(line)
    # x axis
    xticks = xa.ticks(max(2, pw // 12))
    axis = ["─"] * pw
    labels = [" "] * (pw + 8)
    for t in xticks:
        fx = xa.frac(t)
        if fx is None:
            continue
        c = int(round(fx * (pw - 1)))
        axis[c] = "┬"
        s = fmt_tick(t)
        start = max(0, min(c - len(s) // 2, pw - len(s)))
        if all(ch == " " for ch in labels[max(0, start - 1):start + len(s) + 1]):
            labels[start:start + len(s)] = list(s)
    lines.append(Text(" " * ylab_w + "└" + "".join(axis), style=axis_style))
    lines.append(Text(" " * (ylab_w + 1) + "".join(labels[:pw]).rstrip(), style=axis_style))
    lines.extend(legend)
    lines.extend(Text(n[:width], style=axis_style) for n in plot.notes)
    return Text("\n").join(lines)


def _legend(plot: Plot, series: list[Series], colour, marker, width: int) -> list[Text]:
    items: list[Text] = []
    if plot.xlabel:
        items.append(Text(f"x: {plot.xlabel}{' (log)' if plot.xlog else ''}", style=Style(dim=True)))
    if plot.ylabel:
        items.append(Text(f"y: {plot.ylabel}{' (log)' if plot.ylog else ''}", style=Style(dim=True)))
    if plot.legend is not None:
        for glyph, col, label in plot.legend:
            style = Style(bold=True) if col is None else \
                Style(color=colour(0, Series("", (), (), color=col)), bold=True)
            t = Text(glyph + " ", style=style)
            t.append(label)
            items.append(t)
    for i, s in enumerate(series if plot.legend is None else ()):
        glyph = marker(i, s) if s.kind in ("points", "linepoints") else "━"
        t = Text(glyph + " ", style=Style(color=colour(i, s), bold=True))
        t.append(s.label)
        items.append(t)
    for _y, label in plot.hlines:
        if label:
            items.append(Text(f"┄ {label}", style=Style(dim=True)))
    rows: list[Text] = []
    cur = Text()
    for it in items:
        if cur.cell_len and cur.cell_len + 2 + it.cell_len > width:
            rows.append(cur)
            cur = Text()
        if cur.cell_len:
            cur.append("  ")
        cur.append_text(it)
    if cur.cell_len:
        rows.append(cur)
    return rows[:3]
