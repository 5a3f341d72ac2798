"""A local sweep as the agent sees a sweep server: hand-outs from the store (SQLite or
PostgreSQL) and the embedded engine instead of W&B heartbeats. Several agents share one sweep:
on one machine, or on many through PostgreSQL."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbsweep.errors import NbsweepError, StoreFault, StoreUnreachable, UsageError
from nbsweep.local.database import without_password
from nbsweep.local.engine import Engine
from nbsweep.local.store import AgentIdentity, LoggedRow, RunState, Store
from nbsweep.options import StoreOptions
from nbsweep.status import SweepAction, SweepState

if TYPE_CHECKING:
    from nbsweep.sweeping.path import SweepPath
    from nbsweep.trial.metrics import MetricRecord
    from nbsweep.trial.result import TrialResult

LOCAL_PREFIX = "local:"


def shown(location: Path | str) -> str:
    """A store's location as nbsweep prints it: a URL without its password."""
    return without_password(location) if isinstance(location, str) else str(location)


def local_sweep_id(text: str) -> str | None:
    """``local:ID`` -> ``ID``; anything else is not a local sweep."""
    return text[len(LOCAL_PREFIX) :] if text.startswith(LOCAL_PREFIX) else None


class LocalSweepServer:
    """What ``nbsweep agent local:ID`` talks to instead of W&B."""

    offline_runs = True
    """Each trial is also an offline wandb run, for ``wandb sync`` later."""

    def __init__(
        self,
        store: Store,
        sweep_id: str,
        options: StoreOptions | None = None,
        *,
        stop_check_interval: float = 2.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """``options``: the agent's name and whether it requeues a dead agent's run (default:
        the store's own options)."""
        options = options or store.options
        self.store = store
        self.sweep_id = sweep_id
        store.on_retry = on_retry
        self.record = store.sweep(sweep_id)
        self._engine: Engine | None = None
        self.identity = AgentIdentity.current(options.agent_name)
        self.requeue_crashed = options.requeue_crashed
        self.stop_check_interval = stop_check_interval
        self._last_stop_check = 0.0
        # The trial's history rows, written as they come by a writer thread, never on the
        # event loop: a slow or restarting database server does not hold up the trial. The
        # heartbeat and the end write what the writer has not.
        self._rows: list[LoggedRow] = []
        self._sent = 0  # how many of them are written
        self._rows_run: str | None = None  # whose rows they are
        self._rows_changed = threading.Condition()
        # Held from taking rows to recording them written, and over a hand-out: rows of one
        # attempt of a run never reach the next (a requeued run may come back to us).
        self._attempt = threading.Lock()
        self._closed = False
        self._writing = threading.Thread(target=self._writer, name="nbsweep-store-writer")
        self._writing.daemon = True
        self._writing.start()

    def prepare(self) -> None:
        """Import the engine and its search now, before any hand-out takes
        the store's lock: an agent calls this while its first kernel starts."""
        self.engine.load_search()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.record.config)
        return self._engine

    def stop_waiting(self) -> None:
        """Give up waiting for an unreachable store (the agent was told to stop now)."""
        self.store.stop_waiting()

    def close(self) -> None:
        """Stop the writer and close the store (SQLite folds its log into the file)."""
        with self._rows_changed:
            self._closed = True
            self._rows_changed.notify()
        self._writing.join(timeout=5)
        self.store.close()

    def sweep(self, path: SweepPath) -> dict[str, Any]:
        return {"name": self.sweep_id, "state": self.record.state, "config": self.record.config}

    def create_agent(self, path: SweepPath, host: str) -> str:
        return f"local-{self.identity.host}-{os.getpid()}"

    def heartbeat(self, agent_id: str, running: Mapping[str, bool]) -> list[dict[str, Any]]:
        live = [run_id for run_id, alive in running.items() if alive]
        if live:
            return self._while_running(live[0])
        with self._attempt:
            run = self.store.hand_out(
                self.sweep_id,
                self.identity,
                self.engine.propose,
                requeue_crashed=self.requeue_crashed,
            )
            if run is not None:
                with self._rows_changed:
                    self._rows, self._sent, self._rows_run = [], 0, run.run_id
        if run is None:
            state = self.store.sweep(self.sweep_id).state
            if state is SweepState.PAUSED:
                return []  # the agent asks again after its poll interval
            if state is SweepState.RUNNING and self.engine.target_reached(
                self.store.runs(self.sweep_id)
            ):
                self.store.set_sweep_state(self.sweep_id, SweepState.FINISHED)
            return [{"type": "exit"}]
        args = {name: {"value": value} for name, value in run.values.items()}
        return [{"type": "run", "run_id": run.run_id, "args": args}]

    def _while_running(self, run_id: str) -> list[dict[str, Any]]:
        try:
            if not self._write_rows(run_id) or not self.store.heartbeat(run_id, self.identity):
                # The run was taken from us (reaped after a long silence): stop working on it.
                return [{"type": "stop", "run_id": run_id}]
        except StoreFault:
            # Deleted, replaced, damaged: it stays so. The trial runs to its end, saving its
            # notebook, and its end (trial_finished) tells, once, why nothing was recorded.
            return []
        if self.store.stop_requested(run_id):  # nbsweep sweep --cancel, or --stop-run
            return [{"type": "stop", "run_id": run_id}]
        if not self.engine.terminates_early:
            return []  # reading every run's history is for hyperband alone
        now = time.monotonic()
        if now - self._last_stop_check < self.stop_check_interval:
            return []
        self._last_stop_check = now
        # Each agent judges only its own run: only the owner writes to a run.
        runs = self.store.runs(self.sweep_id, with_history=True)
        if run_id in self.engine.runs_to_stop(runs):
            return [{"type": "stop", "run_id": run_id}]
        return []

    def record_metric(self, run_id: str, record: MetricRecord) -> None:
        with self._rows_changed:
            if run_id != self._rows_run:
                return  # not the run handed out last: nobody's rows to write
            count = len(self._rows)
            self._rows.append(LoggedRow(count, record.step, time.time(), record.values))
            self._rows_changed.notify()

    def _writer(self) -> None:
        """Writes unsent rows as they come: each write takes every row recorded meanwhile."""
        while True:
            with self._rows_changed:
                self._rows_changed.wait_for(lambda: self._closed or len(self._rows) > self._sent)
                if self._closed:
                    return
                run_id = self._rows_run
            assert run_id is not None  # rows come after a hand-out
            try:
                self._write_rows(run_id)
            except NbsweepError:  # the heartbeat says why, and the end writes them
                time.sleep(1.0)

    def trial_finished(self, run_id: str, result: TrialResult) -> None:
        try:
            self._write_rows(run_id)  # refused or not: finish says whether the run is ours
            self.store.finish(
                run_id,
                self.identity,
                RunState.of(result.status),
                result.metrics.summary(),
                str(result.output),
                result.error,
            )
        except (StoreUnreachable, StoreFault) as error:
            raise type(error)(
                f"{error}; run {run_id} was not recorded, its notebook is {str(result.output)!r}"
            ) from None

    def _write_rows(self, run_id: str) -> bool:
        """Write the rows recorded since the last write; False: the run is no longer ours
        (its rows are then dropped: nobody may write them)."""
        with self._attempt:
            with self._rows_changed:
                if self._rows_run != run_id:
                    return False  # the rows are another run's (or attempt's) now
                rows = self._rows[self._sent :]
            if not rows:
                return True
            written = self.store.log_metrics(run_id, self.identity, rows)
            with self._rows_changed:
                self._sent = max(self._sent, rows[-1].n + 1)
            return written

    def run_environment(self, path: SweepPath, run_id: str, param_file: Path) -> dict[str, str]:
        """An offline wandb run per trial (no sweep id: W&B has no such sweep to sync to)."""
        return {
            "WANDB_RUN_ID": run_id,
            "WANDB_MODE": "offline",
            "WANDB_RUN_GROUP": f"nbsweep-{self.sweep_id}",
            "WANDB_SWEEP_PARAM_PATH": str(param_file),
            "WANDB_PROJECT": str(self.record.config.get("project") or "nbsweep-local"),
        }


def open_store(options: StoreOptions, *, read: bool = False) -> Store:
    """The store ``options`` locate; ``read``: only to read (a read-only store can be shown)."""
    location = options.location
    if isinstance(location, str):  # a PostgreSQL database: created on first use
        return Store.open(location, options)
    if not location.exists():
        raise UsageError(
            f"no local sweep store at {str(location)!r}: create a sweep with "
            "`nbsweep sweep --local SWEEP.yaml` (or pass --store / set NBSWEEP_STORE)"
        )
    if read:
        return Store.open_for_reading(location, options)
    return Store.open(location, options)


def control_sweep(
    sweep_id: str,
    action: SweepAction | None,
    options: StoreOptions,
    *,
    run_id: str | None = None,
) -> str:
    """Pause, resume, stop or cancel the local sweep ``sweep_id`` (``local:ID`` or ``ID``)
    as ``wandb sweep`` does (stop: running trials finish, no new ones; cancel: running
    trials are stopped too), or with ``action`` None stop its run ``run_id``; a line saying
    what was done. Agents see it within their heartbeat (a running trial) or poll interval
    (idle)."""
    sweep_id = local_sweep_id(sweep_id) or sweep_id
    with open_store(options) as opened:
        opened.sweep(sweep_id)  # UsageError, one line, if there is no such sweep
        if action is None:
            if run_id is None:
                raise UsageError("stop-run needs the run's ID")
            if run_id not in {run.run_id for run in opened.runs(sweep_id)}:
                raise UsageError(f"sweep {sweep_id} has no run {run_id!r}; see nbsweep status")
            opened.request_stop([run_id])
            return f"run {run_id}: stop requested; its agent stops it at its next heartbeat"
        stopping = opened.set_sweep_state(sweep_id, action.state)
    said = f"sweep {sweep_id}: {action.state}"
    if stopping:
        said += f"; stopping {len(stopping)} running run(s): {', '.join(stopping)}"
    return said
