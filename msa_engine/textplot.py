"""Small terminal plots (no dependencies beyond rich): log axes, several series,
error bars.  Used by ``msa replay`` for the discrepancy-against-χ plot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from rich.text import Text

MARKERS = "●▲■◆✚✱○△"
COLORS = ("cyan", "magenta", "yellow", "green", "red", "blue", "bright_white", "bright_black")


@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    yerr: Sequence[float] | None = None
    connect: bool = True
    marker: str | None = None
    color: str | None = None


def _tf(v: float, log: bool) -> float:
    return math.log10(v) if log else v


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if 1e-2 <= a < 1e4:
        return f"{v:.3g}"
    return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")


def render(series: list[Series], width: int = 72, height: int = 18, logx: bool = True,
           logy: bool = True, title: str = "", xlabel: str = "", ylabel: str = "") -> Text:
    """Render ``series`` on a ``width``×``height`` character canvas (axes included)."""
    pts = [(x, y) for s in series for x, y in zip(s.x, s.y)
           if _ok(x, logx) and _ok(y, logy)]
    errs = [(y - e, y + e) for s in series if s.yerr is not None
            for y, e in zip(s.y, s.yerr) if e and _ok(y, logy)]
    if not pts:
        return Text(f"{title}\n(no data to plot)")
    xs = [_tf(x, logx) for x, _ in pts]
    ys = [_tf(y, logy) for _, y in pts]
    for lo, hi in errs:
        if _ok(lo, logy):
            ys.append(_tf(lo, logy))
        ys.append(_tf(hi, logy))
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    label_w = 8
    W, H = max(10, width - label_w - 1), max(4, height - 3)
    grid = [[(" ", None)] * W for _ in range(H)]

    def col(x):
        return min(W - 1, max(0, int(round((_tf(x, logx) - x0) / (x1 - x0) * (W - 1)))))

    def row(y):
        return min(H - 1, max(0, int(round((y1 - _tf(y, logy)) / (y1 - y0) * (H - 1)))))

    for k, s in enumerate(series):
        color = s.color or COLORS[k % len(COLORS)]
        marker = s.marker or MARKERS[k % len(MARKERS)]
        good = [(x, y, (s.yerr[i] if s.yerr is not None else 0.0))
                for i, (x, y) in enumerate(zip(s.x, s.y)) if _ok(x, logx) and _ok(y, logy)]
        good.sort()
        if s.connect:
            for (xa, ya, _), (xb, yb, _) in zip(good, good[1:]):
                ca, cb, ra, rb = col(xa), col(xb), row(ya), row(yb)
                n = max(abs(cb - ca), abs(rb - ra), 1)
                for t in range(1, n):
                    c = ca + (cb - ca) * t // n
                    r = ra + round((rb - ra) * t / n)
                    if grid[r][c][0] == " ":
                        grid[r][c] = ("·", color)
        for x, y, e in good:
            c = col(x)
            if e:
                lo = y - e
                r_hi = row(y + e)
                r_lo = row(lo) if _ok(lo, logy) else H - 1
                for r in range(min(r_hi, r_lo), max(r_hi, r_lo) + 1):
                    grid[r][c] = ("│", color)
            grid[row(y)][c] = (marker, color)

    out = Text()
    if title:
        out.append(title.center(width) + "\n", style="bold")
    for r in range(H):
        yv = y1 - (y1 - y0) * r / (H - 1)
        label = _fmt_tick(10 ** yv if logy else yv) if r in (0, H // 2, H - 1) else ""
        out.append(f"{label:>{label_w}}┤" if label else " " * label_w + "│", style="dim")
        for ch, color in grid[r]:
            out.append(ch, style=color)
        out.append("\n")
    out.append(" " * label_w + "└" + "─" * W + "\n", style="dim")
    ticks = [x0, (x0 + x1) / 2, x1]
    line = [" "] * (W + label_w + 1)
    for t in ticks:
        s = _fmt_tick(10 ** t if logx else t)
        pos = label_w + 1 + int(round((t - x0) / (x1 - x0) * (W - 1)))
        pos = min(max(0, pos - len(s) // 2), len(line) - len(s))
        line[pos:pos + len(s)] = list(s)
    out.append("".join(line).rstrip() + "\n", style="dim")
    if xlabel:
        out.append(" " * label_w + f"x: {xlabel}\n", style="dim")
    legend = Text("  ")
    for k, s in enumerate(series):
        color = s.color or COLORS[k % len(COLORS)]
        legend.append(f"{s.marker or MARKERS[k % len(MARKERS)]} {s.label}  ", style=color)
    if ylabel:
        legend.append(f"y: {ylabel}", style="dim")
    out.append(legend)
    return out


def _ok(v, log: bool) -> bool:
    return v is not None and math.isfinite(v) and (v > 0 or not log)
