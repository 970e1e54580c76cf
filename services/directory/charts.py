"""Dashboard charts as inline SVG drawn on the server: no script, no network, text alternatives built in.

Each chart is an ``<svg role="img">`` named by its ``<title>`` and described by its ``<desc>``;
the page shows the same numbers in a table next to it. A figure shown as "<5" (not zero, rounds to 0) is drawn
as a hatched bar up to 4 and labelled "<5", so a chart never tells more than the table.
Every piece is a ``Markup`` template, so labels and numbers are escaped as they go in.
"""

from __future__ import annotations

import math

from markupsafe import Markup

WIDTH = 640
FONT = 14
COLOURS = ("#1d70b8", "#00703c", "#f47738", "#4c2c92", "#d4351c", "#5694ca")
SUPPRESSED = "<5"
SUPPRESSED_HEIGHT = 4  # the most a "<5" can be

Value = int | str


def _height(value: Value) -> float:
    return SUPPRESSED_HEIGHT if value == SUPPRESSED else float(value)


def _nice_step(top: float, ticks: int = 4) -> int:
    """A round step (1, 2, 5, 10, 20, 50...) giving about ``ticks`` gridlines up to ``top``."""
    raw = max(top / ticks, 1)
    power = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 5, 10):
        if multiple * power >= raw:
            return int(multiple * power)
    return int(10 * power)


def _open(chart_id: str, title: str, desc: str, height: int) -> list[Markup]:
    return [
        Markup('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" '
               'aria-labelledby="{id}-title" aria-describedby="{id}-desc" id="{id}" '
               'font-family="Arial, sans-serif" font-size="{f}">')
        .format(w=WIDTH, h=height, id=chart_id, f=FONT),
        Markup('<title id="{id}-title">{t}</title><desc id="{id}-desc">{d}</desc>').format(id=chart_id, t=title, d=desc),
        Markup('<defs><pattern id="{id}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
               'patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/>'
               '<line x1="0" y1="0" x2="0" y2="6" stroke="#505a5f" stroke-width="3"/></pattern></defs>').format(id=chart_id),
    ]


def _bar(chart_id: str, x: float, y: float, w: float, h: float, colour: str, value: Value, label: str) -> Markup:
    if value == SUPPRESSED:
        return Markup('<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="url(#{id}-hatch)" '
                      'stroke="#505a5f" stroke-dasharray="3 2"><title>{label}: {v}</title></rect>').format(
            x=x, y=y, w=w, h=h, id=chart_id, label=label, v=value)
    return Markup('<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{c}">'
                  '<title>{label}: {v}</title></rect>').format(x=x, y=y, w=w, h=h, c=colour, label=label, v=value)


def _text(x: float, y: float, text: object, anchor: str = "start", colour: str = "#0b0c0c") -> Markup:
    return Markup('<text x="{x:.1f}" y="{y:.1f}" text-anchor="{a}" fill="{c}">{t}</text>').format(
        x=x, y=y, a=anchor, c=colour, t=text)


def _line(x1: float, y1: float, x2: float, y2: float, colour: str) -> Markup:
    return Markup('<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{c}"/>').format(
        x1=x1, y1=y1, x2=x2, y2=y2, c=colour)


def column_chart(*, chart_id: str, title: str, desc: str, points: list[tuple[str, Value]],
                 colour: str = COLOURS[0], height: int = 260) -> Markup:
    """Vertical bars over time (one per week), with a y axis of round numbers."""
    left, right, top, bottom = 44, 10, 22, 44
    inner_w, inner_h = WIDTH - left - right, height - top - bottom
    top_value = max([_height(v) for _, v in points] + [1])
    step = _nice_step(top_value)
    axis_max = step * math.ceil(top_value / step)
    parts = _open(chart_id, title, desc, height)
    for tick in range(0, axis_max + 1, step):
        y = top + inner_h - inner_h * tick / axis_max
        parts.append(_line(left, y, WIDTH - right, y, "#dcdcdc"))
        parts.append(_text(left - 6, y + 5, tick, "end", "#505a5f"))
    n = max(len(points), 1)
    slot = inner_w / n
    width = min(max(slot * 0.7, 1), 48)
    every = max(1, math.ceil(n / 8))  # at most about 8 labels along the bottom
    for i, (label, value) in enumerate(points):
        h = inner_h * _height(value) / axis_max
        x = left + i * slot + (slot - width) / 2
        y = top + inner_h - h
        if h > 0:
            parts.append(_bar(chart_id, x, y, width, h, colour, value, f"Week starting {label}"))
            if n <= 20:
                parts.append(_text(x + width / 2, y - 4, value, "middle"))
        if i % every == 0:
            parts.append(_text(x + width / 2, top + inner_h + 20, label, "middle"))
    parts.append(_line(left, top + inner_h, WIDTH - right, top + inner_h, "#0b0c0c"))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def bar_chart(*, chart_id: str, title: str, desc: str, groups: list[tuple[str, list[tuple[str, Value]]]],
              series: list[str] | None = None) -> Markup:
    """Horizontal bars: one group per row label (a site, a fellowship), one bar per series (a stage)."""
    label_w, left_pad, right_pad, bar_h, gap, group_gap = 170, 8, 44, 18, 3, 14
    legend_h = 28 if series and len(series) > 1 else 0
    per_group = max((len(bars) for _, bars in groups), default=1)
    group_h = per_group * (bar_h + gap) - gap
    height = legend_h + 8 + len(groups) * (group_h + group_gap) + 4
    x0 = label_w + left_pad
    inner_w = WIDTH - x0 - right_pad
    top_value = max([_height(v) for _, bars in groups for _, v in bars] + [1])
    parts = _open(chart_id, title, desc, height)
    if legend_h:
        x = 0.0
        for i, name in enumerate(series or []):
            parts.append(Markup('<rect x="{x:.0f}" y="6" width="14" height="14" fill="{c}"/>').format(
                x=x, c=COLOURS[i % len(COLOURS)]))
            parts.append(_text(x + 19, 18, name))
            x += 19 + 7.5 * len(name) + 16
    y = legend_h + 8.0
    for group_label, bars in groups:
        parts.append(_text(label_w, y + group_h / 2 + 5, _shorten(group_label), "end"))
        for i, (name, value) in enumerate(bars):
            w = inner_w * _height(value) / top_value
            by = y + i * (bar_h + gap)
            if w > 0:
                parts.append(_bar(chart_id, x0, by, w, bar_h, COLOURS[i % len(COLOURS)], value, f"{group_label}, {name}"))
            parts.append(_text(x0 + w + 5, by + bar_h - 4, value))
        y += group_h + group_gap
    parts.append(_line(x0, legend_h + 4, x0, height - 4, "#0b0c0c"))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def _shorten(text: str, most: int = 22) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"
