"""Metrics a trial produces: records from its metrics channel (``nbsweep.log`` and what the
notebook logs through wandb), captured live, and final variable values."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbsweep.kernel.hooks import METRICS_FILE_ENV
from nbsweep.notebook.redaction import Redactor
from nbsweep.status import from_json_number, to_json_number

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


@dataclass(frozen=True)
class MetricRecord:
    """One history row: an ``nbsweep.log`` call, or a row the notebook's wandb run committed."""

    step: int
    values: dict[str, Any]
    source: str = "nbsweep"
    """"nbsweep" (``nbsweep.log``) or "wandb" (already sent to W&B by the notebook's run)."""


@dataclass
class Metrics:
    """Everything a trial reported, in order."""

    history: list[MetricRecord] = field(default_factory=list)
    logged: dict[str, Any] = field(default_factory=dict)
    """The last value of each key, history rows and summary writes applied in order."""
    final: dict[str, Any] = field(default_factory=dict)
    """Values of the ``--metric`` variables after the last cell."""
    missing: list[str] = field(default_factory=list)
    """``--metric`` variables the notebook never defined."""
    used_wandb: bool = False
    """The notebook imported wandb in the kernel."""
    on_record: Callable[[MetricRecord], None] | None = field(default=None, repr=False)
    redactor: Redactor = field(default_factory=lambda: Redactor(()), repr=False)
    """Masks secrets in names and values as they arrive, before anyone sees them."""

    def take(self, entry: Mapping[str, Any]) -> MetricRecord | None:
        """Record one channel entry: a history row, a summary write or a marker."""
        if "h" in entry and isinstance(entry["h"], Mapping):
            values = self._redacted(entry["h"])
            step = int(entry.get("s", len(self.history)))
            record = MetricRecord(step, values, str(entry.get("o", "nbsweep")))
            self.history.append(record)
            self.logged.update(values)
            if self.on_record is not None:
                self.on_record(record)
            return record
        if "u" in entry and isinstance(entry["u"], Mapping):
            self.logged.update(self._redacted(entry["u"]))
        elif entry.get("w"):
            self.used_wandb = True
        return None

    def _redacted(self, values: Mapping[str, Any]) -> dict[str, Any]:
        numbers = {str(name): from_json_number(value) for name, value in values.items()}
        return self.redactor.value(numbers)

    def summary(self) -> dict[str, Any]:
        """The last logged value of each metric (summary writes included), then the final
        variable values."""
        return {**self.logged, **self.final}

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": json_safe(self.summary()),
            "history": [{"step": r.step, **json_safe(r.values)} for r in self.history],
            "missing": list(self.missing),
        }


class MetricsChannel:
    """The file a trial's kernel appends its records to, read as it grows.

    A file cannot drop a record (IOPub drops messages past its high-water marks when a
    notebook logs fast), keeps them in order, and survives the kernel's death."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="nbsweep-trial-"))
        self.path = self.folder / "metrics.jsonl"
        self.path.touch(mode=0o600)
        self._file = self.path.open("rb")
        self._partial = b""

    def environment(self) -> dict[str, str]:
        return {METRICS_FILE_ENV: str(self.path)}

    def read(self, metrics: Metrics) -> int:
        """Hand every complete new line to ``metrics``; the number read."""
        chunk = self._file.read()
        if not chunk:
            return 0
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                metrics.take(json.loads(line))
        return len(lines)

    def close(self) -> None:
        self._file.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    """Non-finite floats as the strings JSON writers use ("NaN", "Infinity", "-Infinity")."""
    return {
        name: to_json_number(value) if isinstance(value, float) else value
        for name, value in values.items()
    }
