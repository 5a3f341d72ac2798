"""The dashboard's JSON: pure functions of store records (a sweep, its runs, history rows).
Every value is plain JSON (NaN and the infinities as "NaN", "Infinity", "-Infinity"); the
page shows every string as text."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nbsweep.local import leaderboard
from nbsweep.local.leaderboard import (
    as_number,
    flatten,
    json_plain,
    metric_of,
    metric_value,
)
from nbsweep.local.store import RunRecord, SweepRecord
from nbsweep.status import RunState, to_json_number

IMPORTANCE_BINS = 10
IMPORTANCE_HOW = (
    "importance: the share of the metric's variance that the parameter's value alone explains "
    "(eta squared: runs grouped by value, numbers in up to 10 equal-count bins), over runs "
    "with a metric; correlation: Spearman's rank correlation, numeric parameters only"
)


def sweep_summary(sweep: SweepRecord, runs: Sequence[RunRecord]) -> dict[str, Any]:
    """A row of the sweeps list."""
    metric = metric_of(sweep)
    top = leaderboard.best(sweep, runs)
    summary: dict[str, Any] = json_plain(
        {
            "sweep_id": sweep.sweep_id,
            "name": sweep.name,
            "state": sweep.state,
            "method": sweep.config.get("method"),
            "metric": {"name": metric.name, "goal": metric.goal} if metric.name else None,
            "created_at": sweep.created_at,
            "totals": leaderboard.totals(runs),
            "runs": len(runs),
            "best": None
            if top is None
            else {"run_id": top.run_id, "metric": metric_value(top, metric.name)},
        }
    )
    return summary


def run_row(sweep: SweepRecord, run: RunRecord, number: int) -> dict[str, Any]:
    """A run as the leaderboard and the charts need it: no history (that comes by key)."""
    metric = metric_of(sweep)
    agent = run.agent
    row: dict[str, Any] = json_plain(
        {
            "run_id": run.run_id,
            "number": number,
            "state": run.state,
            "metric": metric_value(run, metric.name),
            "parameters": flatten(run.values),
            "created_at": run.created_at,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "heartbeat_at": run.heartbeat_at,
            "agent": None if agent is None else {"host": agent.host, "pid": agent.pid},
            "error": run.error,
            "stop_requested": run.stop_requested,
            "notebook": run.notebook is not None,
            "summary": _scalars(run.summary),
        }
    )
    return row


def run_detail(sweep: SweepRecord, run: RunRecord, number: int) -> dict[str, Any]:
    """Everything the run page shows: its row, its nested values, and its history by key."""
    detail = run_row(sweep, run, number)
    detail["values"] = json_plain(run.values)
    detail["sweep_id"] = sweep.sweep_id
    detail["metric_name"] = metric_of(sweep).name
    detail["curves"] = curves(run.history)
    return detail


def curves(history: Iterable[Mapping[str, Any]]) -> dict[str, list[list[Any]]]:
    """Each numeric key's ``[step, value]`` pairs, in logged order."""
    found: dict[str, list[list[Any]]] = {}
    for row in history:
        step = row.get("_step")
        for key, value in row.items():
            number = as_number(value)
            if number is not None and not key.startswith("_"):
                found.setdefault(key, []).append([step, json_plain(number)])
    return found


def history_series(logged: Iterable[tuple[str, int, Any]]) -> dict[str, list[list[Any]]]:
    """``{run_id: [[step, value], ...]}`` for the logged values that are numbers."""
    series: dict[str, list[list[Any]]] = {}
    for run_id, step, value in logged:
        # Most values are plain floats: they skip as_number's general checks.
        if type(value) is not float:
            value = as_number(value)
            if value is None:
                continue
        series.setdefault(run_id, []).append([step, to_json_number(value)])
    return series


def logged_keys(runs: Iterable[RunRecord]) -> list[str]:
    """The numeric keys the runs' summaries hold (a run's summary has every key it logged)."""
    keys: set[str] = set()
    for run in runs:
        keys.update(key for key, value in _scalars(run.summary).items() if _numeric(value))
    return sorted(keys)


def importance(sweep: SweepRecord, runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Each parameter's importance and correlation against the metric (``IMPORTANCE_HOW``),
    most important first."""
    name = metric_of(sweep).name
    scored = []
    for run in runs:
        value = metric_value(run, name)
        if value is not None and math.isfinite(value):
            scored.append((flatten(run.values), value))
    parameters = sorted({key for values, _ in scored for key in values})
    table: list[dict[str, Any]] = []
    for parameter in parameters:
        pairs = [(values.get(parameter), metric) for values, metric in scored]
        if len({_hashable(value) for value, _ in pairs}) < 2:
            continue  # a constant explains nothing
        table.append(
            {
                "parameter": parameter,
                "importance": _rounded(_explained_variance(pairs)),
                "correlation": _rounded(_spearman(pairs)),
            }
        )
    table.sort(key=lambda row: -(row["importance"] or 0.0))
    return {"how": IMPORTANCE_HOW, "runs": len(scored), "parameters": table}


def _explained_variance(pairs: Sequence[tuple[Any, float]]) -> float | None:
    metrics = [metric for _, metric in pairs]
    if len(metrics) < 3:
        return None
    mean = sum(metrics) / len(metrics)
    total = sum((metric - mean) ** 2 for metric in metrics)
    if total == 0:
        return None
    groups: dict[Any, list[float]] = {}
    for group, metric in zip(_groups([value for value, _ in pairs]), metrics, strict=True):
        groups.setdefault(group, []).append(metric)
    between = sum(
        len(members) * (sum(members) / len(members) - mean) ** 2 for members in groups.values()
    )
    return between / total


def _groups(values: Sequence[Any]) -> list[Any]:
    """Numbers into up to ``IMPORTANCE_BINS`` equal-count bins by rank; others as they are."""
    if not all(_numeric(value) for value in values) or len(set(values)) <= IMPORTANCE_BINS:
        return [_hashable(value) for value in values]
    order = sorted(range(len(values)), key=lambda index: values[index])
    bins = [0] * len(values)
    for place, index in enumerate(order):
        bins[index] = place * IMPORTANCE_BINS // len(values)
    return bins


def _spearman(pairs: Sequence[tuple[Any, float]]) -> float | None:
    if len(pairs) < 3 or not all(_numeric(value) for value, _ in pairs):
        return None
    first = _ranks([float(value) for value, _ in pairs])
    second = _ranks([metric for _, metric in pairs])
    return _pearson(first, second)


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda index: values[index])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for place in range(start, end + 1):
            ranks[order[place]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _pearson(first: Sequence[float], second: Sequence[float]) -> float | None:
    mean_first, mean_second = sum(first) / len(first), sum(second) / len(second)
    covariance = sum(
        (a - mean_first) * (b - mean_second) for a, b in zip(first, second, strict=True)
    )
    spread = math.sqrt(
        sum((a - mean_first) ** 2 for a in first) * sum((b - mean_second) ** 2 for b in second)
    )
    return None if spread == 0 else covariance / spread


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _scalars(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary's top-level numbers, strings and booleans (no tables or media)."""
    return {
        key: value
        for key, value in summary.items()
        if isinstance(value, (int, float, str, bool)) and not key.startswith("_")
    }


def active(runs: Iterable[RunRecord]) -> bool:
    return any(run.state in (RunState.pending, RunState.running) for run in runs)
