"""The pictures of a local sweep: the metric of each trial with the best so far, and the
parameters in parallel coordinates, as PNG (via matplotlib, the optional ``nbsweep[plot]``) or
as HTML with hand-written SVG (no dependency). Only ``plot`` writes a file; the rest is pure."""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbsweep.errors import OutputError, UsageError
from nbsweep.local.leaderboard import (
    Metric,
    RunLike,
    SweepLike,
    as_number,
    fit,
    flatten,
    format_value,
    metric_of,
    metric_value,
    state_of,
    table,
)
from nbsweep.notebook.files import atomic_write, atomic_write_text
from nbsweep.status import RunState

_MISSING: Any = object()  # a value a run does not have (None is a value)


def plot(sweep: SweepLike, runs: Iterable[RunLike], path: Path) -> None:
    """Two views of the sweep: the metric of each trial with the best so far, and the
    parameters in parallel coordinates against the metric. ``.png`` needs matplotlib (the
    ``nbsweep[plot]`` extra); ``.html`` is one self-contained page of inline SVG."""
    kind = path.suffix.lower()
    if kind not in (".png", ".html", ".htm"):
        raise UsageError(f"cannot plot to {str(path)!r}: name a .png or .html file")
    runs = list(runs)
    panels = _panels(sweep, runs)
    try:
        if kind == ".png":
            _write_png(panels, path)
        else:
            atomic_write_text(path, _html(sweep, runs, panels))
    except OSError as error:
        raise UsageError(f"cannot write {str(path)!r}: {error.strerror or error}") from None
    except OutputError as error:  # a plot the user asked for: a usage error, exit 2
        raise UsageError(str(error)) from None


# The pictures are laid out once, in pixels, as shapes and texts; the HTML writes them as SVG
# and the PNG has matplotlib draw them, so the two always show the same.


@dataclass(frozen=True)
class _Axis:
    """A vertical scale onto 0..1: numbers (log when they span more than two decades), or
    categories (strings, bools, anything else) evenly spaced in sorted order."""

    name: str
    kind: str  # "linear", "log" or "category"
    lo: float = 0.0
    hi: float = 1.0
    categories: tuple[str, ...] = ()
    few: tuple[float, ...] = ()  # the distinct numbers, when there are at most six: the ticks

    @classmethod
    def of(cls, name: str, values: list[Any]) -> _Axis:
        present = [value for value in values if value is not _MISSING]
        found = [as_number(value) for value in present]
        numeric = [n for n in found if n is not None and math.isfinite(n)]
        if present and len(numeric) == len(present):
            lo, hi, distinct = min(numeric), max(numeric), sorted(set(numeric))
            kind = "log" if lo > 0 and hi > 100 * lo else "linear"
            return cls(name, kind, lo, hi, few=tuple(distinct) if len(distinct) <= 6 else ())
        return cls(name, "category", categories=tuple(sorted({format_value(v) for v in present})))

    @property
    def title(self) -> str:
        return f"{self.name} (log)" if self.kind == "log" else self.name

    def place(self, value: Any) -> float | None:
        """Where ``value`` goes, 0 (bottom) to 1 (top); None if it is missing or not finite."""
        if value is _MISSING:
            return None
        if self.kind == "category":
            spaces = len(self.categories) - 1
            return self.categories.index(format_value(value)) / spaces if spaces else 0.5
        found = as_number(value)
        if found is None or not math.isfinite(found):
            return None
        scale = math.log10 if self.kind == "log" else float
        lo, hi = scale(self.lo), scale(self.hi)
        return (scale(found) - lo) / (hi - lo) if hi > lo else 0.5

    def ticks(self) -> list[tuple[float, str]]:
        if self.kind == "category":
            spaces, step = len(self.categories) - 1, 1 + (len(self.categories) - 1) // 12
            shown = range(0, len(self.categories), step)
            return [(i / spaces if spaces else 0.5, self.categories[i]) for i in shown]
        if self.few:
            candidates = list(self.few)
        elif self.kind == "log":
            low, high = math.ceil(math.log10(self.lo)), math.floor(math.log10(self.hi))
            candidates = [10.0**e for e in range(low, high + 1)]
        else:  # round numbers, about five of them
            rough = (self.hi - self.lo) / 5
            power = 10 ** math.floor(math.log10(rough))
            step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= rough)
            first, last = math.ceil(self.lo / step - 1e-9), math.floor(self.hi / step + 1e-9)
            candidates = [k * step for k in range(first, last + 1)]
        ticks: list[tuple[float, str]] = []
        for value in candidates:
            where = self.place(value)
            if where is not None and all(abs(where - other) > 0.07 for other, _ in ticks):
                ticks.append((where, format_value(value, 3)))
        return sorted(ticks)


@dataclass(frozen=True)
class _Shape:
    """A polyline, or a polygon when it has a ``fill``; ``tip`` is the SVG's hover text."""

    points: list[tuple[float, float]]
    colour: str
    width: float = 1.0
    opacity: float = 1.0
    fill: str | None = None
    tip: str = ""


@dataclass(frozen=True)
class _Text:
    x: float
    y: float  # the middle of the text
    text: str
    size: float = 11.0  # pixels
    anchor: str = "start"  # SVG's text-anchor: "start", "middle" or "end"
    angle: float = 0.0  # degrees clockwise, as SVG's rotate
    halo: bool = False  # a white outline, for labels drawn over lines


@dataclass
class _Panel:
    name: str  # the SVG's class
    width: float
    height: float
    items: list[_Shape | _Text]


@dataclass(frozen=True)
class _Trial:
    number: int  # 1-based, in creation order
    run_id: str
    state: str
    value: Any  # a finite float, or _MISSING
    params: dict[str, Any]
    tip: str


_Style = tuple[str, str, bool]  # a marker's shape, colour, and whether it is filled
_MARKS: dict[str, _Style] = {  # by state, in the legend's order
    RunState.finished.value: ("o", "#1f77b4", True),
    RunState.stopped.value: ("s", "#ff7f0e", True),
    RunState.running.value: ("o", "#1f77b4", False),
    RunState.failed.value: ("x", "#d62728", True),
    RunState.crashed.value: ("x", "#7b1fa2", True),
}
_VIRIDIS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]
_OTHER: _Style = ("d", "#777777", True)  # any other state
_STAR: _Style = ("*", "#ffc107", True)  # the best run


def _panels(sweep: SweepLike, runs: list[RunLike]) -> list[_Panel]:
    metric = metric_of(sweep)
    name = metric.name or "metric"
    trials = []
    for number, run in enumerate(sorted(runs, key=lambda run: run.created_at), 1):
        value = metric_value(run, metric.name)
        value = value if value is not None and math.isfinite(value) else _MISSING
        params = flatten(run.values)
        tip = f"{run.run_id} ({state_of(run)}) {name}="
        tip += "-" if value is _MISSING else format_value(value, 6)
        tip += "".join(f"\n{key}={format_value(v)}" for key, v in params.items())
        trials.append(_Trial(number, run.run_id, state_of(run), value, params, tip))
    names = list(dict.fromkeys(key for trial in trials for key in trial.params))
    axes = [_Axis.of(key, [trial.params.get(key, _MISSING) for trial in trials]) for key in names]
    scale = _Axis.of(name, [trial.value for trial in trials])
    scored = scale if any(trial.value is not _MISSING for trial in trials) else None
    width = max(960, 130 * len(axes) + 260)
    return [_progress(metric, scale, trials, width), _parallel(metric, axes, scored, trials, width)]


def _better(metric: Metric, value: float, than: float) -> bool:
    return value > than if metric.goal == "maximize" else value < than


def _progress(metric: Metric, scale: _Axis, trials: list[_Trial], width: float) -> _Panel:
    """The metric of each trial (by state) and the best so far, with a legend on the right."""
    left, right, top, bottom = 80.0, width - 190.0, 44.0, 270.0
    panel = _Panel("progress", width, 320, [])
    panel.items += [
        _Text(left, 20, f"{scale.name} of each trial, and the best so far ({metric.goal})", 15),
        _Shape(
            [(left, top), (right, top), (right, bottom), (left, bottom)], "#888888", fill="none"
        ),
    ]
    scored = [trial for trial in trials if trial.value is not _MISSING]
    if not scored:
        why = f"no run has reported {scale.name} yet" if metric.name else "the sweep has no metric"
        panel.items.append(_Text(left + 20, 150, why, 13))
        return panel

    def at(number: float, value: float) -> tuple[float, float]:
        where = 0.05 + 0.9 * (scale.place(value) or 0.0)
        x = left + (right - left) * (number - 0.5) / len(trials)
        return x, bottom - (bottom - top) * where

    for where, label in scale.ticks():
        y = bottom - (bottom - top) * (0.05 + 0.9 * where)
        panel.items += [
            _Shape([(left, y), (right, y)], "#e6e6e6"),
            _Text(left - 6, y, label, anchor="end"),
        ]
    step = next(s * 10**e for e in range(9) for s in (1, 2, 5) if len(trials) <= 12 * s * 10**e)
    for number in sorted({1, *range(step, len(trials) + 1, step)}):
        panel.items.append(_Text(at(number, 0)[0], bottom + 14, str(number), anchor="middle"))
    panel.items += [
        _Text((left + right) / 2, bottom + 34, "trial (in creation order)", 12, "middle"),
        _Text(20, (top + bottom) / 2, scale.title, 12, "middle", angle=-90),
    ]
    steps, leader = [], scored[0]
    for trial in scored:
        if _better(metric, trial.value, leader.value):
            steps.append(at(trial.number, leader.value))
            leader = trial
        steps.append(at(trial.number, leader.value))
    steps.append(at(len(trials), leader.value))
    panel.items.append(_Shape(steps, "#222222", 1.6, tip="best so far"))
    for trial in scored:
        style = _MARKS.get(trial.state, _OTHER)
        panel.items += _mark(*at(trial.number, trial.value), style, tip=trial.tip)
    panel.items += _mark(*at(leader.number, leader.value), _STAR, 10, leader.tip)
    counts = Counter(trial.state for trial in scored)
    y = top + 8
    for state in sorted(counts, key=lambda s: list(_MARKS).index(s) if s in _MARKS else 9):
        panel.items += _mark(right + 22, y, _MARKS.get(state, _OTHER))
        panel.items.append(_Text(right + 34, y, f"{state} ({counts[state]})"))
        y += 20
    panel.items += [
        _Shape([(right + 12, y), (right + 32, y)], "#222222", 1.6),
        _Text(right + 38, y, "best so far"),
        *_mark(right + 22, y + 22, _STAR, 8),
        _Text(right + 38, y + 22, f"best: {leader.run_id}"),
    ]
    if len(scored) < len(trials):
        missing = f"{len(trials) - len(scored)} trials without {scale.name}"
        panel.items.append(_Text(right + 12, y + 46, missing))
    return panel


def _parallel(
    metric: Metric, params: list[_Axis], scale: _Axis | None, trials: list[_Trial], width: float
) -> _Panel:
    """One line per trial across the parameters' axes and the metric's, darker for better."""
    axes = [*params, *([scale] if scale else [])]
    left, right, top, bottom = 80.0, width - 130.0, 50.0, 330.0
    spacing = (right - left) / max(len(axes) - 1, 1)
    what = f"against {scale.name}: darker is better, thickest best" if scale else "of each trial"
    panel = _Panel("parallel", width, 380, [_Text(left, 20, f"parameters {what}", 15)])
    if not params:
        panel.items.append(_Text(left, 150, "the runs have no parameters", 13))
        return panel
    shades = []  # 0 worst .. 1 best; -1 without the metric (grey, drawn first)
    for trial in trials:
        shade = scale.place(trial.value) if scale else None
        if shade is not None and metric.goal == "minimize":
            shade = 1 - shade
        shades.append(-1.0 if shade is None else shade)
    order = sorted(range(len(trials)), key=lambda i: (shades[i], -i))
    for i in order:
        trial, shade, on_top = trials[i], shades[i], i == order[-1] and shades[i] >= 0
        values = [trial.params.get(axis.name, _MISSING) for axis in params] + [trial.value]
        colour = "#b0b0b0" if shade < 0 else _colour(1 - shade)
        segment: list[tuple[float, float]] = []
        for index, axis in enumerate([*axes, None]):
            where = None if axis is None else axis.place(values[index])
            if where is not None:
                segment.append((left + spacing * index, bottom - (bottom - top) * where))
                continue
            if len(segment) > 1:
                style = (3.2, 1.0) if on_top else (1.4, 0.8)
                panel.items.append(_Shape(segment, colour, *style, tip=trial.tip))
            elif segment:  # a value with no neighbour to join
                panel.items += _mark(*segment[0], ("o", colour, True), 3, trial.tip)
            segment = []
    for index, axis in enumerate(axes):
        x = left + spacing * index
        room = max(int(spacing / 7), 10)  # characters that fit under an axis
        head, dot, tail = axis.title.rpartition(".") if len(axis.title) > room else ("", "", "")
        names = [head + dot, tail] if head else [axis.title]  # a long dotted name on two lines
        panel.items.append(_Shape([(x, top), (x, bottom)], "#555555", 1.2))
        for line, name in enumerate(names):
            panel.items.append(
                _Text(x, bottom + 20 + 15 * line, fit(name, room, True), 12, "middle")
            )
        for where, label in axis.ticks():
            panel.items.append(_Text(x + 5, bottom - (bottom - top) * where, label, 10, halo=True))
    return panel


def _mark(x: float, y: float, style: _Style, size: float = 4.5, tip: str = "") -> list[_Shape]:
    """A marker as polygons: circle "o", square "s", diamond "d", star "*", or cross "x"."""
    shape, colour, filled = style
    if shape == "x":
        return [
            _Shape([(x - size, y - size), (x + size, y + size)], colour, 2.5, tip=tip),
            _Shape([(x - size, y + size), (x + size, y - size)], colour, 2.5, tip=tip),
        ]
    corners = {"o": 16, "s": 4, "d": 4, "*": 10}[shape]
    turn = math.pi / 4 if shape == "s" else 0.0
    points = []
    for i in range(corners):
        reach = size * (0.45 if shape == "*" and i % 2 else 1.0) * (1.3 if shape == "s" else 1.0)
        angle = turn + 2 * math.pi * i / corners
        points.append((x + reach * math.sin(angle), y - reach * math.cos(angle)))
    edge = "#333333" if shape == "*" else colour
    return [_Shape(points, edge, 1.2, fill=colour if filled else "white", tip=tip)]


def _colour(where: float) -> str:
    """Viridis from its darkest (0) to 85% of the way (1): its yellow is unreadable on white."""
    where = min(max(where, 0.0), 1.0) * 0.85 * (len(_VIRIDIS) - 1)
    low = min(int(where), len(_VIRIDIS) - 2)
    pairs = zip(_VIRIDIS[low], _VIRIDIS[low + 1], strict=True)
    mix = [a + (b - a) * (where - low) for a, b in pairs]
    return "#" + "".join(f"{round(c):02x}" for c in mix)


def _svg(panel: _Panel) -> str:
    size = f'width="{panel.width:g}" height="{panel.height:g}"'
    out = [
        f'<svg class="{panel.name}" xmlns="http://www.w3.org/2000/svg" {size}'
        f' viewBox="0 0 {panel.width:g} {panel.height:g}" font-family="DejaVu Sans, sans-serif">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for item in panel.items:
        if isinstance(item, _Text):
            turn = (
                f' transform="rotate({item.angle:g} {item.x:g} {item.y:g})"' if item.angle else ""
            )
            halo = ' stroke="white" stroke-width="3" paint-order="stroke"' if item.halo else ""
            out.append(
                f'<text x="{item.x:.1f}" y="{item.y:.1f}" font-size="{item.size:g}"'
                f' text-anchor="{item.anchor}" dominant-baseline="central" fill="#222222"'
                f"{turn}{halo}>{html.escape(item.text)}</text>"
            )
            continue
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in item.points)
        tip = f"<title>{html.escape(item.tip)}</title>" if item.tip else ""
        out.append(
            f'<{"polyline" if item.fill is None else "polygon"} points="{points}"'
            f' fill="{item.fill}" stroke="{item.colour}" stroke-width="{item.width:g}"'
            f' stroke-opacity="{item.opacity:g}" stroke-linejoin="round">{tip}</'
            f"{'polyline' if item.fill is None else 'polygon'}>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _html(sweep: SweepLike, runs: list[RunLike], panels: list[_Panel]) -> str:
    title = html.escape(f"sweep {sweep.sweep_id}")
    style = "body{font-family:sans-serif;margin:1.5em}svg{display:block;max-width:100%;height:auto}"
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
        f"<title>nbsweep: {title}</title><style>{style}</style></head>\n<body>\n<h1>{title}</h1>\n"
        + "\n".join(_svg(panel) for panel in panels)
        + f"\n<pre>{html.escape(table(sweep, runs, width=None))}</pre>\n</body>\n</html>\n"
    )


def _write_png(panels: list[_Panel], path: Path) -> None:
    try:
        from matplotlib.figure import Figure
        from matplotlib.patheffects import withStroke
    except ImportError:
        raise UsageError(
            f"cannot write {str(path)!r}: a .png needs matplotlib; pip install 'nbsweep[plot]'"
            " (or plot to .html, which needs nothing)"
        ) from None
    width, height = max(p.width for p in panels), sum(p.height for p in panels)
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set(xlim=(0, width), ylim=(height, 0))
    axes.set_axis_off()
    pt, top = 0.72, 0.0  # points per pixel at 100 dpi; where the panel starts
    for panel in panels:
        for z, item in enumerate(panel.items, 1):
            if isinstance(item, _Text):
                halo = [withStroke(linewidth=3 * pt, foreground="white")] if item.halo else None
                align = {"start": "left", "middle": "center", "end": "right"}[item.anchor]
                axes.text(item.x, top + item.y, item.text, fontsize=item.size * pt, ha=align,
                          va="center", rotation=-item.angle, rotation_mode="anchor",
                          color="#222222", path_effects=halo, zorder=z)  # fmt: skip
                continue
            xs, ys = [x for x, _ in item.points], [top + y for _, y in item.points]
            style: dict[str, Any] = {
                "linewidth": item.width * pt,
                "alpha": item.opacity,
                "zorder": z,
            }
            if item.fill is None:
                axes.plot(xs, ys, color=item.colour, solid_joinstyle="round", **style)
            else:
                axes.fill(xs, ys, facecolor=item.fill, edgecolor=item.colour, **style)
        top += panel.height
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=150))
