"""Geometry of the dashboard's inline SVG charts (the templates draw it; no script, no images).

Charts are computed here as plain numbers so the templates stay dumb and the scales are
testable: a sparkline of MSRS over scans, and MSRS ± std over versions with error bars.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def _finite(values: Sequence[float | None]) -> list[tuple[int, float]]:
    return [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(float(v))]


def _scale(low: float, high: float, top: float, bottom: float):
    span = high - low if high > low else 1.0
    return lambda value: bottom - (value - low) / span * (bottom - top)


def sparkline(values: Sequence[float | None], width: int = 120, height: int = 28, pad: int = 3) -> str:
    """``points`` of an SVG polyline through the finite values (index on x); "" when fewer than
    one. A single value is drawn as a flat line, so one scan still shows a mark."""
    points = _finite(values)
    if not points:
        return ""
    if len(points) == 1:
        points = [(0, points[0][1]), (1, points[0][1])]
        count = 2
    else:
        count = len(values)
    low, high = min(v for _, v in points), max(v for _, v in points)
    y = _scale(low, high, pad, height - pad)
    step = (width - 2 * pad) / max(count - 1, 1)
    return " ".join(f"{pad + i * step:.1f},{y(v):.1f}" for i, v in points)


@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    low: float  # y of msrs - std (screen coordinates: larger is lower)
    high: float  # y of msrs + std
    label: str
    value: str  # the MSRS as the tables write it
    anchor: str = "middle"  # the label's text-anchor: "start"/"end" at the edges, so none is clipped


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    points: tuple[ChartPoint, ...]
    line: str  # polyline points
    ticks: tuple[tuple[float, str], ...]  # (y, text) on the value axis
    left: int
    bottom: int


#: Width of one character of the 11 px chart labels, generously (a sans-serif digit is ~6.1 px).
LABEL_CHAR_PX = 6.6
#: Longer labels are shortened with "…" (the full one is in the point's tooltip).
LABEL_CHARS = 28


def nice_ticks(low: float, high: float, count: int = 4) -> tuple[list[float], int]:
    """Ticks at a round step (1, 2, 2.5 or 5 × 10^k) covering [low, high], and the decimals that
    write every one of them alike (so ``6.6`` never stands beside ``7.52``)."""
    raw = (high - low) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw * (1 - 1e-9))
    first = math.floor(low / step + 1e-9) * step
    ticks = [first + k * step for k in range(int(math.ceil((high - first) / step - 1e-9)) + 1)]
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)))
    if any(abs(round(t, decimals) - t) > 1e-9 * max(1.0, abs(t)) for t in ticks):
        decimals += 1  # a 2.5 step: one more decimal for the halves
    return ticks, decimals


def short_label(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[:LABEL_CHARS - 1] + "…"


def msrs_chart(items: Sequence[tuple[str, float | None, float | None, str]], width: int = 640,
               height: int = 220) -> Chart:
    """MSRS (± std) per version: ``items`` are (label, msrs, std, text), oldest first."""
    left, right, top, bottom = 56, 64, 12, height - 40  # room for the last version's label
    finite = [(i, label, m, s or 0.0, text) for i, (label, m, s, text) in enumerate(items)
              if m is not None and math.isfinite(m)]
    if not finite:
        return Chart(width, height, (), "", (), left, bottom)
    low = min(max(m - s, 0.0) for _, _, m, s, _ in finite)
    high = max(m + s for _, _, m, s, _ in finite)
    if high - low < 1e-9:
        low, high = max(low - 0.5, 0.0), high + 0.5
    values, decimals = nice_ticks(low, high)
    low, high = values[0], values[-1]  # the axis spans whole ticks
    y = _scale(low, high, top, bottom)
    step = (width - left - right) / max(len(items) - 1, 1)
    x = (lambda i: left + (width - left - right) / 2) if len(items) == 1 else (lambda i: left + i * step)

    def anchor(at: float, label: str) -> str:
        half = LABEL_CHAR_PX * len(short_label(label)) / 2
        return "end" if at + half > width else "start" if at - half < 0 else "middle"
    points = tuple(ChartPoint(x(i), y(m), y(max(m - s, low)), y(m + s), label, text, anchor(x(i), label))
                   for i, label, m, s, text in finite)
    ticks = tuple((y(value), f"{value:.{decimals}f}") for value in values)
    return Chart(width, height, points, " ".join(f"{p.x:.1f},{p.y:.1f}" for p in points), ticks, left, bottom)
