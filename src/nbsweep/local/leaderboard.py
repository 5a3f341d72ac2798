"""A local sweep's leaderboard: its runs ranked by the sweep's metric, as a text table and as
JSON. Pure functions of ``(sweep, runs)``; the pictures are in ``nbsweep.local.plots``. Runs
and sweeps are any objects with the store's attributes; nothing here imports the store."""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, TypeVar

from nbsweep.formatting import format_value
from nbsweep.status import RunState, SweepState, from_json_number, to_json_number

STATES = tuple(state.value for state in RunState)  # as totals shows them


class SweepLike(Protocol):
    sweep_id: str
    config: dict[str, Any]  # the sweep YAML; its ``metric: {name, goal}`` is read


class RunLike(Protocol):
    run_id: str
    state: Any  # an Enum whose ``.value`` is one of STATES (a plain string works too)
    values: dict[str, Any]  # parameter values; nested dicts for nested parameters
    created_at: float
    started_at: float | None
    finished_at: float | None
    summary: dict[str, Any]
    notebook: str | None
    history: list[dict[str, Any]]  # each with "step" and metric values
    # Optional, read with error_of: ``error``, why the run failed or was stopped.


R = TypeVar("R", bound=RunLike)


@dataclass(frozen=True)
class Metric:
    name: str | None
    goal: str  # "minimize" (the default) or "maximize"


def metric_of(sweep: SweepLike) -> Metric:
    spec = sweep.config.get("metric")
    spec = spec if isinstance(spec, Mapping) else {}
    goal = "maximize" if spec.get("goal") == "maximize" else "minimize"
    return Metric(str(spec["name"]) if spec.get("name") else None, goal)


def metric_value(run: RunLike, name: str | None) -> float | None:
    """``summary[name]`` (a dotted name also reaches into nested dicts), else the last value
    logged in the history; None if neither is a number ("NaN"/"Infinity" strings count)."""
    if name is None:
        return None
    for record in [run.summary, *reversed(run.history)]:
        value = as_number(_lookup(record, name))
        if value is not None:
            return value
    return None


def rank(sweep: SweepLike, runs: Iterable[R]) -> list[R]:
    """Best first; then runs whose metric is NaN, then runs without it; ties by creation."""
    metric = metric_of(sweep)

    def key(run: R) -> tuple[int, float, float]:
        value = metric_value(run, metric.name)
        if value is None or math.isnan(value):
            return (2 if value is None else 1, 0.0, run.created_at)
        return (0, -value if metric.goal == "maximize" else value, run.created_at)

    return sorted(runs, key=key)


def best(sweep: SweepLike, runs: Iterable[R]) -> R | None:
    """The first-ranked run, if it has a metric value that is not NaN (whatever its state)."""
    ranked = rank(sweep, runs)
    value = metric_value(ranked[0], metric_of(sweep).name) if ranked else None
    return ranked[0] if value is not None and not math.isnan(value) else None


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted names: ``{"opt": {"lr": 1}}`` -> ``{"opt.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def state_of(run: RunLike) -> str:
    return str(run.state.value if isinstance(run.state, Enum) else run.state)


def error_of(run: RunLike) -> str | None:
    """Why the run failed or was stopped, in one line; None if nobody said."""
    return getattr(run, "error", None)


def duration(run: RunLike, now: float | None = None) -> float | None:
    """Seconds from start to finish, or so far while running; None if it has no start."""
    end = run.finished_at
    if end is None and state_of(run) == RunState.running:
        end = time.time() if now is None else now
    return None if run.started_at is None or end is None else max(0.0, end - run.started_at)


def totals(runs: Iterable[RunLike]) -> dict[str, int]:
    """Runs per state: every state in STATES (zeros too), then any other state seen."""
    counts = dict.fromkeys(STATES, 0)
    for run in runs:
        counts[state_of(run)] = counts.get(state_of(run), 0) + 1
    return counts


def table(
    sweep: SweepLike, runs: Iterable[RunLike], *, width: int | None = 120, now: float | None = None
) -> str:
    """The ranked runs in aligned columns (parameters, then notebook, shortened to fit
    ``width``; None: never), the runs per state, and the best run with its notebook."""
    runs = list(runs)
    metric = metric_of(sweep)
    shown = [metric.name] if metric.name else []
    rows = [["#", "run", "state", *shown, "duration", "parameters", "notebook"]]
    ranked = rank(sweep, runs)
    for place, run in enumerate(ranked, 1):
        value = metric_value(run, metric.name)
        shown = [format_value(value, 6) if value is not None else "-"] if metric.name else []
        params = " ".join(f"{k}={format_value(v)}" for k, v in flatten(run.values).items())
        span = _format_seconds(duration(run, now))
        rows.append(
            [str(place), run.run_id, state_of(run), *shown, span, params, run.notebook or "-"]
        )
    count = len(rows[0])
    widths = [max(len(row[i]) for row in rows) for i in range(count)]
    gaps = 2 * (count - 1)
    if width and sum(widths) + gaps > width:  # notebooks lose their start (down to 24 wide),
        widths[-1] = max(min(widths[-1], 24), width - gaps - sum(widths[:-1]))
        widths[-2] = max(min(widths[-2], 20), width - gaps - sum(widths) + widths[-2])  # params
    right = {0, count - 3, 3 if metric.name else 0}
    title = f"{metric.name} ({metric.goal})" if metric.name else "no metric, runs by creation"
    state = getattr(sweep, "state", SweepState.RUNNING)
    shown_state = "" if state == SweepState.RUNNING else f" ({state})"
    lines = [f"sweep {sweep.sweep_id}{shown_state}: {title}"]
    for row in rows if runs else []:
        cells = []
        for i, (text, size) in enumerate(zip(row, widths, strict=True)):
            text = fit(text, size, cut_start=i == count - 1)
            cells.append(text.rjust(size) if i in right else text.ljust(size))
        lines.append("  ".join(cells).rstrip())
    for run in ranked:  # why runs failed: the table has no room for it
        error = error_of(run)
        if error:
            said = f"run {run.run_id} {state_of(run)}: {error}"
            lines.append(fit(said, width) if width else said)
    # The totals and the best run last: what a reader (and a script) looks for at the end.
    counts = ", ".join(f"{n} {state}" for state, n in totals(runs).items() if n)
    lines.append(
        f"{len(runs)} run{'' if len(runs) == 1 else 's'}" + (f": {counts}" if runs else "")
    )
    top = best(sweep, runs)
    if top is not None:
        best_value = format_value(metric_value(top, metric.name), 6)
        found = f"best: {top.run_id} {metric.name}={best_value}"
        lines.append(found + (f" notebook: {top.notebook}" if top.notebook else ""))
    return "\n".join(lines) + "\n"


def as_json(sweep: SweepLike, runs: Iterable[RunLike], *, now: float | None = None) -> dict:
    """What ``table`` shows, for machines, in plain JSON types (NaN and infinities as the
    strings "NaN", "Infinity", "-Infinity", as in ``--metrics-json``)."""
    runs = list(runs)
    metric = metric_of(sweep)
    top = best(sweep, runs)
    ranked = [
        {
            "rank": place,
            "run_id": run.run_id,
            "state": state_of(run),
            "metric": metric_value(run, metric.name),
            "values": run.values,
            "parameters": flatten(run.values),
            "created_at": run.created_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "duration": duration(run, now),
            "notebook": run.notebook,
            "error": error_of(run),
            "summary": run.summary,
            "history": run.history,
        }
        for place, run in enumerate(rank(sweep, runs), 1)
    ]
    plain: dict[str, Any] = json_plain(
        {
            "sweep_id": sweep.sweep_id,
            "state": getattr(sweep, "state", SweepState.RUNNING),
            "metric": {"name": metric.name, "goal": metric.goal} if metric.name else None,
            "runs": ranked,
            "totals": totals(runs),
            "best": None
            if top is None
            else {
                "run_id": top.run_id,
                "metric": metric_value(top, metric.name),
                "notebook": top.notebook,
            },
        }
    )
    return plain


def as_number(value: Any) -> float | None:
    """A real number as a float ("NaN"/"Infinity"/"-Infinity" strings too); else None."""
    if isinstance(value, str):
        number = from_json_number(value)
        return number if isinstance(number, float) else None
    return None if isinstance(value, bool) or not isinstance(value, numbers.Real) else float(value)


def _lookup(record: Mapping[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    node: Any = record
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def fit(text: str, size: int, cut_start: bool = False) -> str:
    """``text`` shortened to ``size`` characters with "...", at its end or its start."""
    if len(text) <= size:
        return text
    return "..." + text[len(text) - size + 3 :] if cut_start else text[: size - 3] + "..."


def json_plain(value: Any) -> Any:
    """JSON's types only, so ``json.dumps(..., allow_nan=False)`` works and reads back equal."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return to_json_number(float(value))
    if isinstance(value, Mapping):
        return {str(key): json_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_plain(item) for item in value]
    return str(value)
