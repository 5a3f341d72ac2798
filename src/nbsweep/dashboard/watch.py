"""What changed in a sweep since a page last asked. The store keeps no change log for runs,
so the dashboard keeps each watched run's last row and numbers every change itself: a page
asks with the last number it saw and gets only the runs changed since. Memory stays bounded:
one row per run of the few most recently watched sweeps, never their history."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nbsweep.dashboard import views
from nbsweep.local.leaderboard import json_plain
from nbsweep.local.store import RunRecord, SweepRecord

WATCHED_SWEEPS = 8
"""Sweeps whose rows are kept; the least recently asked-for one goes first."""


@dataclass
class SweepWatch:
    """One sweep's rows, each with the change number at which it last changed."""

    version: int = 0
    sweep_version: int = 0
    sweep: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    importance: dict[str, Any] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    read_at: float = 0.0

    def update(self, sweep: SweepRecord, runs: Sequence[RunRecord]) -> None:
        before = self.version
        for number, run in enumerate(runs, 1):
            row = views.run_row(sweep, run, number)
            known = self.rows.get(run.run_id)
            if known is None or known[1] != row:
                self.version += 1
                self.rows[run.run_id] = (self.version, row)
        described = describe(sweep, runs)
        if described != self.sweep:
            self.version += 1
            self.sweep, self.sweep_version = described, self.version
        if self.version != before:
            self.importance = views.importance(sweep, runs)
            self.keys = views.logged_keys(runs)
        self.read_at = time.monotonic()

    def since(self, version: int) -> dict[str, Any]:
        """The runs changed after ``version`` (all of them for 0 or for a number this watch
        never gave out: the dashboard was restarted), with the sweep if it changed."""
        fresh = version <= 0 or version > self.version
        changed = [row for seen, row in self.rows.values() if fresh or seen > version]
        return {
            "version": self.version,
            "complete": fresh,
            "sweep": self.sweep if fresh or self.sweep_version > version else None,
            "runs": changed,
            "importance": self.importance,
            "keys": self.keys,
        }


def describe(sweep: SweepRecord, runs: Sequence[RunRecord]) -> dict[str, Any]:
    summary = views.sweep_summary(sweep, runs)
    summary["config"] = json_plain(sweep.config)
    return summary


class Watches:
    """The watched sweeps, the least recently used dropped past ``WATCHED_SWEEPS``."""

    def __init__(self) -> None:
        self._watches: OrderedDict[str, SweepWatch] = OrderedDict()

    def get(self, sweep_id: str) -> SweepWatch:
        watch = self._watches.pop(sweep_id, None) or SweepWatch()
        self._watches[sweep_id] = watch
        while len(self._watches) > WATCHED_SWEEPS:
            self._watches.popitem(last=False)
        return watch
