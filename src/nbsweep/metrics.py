"""Metrics a trial produces: ``nbsweep.log`` records captured live, and final variable values."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbsweep.kernel_api import METRICS_MIME

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@dataclass(frozen=True)
class MetricRecord:
    """One ``nbsweep.log`` call."""

    step: int
    values: dict[str, Any]


@dataclass
class Metrics:
    """Everything a trial reported, in order."""

    history: list[MetricRecord] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    """Values of the ``--metric`` variables after the last cell."""
    missing: list[str] = field(default_factory=list)
    """``--metric`` variables the notebook never defined."""
    on_record: Callable[[MetricRecord], None] | None = field(default=None, repr=False)

    def capture(self, data: Mapping[str, Any]) -> MetricRecord | None:
        """Record the metrics in a display message's data bundle, if it carries any."""
        payload = data.get(METRICS_MIME)
        if not isinstance(payload, Mapping) or not isinstance(payload.get("metrics"), Mapping):
            return None
        values = {name: _number(value) for name, value in payload["metrics"].items()}
        record = MetricRecord(int(payload.get("step", len(self.history))), values)
        self.history.append(record)
        if self.on_record is not None:
            self.on_record(record)
        return record

    def summary(self) -> dict[str, Any]:
        """The last logged value of each metric, then the final variable values."""
        summary: dict[str, Any] = {}
        for record in self.history:
            summary.update(record.values)
        summary.update(self.final)
        return summary

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": _json_safe(self.summary()),
            "history": [{"step": r.step, **_json_safe(r.values)} for r in self.history],
            "missing": list(self.missing),
        }


def _number(value: Any) -> Any:
    return _NON_FINITE.get(value, value) if isinstance(value, str) else value


def _json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    reverse = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
    return {
        name: reverse[repr(value)]
        if isinstance(value, float) and not math.isfinite(value)
        else value
        for name, value in values.items()
    }
