"""What the dashboard reads and does, over one store connection shared by its request
threads: the sweeps, what changed in one, history rows by key, a run, its notebook, and the
sweep controls (the same calls as ``nbsweep sweep --pause`` and ``--stop-run``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from nbsweep.dashboard import views
from nbsweep.dashboard.notebooks import Renderer, locate
from nbsweep.dashboard.watch import Watches
from nbsweep.errors import UsageError
from nbsweep.local.server import control_sweep, open_store
from nbsweep.local.store import RunRecord
from nbsweep.options import DashboardOptions
from nbsweep.status import SweepAction

HISTORY_ROWS_PER_ANSWER = 100_000
"""At most this many history rows in one answer; the page asks again for the rest."""


class SweepData:
    def __init__(self, options: DashboardOptions) -> None:
        self.options = options
        self._store = open_store(options.store, read=True)
        self._lock = threading.Lock()
        self._watches = Watches()
        self._renderer = Renderer()

    def close(self) -> None:
        with self._lock:
            self._store.close()

    def require(self, sweep_id: str) -> None:
        """UsageError, one line, if the store has no such sweep."""
        with self._lock:
            self._store.sweep(sweep_id)

    def sweeps(self) -> list[dict[str, Any]]:
        with self._lock:
            listed = [
                views.sweep_summary(sweep, self._store.runs(sweep.sweep_id))
                for sweep in self._store.sweeps()
            ]
        return sorted(listed, key=lambda sweep: -sweep["created_at"])

    def changes(self, sweep_id: str, since: int) -> dict[str, Any]:
        """The sweep and the runs changed after change number ``since`` (0: everything)."""
        with self._lock:
            watch = self._watches.get(sweep_id)
            if time.monotonic() - watch.read_at >= self.options.refresh:
                self._store.reap(sweep_id)  # a dead agent's run shows as crashed, as status does
                watch.update(self._store.sweep(sweep_id), self._store.runs(sweep_id))
            answer = watch.since(since)
        answer["now"] = time.time()
        return answer

    def history(self, sweep_id: str, key: str, after: int) -> dict[str, Any]:
        """``key``'s values per run in the history rows written after row ``after``."""
        with self._lock:
            stretch = self._store.key_history(sweep_id, key, after, HISTORY_ROWS_PER_ANSWER)
        return {
            "after": stretch.last_row,
            "more": stretch.rows_read == HISTORY_ROWS_PER_ANSWER,
            "runs": views.history_series(stretch.values),
        }

    def run(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            run = self._store.run(run_id, with_history=True)
            sweep = self._store.sweep(run.sweep_id)
            order = [other.run_id for other in self._store.runs(run.sweep_id)]
        detail = views.run_detail(sweep, run, order.index(run_id) + 1)
        detail["notebook_problem"] = self._notebook_problem(run)
        return detail

    def notebook(self, run_id: str) -> Path:
        """The run's executed notebook, if it is inside the folder the dashboard serves."""
        with self._lock:
            run = self._store.run(run_id)
        if run.notebook is None:
            raise UsageError(f"run {run_id} has no notebook yet")
        return locate(run.notebook, self.options.notebooks)

    def notebook_html(self, run_id: str) -> str:
        return self._renderer.html(self.notebook(run_id))

    def control(self, sweep_id: str, action: str) -> str:
        try:
            chosen = SweepAction(action)
        except ValueError:
            raise UsageError(f"unknown action {action!r}: pause, resume, stop or cancel") from None
        return control_sweep(sweep_id, chosen, self.options.store)

    def stop_run(self, run_id: str) -> str:
        with self._lock:
            sweep_id = self._store.run(run_id).sweep_id
        return control_sweep(sweep_id, None, self.options.store, run_id=run_id)

    def _notebook_problem(self, run: RunRecord) -> str | None:
        if run.notebook is None:
            return "no notebook yet: the agent saves it when the trial ends"
        try:
            locate(run.notebook, self.options.notebooks)
        except UsageError as problem:
            return str(problem)
        return None
