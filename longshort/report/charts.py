"""Line charts as inline SVG: no plotting library, no script, readable in any browser and in a diff.

A chart is a few series of (step, value) points sharing an x axis of RL steps. Each point carries a
``<title>``, so hovering it shows the exact value; steps where an agent was trained can be shaded
(the alternating schedule trains one agent at a time).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 330, 190
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 8, 26


@dataclass
class Series:
    label: str
    colour: str
    points: list[tuple[float, float]]
    dashed: bool = False


@dataclass
class Chart:
    title: str
    series: list[Series]
    percent: bool = False  # values are fractions shown as %
    shaded: list[int] = field(default_factory=list)  # x values to shade (steps the agent trained)
    note: str = ""

    @property
    def empty(self) -> bool:
        return not any(s.points for s in self.series)


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def _label(value: float, percent: bool) -> str:
    if percent:
        return f"{100 * value:.0f}%"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.0f}"
    if magnitude >= 0.01:
        return f"{value:.3g}"
    return f"{value:.1e}"


def svg(chart: Chart) -> str:
    """The chart as one ``<svg>`` element."""
    points = [p for s in chart.series for p in s.points]
    xs = [x for x, _ in points] or [1.0]
    ys = [y for _, y in points] or [0.0]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if chart.percent:
        yticks = nice_ticks(min(0.0, min(ys)), max(1.0, max(ys)))
    else:
        yticks = nice_ticks(min(ys), max(ys))
    y0, y1 = yticks[0], yticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
             f'role="img" aria-label="{escape(chart.title)}">']
    band = plot_w / max(1.0, x1 - x0)
    for x in chart.shaded:
        left, right = max(LEFT, px(x) - band / 2), min(WIDTH - RIGHT, px(x) + band / 2)
        parts.append(f'<rect class="trained" x="{left:.1f}" y="{TOP}" width="{right - left:.1f}" '
                     f'height="{plot_h}"><title>trained at step {x:g}</title></rect>')
    for tick in yticks:
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(tick):.1f}" y2="{py(tick):.1f}"/>'
                     f'<text class="tick" x="{LEFT - 4}" y="{py(tick) + 3:.1f}" text-anchor="end">'
                     f'{_label(tick, chart.percent)}</text>')
    for tick in nice_ticks(x0, x1, 5):
        if x0 <= tick <= x1 and float(tick).is_integer():
            parts.append(f'<text class="tick" x="{px(tick):.1f}" y="{HEIGHT - BOTTOM + 13}" text-anchor="middle">'
                         f'{tick:.0f}</text>')
    parts.append(f'<text class="tick" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 2}" text-anchor="middle">RL step</text>')
    steps = sorted(set(xs))
    for series in chart.series:
        dash = ' stroke-dasharray="4 3"' if series.dashed else ""
        for run in _runs(series.points, steps):
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in run)
            parts.append(f'<polyline fill="none" stroke="{series.colour}" stroke-width="1.6"{dash} points="{coords}"/>')
        for x, y in series.points:
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.4" fill="{series.colour}">'
                         f'<title>{escape(series.label)}, step {x:g}: {_exact(y, chart.percent)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def _runs(points: list[tuple[float, float]], steps: list[float]) -> list[list[tuple[float, float]]]:
    """The points cut where the series skips a step the chart has (an agent not trained then): a line
    joins only neighbouring steps, so a gap shows as a gap."""
    position = {x: i for i, x in enumerate(steps)}
    runs: list[list[tuple[float, float]]] = []
    for point in points:
        if runs and position[point[0]] == position[runs[-1][-1][0]] + 1:
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def _exact(value: float, percent: bool) -> str:
    return f"{100 * value:.1f}%" if percent else f"{value:.4g}"


def figure(chart: Chart) -> str:
    """The chart with its title and a legend, as a ``<figure>``."""
    legend = "".join(f'<span class="key"><i style="background:{s.colour}"'
                     f'{" class=dashed" if s.dashed else ""}></i>{escape(s.label)}</span>'
                     for s in chart.series if s.points)
    note = f'<div class="note">{escape(chart.note)}</div>' if chart.note else ""
    return (f'<figure class="curve"><figcaption>{escape(chart.title)}</figcaption>{svg(chart)}'
            f'<div class="legend">{legend}</div>{note}</figure>')
