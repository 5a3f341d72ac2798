"""How one trial meets W&B, decided once: who owns the trial's run, and what nbsweep sends.

- ``owned-online``: the notebook never calls ``wandb.init``, so nbsweep opens the run of a
  W&B sweep, logs each ``nbsweep.log`` record live (hyperband reads them) and finishes it.
- ``owned-offline``: the same for a local sweep, written as an offline run once the trial is
  over (nobody watches it live, and opening a run mid-trial costs the trial CPU).
- ``notebook``: the notebook opens its own run, which gets every record it logs (through
  ``wandb.log``, and ``nbsweep.log`` forwards to it) straight from wandb in the kernel; nbsweep
  sends nothing twice, and only attaches the executed notebook, or closes the run if it died
  open with its kernel.
- ``none``: no W&B at all (``--no-wandb``, or ``nbsweep run`` outside ``wandb agent``).

Used alike by the agent (which runs the W&B calls on a thread of its own) and ``nbsweep run``
(``nbsweep.api.trials.run_under_wandb_agent``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbsweep.sweeping.path import SweepPath
from nbsweep.sweeping.wandb import runs
from nbsweep.trial.metrics import MetricRecord

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from nbsweep.trial.result import TrialResult

ERROR_KEY = "nbsweep/error"
"""The summary key of why a trial failed or was stopped (``TrialResult.error``)."""

Submit = Callable[..., "Future[None] | None"]
"""Runs ``call(*args)``, now or on a thread of the caller's; a failure is warned, not raised."""


class RunMode(Enum):
    OWNED_ONLINE = "owned-online"
    OWNED_OFFLINE = "owned-offline"
    NOTEBOOK = "notebook"
    NONE = "none"

    @classmethod
    def choose(cls, nb: NotebookNode, *, enabled: bool, offline: bool) -> RunMode:
        """``enabled``: report to W&B at all; ``offline``: the sweep is a local one."""
        if not enabled:
            return cls.NONE
        if runs.notebook_opens_run(nb):
            return cls.NOTEBOOK
        return cls.OWNED_OFFLINE if offline else cls.OWNED_ONLINE


def run_now(call: Callable[..., object], *args: Any) -> None:
    """A ``Submit`` for ``nbsweep run``: no thread, the trial is the only thing running."""
    call(*args)


class RunReporter:
    """One trial's W&B run, in its mode; every call goes through ``submit``."""

    def __init__(
        self,
        mode: RunMode,
        path: SweepPath,
        run_id: str,
        values: Mapping[str, Any],
        param_file: Path,
        wandb_dir: Path,
        submit: Submit,
        warn: Callable[[str], None],
        *,
        offline: bool = False,
        kernel_dir: Path | None = None,
    ) -> None:
        self.mode = mode
        self.offline = offline
        """A local sweep: a notebook's own run is an offline run, found under ``kernel_dir``."""
        self.kernel_dir = kernel_dir
        """Where the trial's kernel runs (the notebook's own offline run is written there)."""
        self.path = path
        self.run_id = run_id
        self.submit = submit
        self.warn = warn
        self.run: runs.TrialRun | None = None
        self.records: list[MetricRecord] = []
        if mode in (RunMode.OWNED_ONLINE, RunMode.OWNED_OFFLINE):
            self.run = runs.TrialRun(
                path, run_id, values, param_file, wandb_dir, offline=mode is RunMode.OWNED_OFFLINE
            )

    def started(self) -> None:
        """The trial begins: a W&B sweep watches an owned run live, so open it now."""
        if self.mode is RunMode.OWNED_ONLINE:
            self.submit(self._start)

    def _start(self) -> None:
        self.run = runs.start_or_warn(self.run, self.warn)

    def record(self, record: MetricRecord) -> None:
        """A history row arrived. Rows the notebook logged through wandb are W&B's already."""
        if record.source != "nbsweep":
            return
        if self.mode is RunMode.OWNED_ONLINE:
            self.submit(self._log, record)
        elif self.mode is RunMode.OWNED_OFFLINE:
            self.records.append(record)

    def _log(self, record: MetricRecord) -> None:
        if self.run is not None:
            self.run.log(record)

    def finished(self, result: TrialResult) -> Future[None] | None:
        """The trial is over: finish the run (or, for the notebook's own, attach the
        notebook). Returns what the caller may wait on before the next trial."""
        if self.mode in (RunMode.OWNED_OFFLINE, RunMode.OWNED_ONLINE):
            result = with_error_in_summary(result)
        if self.mode is RunMode.OWNED_OFFLINE and self.run is not None:
            return self.submit(runs.report_afterwards, self.run, self.records, result, self.warn)
        if self.mode is RunMode.OWNED_ONLINE:
            return self.submit(self._finish, result)
        if self.mode is RunMode.NOTEBOOK and not self.offline:
            return self.submit(
                runs.finish_reporting, None, self.path, self.run_id, result, self.warn
            )
        if self.mode is RunMode.NOTEBOOK and self.kernel_dir is not None:
            return self.submit(
                runs.attach_to_offline_run, self.run_id, result, self.kernel_dir, self.warn
            )
        return None

    def _finish(self, result: TrialResult) -> None:
        if self.run is not None:
            runs.finish_reporting(self.run, self.path, self.run_id, result, self.warn)


def with_error_in_summary(result: TrialResult) -> TrialResult:
    """``result`` with why it did not finish as ``nbsweep/error`` among its final values,
    which are what an owned run's summary gets (beside ``nbsweep/status``)."""
    if result.error is None:
        return result
    final = {**result.metrics.final, ERROR_KEY: result.error}
    return dataclasses.replace(result, metrics=dataclasses.replace(result.metrics, final=final))
