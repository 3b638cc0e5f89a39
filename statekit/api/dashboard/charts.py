"""Line charts as inline SVG, drawn on the server: a value over time from its history.

Why SVG from the server and not a chart library in the browser: a chart is one more
fragment htmx swaps in, readable without JavaScript, with nothing more to vendor,
load or keep up to date (see docs/dashboard.md). The values are steps (a position's
quantity holds until the next version), so the line is drawn as a staircase.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

__all__ = ["Chart", "step_chart"]

WIDTH = 560
HEIGHT = 160
PAD_X = 8
PAD_Y = 14


@dataclass(frozen=True, slots=True)
class Chart:
    """What the chart template draws: the polyline, the markers and the axis labels."""

    title: str
    width: int
    height: int
    points: str
    markers: list[tuple[float, float, str]]
    low: str
    high: str
    start: str
    end: str


def _scale(value: float, low: float, high: float, size: float, pad: float) -> float:
    if high == low:
        return pad + size / 2
    return pad + (value - low) / (high - low) * size


def step_chart(title: str, series: list[tuple[datetime, Decimal]]) -> Chart:
    """A staircase of ``series`` (oldest first, two points or more) over its time span."""
    times = [at.timestamp() for at, _ in series]
    values = [float(value) for _, value in series]
    t0, t1 = min(times), max(times)
    low, high = min(values), max(values)
    inner_w, inner_h = WIDTH - 2 * PAD_X, HEIGHT - 2 * PAD_Y

    def xy(t: float, v: float) -> tuple[float, float]:
        x = _scale(t, t0, t1, inner_w, PAD_X) if t1 > t0 else PAD_X + inner_w * 0.5
        y = HEIGHT - _scale(v, low, high, inner_h, PAD_Y)
        return round(x, 1), round(y, 1)

    coords: list[tuple[float, float]] = []
    markers: list[tuple[float, float, str]] = []
    for index, (t, v) in enumerate(zip(times, values, strict=True)):
        x, y = xy(t, v)
        if coords:
            coords.append((x, coords[-1][1]))  # hold the previous value until now
        coords.append((x, y))
        markers.append((x, y, f"{series[index][0]:%Y-%m-%d %H:%M:%S} UTC: {series[index][1]}"))
    return Chart(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        points=" ".join(f"{x},{y}" for x, y in coords),
        markers=markers,
        low=str(min(v for _, v in series)),
        high=str(max(v for _, v in series)),
        start=f"{series[0][0]:%Y-%m-%d %H:%M:%S}",
        end=f"{series[-1][0]:%Y-%m-%d %H:%M:%S}",
    )
