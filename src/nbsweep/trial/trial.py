"""One prepared trial, from its kernel's start to its saved notebook: ``Trial``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from nbformat import NotebookNode

from nbsweep.errors import EXIT_INTERRUPTED, KernelStartError, OutputError, ParameterError
from nbsweep.kernel.environment import trial_environment, trial_variables
from nbsweep.kernel.executor import (
    CellFailure,
    Hooks,
    Outcome,
    StartAt,
    StopRequest,
    execute,
    prepare_output_handling,
)
from nbsweep.kernel.hooks import INSTALL_HOOKS, TRIAL_FILE_ENV
from nbsweep.kernel.process import Kernel
from nbsweep.notebook import files
from nbsweep.notebook.injection import Injection
from nbsweep.notebook.install_cells import is_skipped_message
from nbsweep.notebook.literals import to_literal
from nbsweep.notebook.redaction import Redactor
from nbsweep.status import EndReason, TrialStatus
from nbsweep.trial.metrics import MetricRecord, Metrics, MetricsChannel
from nbsweep.trial.reporting import Reporter
from nbsweep.trial.result import TrialResult
from nbsweep.trial.spec import TrialSpec, html_path

# Seconds a notebook's own wandb run gets to finish (it may upload) before the kernel goes.
_FINISH_RUN_TIMEOUT = 10.0

_FINISH_NOTEBOOK_RUN = """\
import sys as _nbsweep_sys
_nbsweep_wandb = _nbsweep_sys.modules.get("wandb")
if _nbsweep_wandb is not None and getattr(_nbsweep_wandb, "run", None) is not None:
    _nbsweep_wandb.finish(exit_code={code})
del _nbsweep_sys, _nbsweep_wandb
"""
_FLUSH_PENDING_ROWS = "__import__('nbsweep.kernel.hooks').kernel.hooks.flush_pending()"
# How often the metrics channel is read while cells run (hyperband and progress see a
# record this late at most); it is read once more at the end, so nothing is lost.
_CHANNEL_POLL = 0.05


class Trial:
    """One prepared trial, from its kernel's start to its saved notebook. It owns its
    metrics channel, its stream-overflow files, its environment and the one redactor made
    from that environment, and closes them on every path."""

    def __init__(
        self,
        spec: TrialSpec,
        reporter: Reporter,
        injection: Injection,
        output: Path,
        started: float,
        on_metric: Callable[[MetricRecord], None] | None = None,
    ) -> None:
        self.spec = spec
        self.reporter = reporter
        self.injection = injection
        self.nb = injection.notebook
        self.output = output
        self.started = started
        self.on_metric = on_metric
        self.channel = MetricsChannel()
        try:
            trial_file = _trial_file(spec, injection, self.channel)
        except BaseException:
            self.channel.close()
            raise
        self.variables = trial_variables({**spec.env, **self.channel.environment(), **trial_file})
        """What the kernel gets on top of this process's environment."""
        self.redactor = Redactor.from_environ(trial_environment(self.variables))
        self.metrics = Metrics(on_record=self._on_record, redactor=self.redactor)
        self.overflow = _StreamOverflow(output, injection)
        self.started_cells = False

    def _on_record(self, record: MetricRecord) -> None:
        self.reporter.metric(record)
        if self.on_metric is not None:
            self.on_metric(record)

    async def run(
        self,
        kernel: Kernel | None,
        stop: StopRequest,
        retire: Callable[[Awaitable[None]], None] | None,
    ) -> TrialResult:
        """Start (or take) the kernel, run the cells, save; the kernel is stopped after."""
        warm = kernel is not None
        kernel = kernel or Kernel(self.spec.settings.kernel_for(self.nb))
        try:
            outcome = await self._execute(kernel, warm, stop)
            kernel_lost = await self._wind_up(kernel, outcome)
        except BaseException:
            await kernel.stop(graceful=False)
            self.channel.read(self.metrics)
            self._save_partial()
            raise
        finally:
            self.channel.close()
            self.overflow.close()
        try:
            result = await self._save(self._result(outcome, kernel, kernel_lost))
        finally:
            stopping = kernel.retire(finished=outcome.status is TrialStatus.FINISHED)
            if retire is None:
                await stopping
            else:
                retire(stopping)
        self.reporter.trial_finished(result)
        return result

    async def _start(self, kernel: Kernel, warm: bool) -> None:
        reporter = self.reporter
        for warning in self.injection.warnings:
            # The same skipped install lines every trial: an agent says so once.
            (reporter.warn_once if is_skipped_message(warning) else reporter.warn)(warning)
        reporter.trial_started(self.spec.notebook, self.output)
        try:
            if not warm:
                cwd = self.spec.settings.kernel_cwd(self.spec.notebook)
                await kernel.launch(cwd, trial_environment(self.variables))
            if kernel.info is None:  # while it boots
                await asyncio.to_thread(prepare_output_handling)
            await kernel.wait_ready()
        except KernelStartError as error:  # it quotes what the kernel wrote as it died
            raise KernelStartError(self.redactor.text(str(error))) from None
        await kernel.update_environment(self.variables)
        kernel.send_silently(INSTALL_HOOKS)

    async def _execute(self, kernel: Kernel, warm: bool, stop: StopRequest) -> Outcome:
        await self._start(kernel, warm)
        self.started_cells = True
        source_index, reporter = self.injection.source_index, self.reporter
        hooks = Hooks(
            cell_started=lambda index, number, total: reporter.cell_started(
                source_index(index), number, total
            ),
            cell_finished=reporter.cell_finished,
            stream=reporter.stream,
            overflow=self.overflow.write,
        )
        following = asyncio.ensure_future(_follow(self.channel, self.metrics))
        settings = self.spec.settings
        try:
            return await execute(
                self.nb,
                kernel,
                settings.execution,
                hooks,
                stop,
                settings.metric_variables,
                self.redactor,
                start=self._setup_done(kernel),
            )
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)

    def _setup_done(self, kernel: Kernel) -> StartAt | None:
        """Where the trial's cells begin: after the setup the kernel was forked from (its
        outputs go into the notebook), or at the first cell (None)."""
        template = kernel.template
        setup = template.shares_setup() if template is not None else None
        if setup is None or not setup.matches(self.nb):
            return None
        setup.fill(self.nb)
        return StartAt(setup.work.fork_index, len(setup.work.cells))

    async def _wind_up(self, kernel: Kernel, outcome: Outcome) -> bool:
        """End the notebook's own wandb run as what the trial was; whether the kernel was
        lost before the end."""
        self.channel.read(self.metrics)  # what the cells wrote, the mark of a wandb import
        kernel_lost = not await kernel.is_alive()
        if self.metrics.used_wandb and not kernel_lost:
            # Rows the notebook left uncommitted are W&B's at its run's end: nbsweep's now.
            await kernel.execute_silently(_FLUSH_PENDING_ROWS, _FINISH_RUN_TIMEOUT)
        if outcome.status is not TrialStatus.FINISHED and not kernel_lost:
            # A kernel shut down with the notebook's own wandb run open would finish it
            # with exit code 0: end it as what it was first.
            code = EXIT_INTERRUPTED if outcome.status is TrialStatus.STOPPED else 1
            await kernel.execute_silently(
                _FINISH_NOTEBOOK_RUN.format(code=code), _FINISH_RUN_TIMEOUT
            )
        self.channel.read(self.metrics)  # every record is in the file before its cell's reply
        return kernel_lost

    def _save_partial(self) -> None:
        """nbsweep itself failed: keep what ran."""
        if self.started_cells:
            with contextlib.suppress(OutputError):  # the first error is the one to tell
                _write_notebook(
                    self.nb,
                    self.output,
                    _Ending(TrialStatus.FAILED, EndReason.ERROR),
                    self.started,
                    self.redactor,
                )

    async def _save(self, result: TrialResult) -> TrialResult:
        try:
            # On a thread: the loop stays free to hear a signal during a long save.
            ending = _Ending(result.status, result.reason, result.failure, result.source_cell_index)
            await asyncio.to_thread(
                _write_notebook, self.nb, self.output, ending, self.started, self.redactor
            )
        except OutputError as error:
            # The trial ran; what it measured is still reported. It failed all the same:
            # its notebook is not where it should be.
            return dataclasses.replace(
                result,
                status=TrialStatus.FAILED,
                reason=EndReason.CANNOT_SAVE,
                save_error=str(error),
            )
        return await _save_html(self.nb, result, self.reporter)

    def _result(self, outcome: Outcome, kernel: Kernel, kernel_lost: bool) -> TrialResult:
        redactor, metrics, injection = self.redactor, self.metrics, self.injection
        metrics.final.update(redactor.value(outcome.variables))
        metrics.missing.extend(outcome.missing_variables)
        failure = outcome.failure
        if failure is not None:
            traceback = failure.traceback
            if outcome.reason is EndReason.KERNEL_DIED and kernel.log_tail():
                traceback = (kernel.log_tail(),)
            failure = CellFailure(
                failure.cell_index,
                failure.ename,
                redactor.text(failure.evalue),
                tuple(redactor.text(line) for line in traceback),
            )
        return TrialResult(
            outcome.status,
            outcome.reason,
            self.output,
            html_path(self.output) if self.spec.settings.html else None,
            metrics,
            time.monotonic() - self.started,
            failure,
            injection.source_index(failure.cell_index) if failure else None,
            injection.warnings,
            kernel_lost,
        )


async def _save_html(nb: NotebookNode, result: TrialResult, reporter: Reporter) -> TrialResult:
    """The HTML copy, if asked for. The saved notebook holds all the trial made, so an HTML
    copy that cannot be written is a warning naming it, not a failed trial."""
    if result.html is None:
        return result
    try:
        await asyncio.to_thread(files.write_html, nb, result.html)
    except OutputError as error:
        warning = f"the HTML copy was not saved: {error}"
        reporter.warn(warning)
        return dataclasses.replace(result, html=None, warnings=(*result.warnings, warning))
    return result


class _StreamOverflow:
    """Where a cell's stream goes past what the notebook keeps: one side file per cell and
    stream beside the executed notebook (``x.cell3.stdout.txt``). The executor hands it
    text already redacted, in pieces."""

    def __init__(self, output: Path, injection: Injection) -> None:
        self.output = output
        self.injection = injection
        self.files: dict[Path, IO[str]] = {}

    def write(self, index: int, name: str, text: str) -> str:
        cell = self.injection.source_index(index)
        path = self.output.with_name(f"{self.output.stem}.cell{cell}.{name}.txt")
        file = self.files.get(path)
        if file is None:
            file = self.files[path] = path.open("w", encoding="utf-8")
        try:
            file.write(text)
        except OSError:
            return f"{path.name} (cut short: {len(text):,} characters could not be written)"
        return path.name

    def close(self) -> None:
        for file in self.files.values():
            with contextlib.suppress(OSError):
                file.close()
        self.files.clear()


async def _follow(channel: MetricsChannel, metrics: Metrics) -> None:
    """Read the channel as it grows, so that progress and hyperband see records live."""
    while True:
        channel.read(metrics)
        await asyncio.sleep(_CHANNEL_POLL)


def _trial_file(spec: TrialSpec, injection: Injection, channel: MetricsChannel) -> dict[str, str]:
    """What the kernel's wandb needs of the trial: its values (for ``wandb.config``) and
    its sweep (for ``wandb.sweep``), as a Python literal the kernel reads with ``ast``."""
    trial = {
        "values": injection.values,
        "sweep_id": spec.sweep_id,
        "sweep_config": dict(spec.sweep_config) if spec.sweep_config else None,
        "sweep_function": (
            dataclasses.asdict(injection.sweep_function) if injection.sweep_function else None
        ),
    }
    try:
        text = to_literal(trial)
    except ParameterError:  # a sweep config with a value no literal holds: values only
        text = to_literal({**trial, "sweep_config": None})
    path = channel.folder / "trial-values.py"
    path.write_text(text, encoding="utf-8")
    return {TRIAL_FILE_ENV: str(path)}


@dataclass(frozen=True)
class _Ending:
    """How the trial ended, as its saved notebook's metadata records it."""

    status: TrialStatus
    reason: EndReason
    failure: CellFailure | None = None
    source_index: int | None = None


def _write_notebook(
    nb: NotebookNode, output: Path, ending: _Ending, started: float, redactor: Redactor
) -> None:
    record: dict[str, Any] = {
        "status": str(ending.status),
        "reason": str(ending.reason),
        "duration": round(time.monotonic() - started, 3),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    failure = ending.failure
    if failure is not None:
        record["error"] = {
            "cell_index": failure.cell_index,
            "source_cell_index": ending.source_index,
            "ename": failure.ename,
            "evalue": failure.evalue,
        }
    nb.metadata["nbsweep"] = record
    redactor.notebook(nb)
    files.write_notebook(nb, output)
