"""One trial: inject the values, execute in a fresh kernel, collect metrics, save the
executed notebook (also when it failed or was stopped), and leave no process behind."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbformat import NotebookNode

from nbsweep.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    KernelStartError,
    OutputError,
    ParameterError,
)
from nbsweep.kernel.api import TRIAL_ENV
from nbsweep.kernel.executor import (
    CellFailure,
    Hooks,
    Outcome,
    StopRequest,
    execute,
    prepare_output_handling,
)
from nbsweep.kernel.hooks import TRIAL_FILE_ENV
from nbsweep.kernel.process import Kernel
from nbsweep.notebook import files
from nbsweep.notebook.injection import Injection, parameterize
from nbsweep.notebook.install_cells import (
    is_skipped_message,
    restore_install_lines,
    skip_install_lines,
    skipped_message,
)
from nbsweep.notebook.literals import to_literal
from nbsweep.notebook.parameters import is_parameter_name
from nbsweep.notebook.redaction import Redactor
from nbsweep.options import TrialSettings
from nbsweep.trial.metrics import MetricRecord, Metrics, MetricsChannel
from nbsweep.trial.reporting import Reporter
from nbsweep.trial.result import TrialResult

if TYPE_CHECKING:
    from nbsweep.kernel.prestart import EarlyKernel

RUNS_FOLDER = "nbsweep-runs"
# Seconds a notebook's own wandb run gets to finish (it may upload) before the kernel goes.
_FINISH_RUN_TIMEOUT = 10.0

_FINISH_NOTEBOOK_RUN = """\
import sys as _nbsweep_sys
_nbsweep_wandb = _nbsweep_sys.modules.get("wandb")
if _nbsweep_wandb is not None and getattr(_nbsweep_wandb, "run", None) is not None:
    _nbsweep_wandb.finish(exit_code={code})
del _nbsweep_sys, _nbsweep_wandb
"""
# Patches wandb in the kernel (now, or when the notebook imports it); a kernel without
# nbsweep installed runs the notebook as it is.
_INSTALL_HOOKS = """\
try:
    __import__("nbsweep.kernel.hooks").kernel.hooks.install()
except ImportError:
    pass
"""
_FLUSH_PENDING_ROWS = "__import__('nbsweep.kernel.hooks').kernel.hooks.flush_pending()"
# How often the metrics channel is read while cells run (hyperband and progress see a
# record this late at most); it is read once more at the end, so nothing is lost.
_CHANNEL_POLL = 0.05


@dataclass(frozen=True)
class TrialSpec:
    """One trial: what to run, with which values, where its results go."""

    notebook: Path
    values: Sequence[tuple[str, Any]] = ()
    """(name, value) pairs, lowest precedence first; dotted names address nested keys."""
    output: Path | None = None
    """Where the executed notebook goes; None: a new folder under ``nbsweep-runs/``."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to this process's environment for the kernel."""
    sweep_id: str | None = None
    """The sweep this trial belongs to: what the notebook's ``wandb.sweep`` returns."""
    sweep_config: Mapping[str, Any] | None = None
    """The running sweep's config, compared with the one the notebook passes to wandb.sweep."""
    settings: TrialSettings = field(default_factory=TrialSettings)


def default_output(notebook: Path, environ: Mapping[str, str]) -> Path:
    """``nbsweep-runs/<sweep>/<run>/`` under ``wandb agent``, else a fresh timestamped folder.
    UsageError if those ids (from the environment) would leave ``nbsweep-runs/``."""
    sweep, run = environ.get("WANDB_SWEEP_ID"), environ.get("WANDB_RUN_ID")
    if sweep and run:
        folder = Path(RUNS_FOLDER) / files.safe_id(sweep, "sweep id") / files.safe_id(run, "run id")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path(RUNS_FOLDER) / notebook.stem / f"{stamp}-{secrets.token_hex(3)}"
    return folder / notebook.name


def prepare(spec: TrialSpec, nb: NotebookNode) -> Injection:
    """The notebook as the trial runs it: values injected, install lines skipped (unless
    ``run_install_cells``), with one warning naming them."""
    settings = spec.settings
    bad = [name for name in settings.metric_variables if not is_parameter_name(name) or "." in name]
    if bad:
        raise ParameterError(f"--metric {bad[0]!r} is not a variable name")
    injection = parameterize(
        nb,
        spec.values,
        config_var=settings.config_var,
        allow_unknown=settings.allow_unknown,
        sweep_function=settings.sweep_function,
    )
    if settings.run_install_cells:
        restore_install_lines(injection.notebook)  # an executed notebook run again
    skipped = skip_install_lines(injection.notebook, installs=not settings.run_install_cells)
    message = skipped_message(skipped, injection.source_index)
    if message is None:
        return injection
    return dataclasses.replace(injection, warnings=(*injection.warnings, message))


async def run_trial_async(
    spec: TrialSpec,
    reporter: Reporter,
    stop: StopRequest | None = None,
    kernel: Kernel | None = None,
    on_metric: Callable[[MetricRecord], None] | None = None,
    notebook: NotebookNode | None = None,
    retire: Callable[[Awaitable[None]], None] | None = None,
) -> TrialResult:
    """Run one trial. Raises UsageError subclasses before anything runs; afterwards every
    ending, including a stop, comes back as a TrialResult with the notebook saved.

    ``kernel``: one already started (warm) for this notebook; it gets ``spec.env`` set in
    ``os.environ`` before the first cell. Either way the trial stops the kernel it used.
    ``on_metric``: called with each ``nbsweep.log`` record as it arrives (after the reporter).
    ``notebook``: ``spec.notebook`` already parsed (it is not changed).
    ``retire``: given the stopping of the used kernel to await later, off the trial's path;
    None: the trial awaits it before returning.
    """
    started = time.monotonic()
    notebook_path = spec.notebook
    try:
        injection = prepare(spec, notebook or files.read_notebook(notebook_path))
        output = spec.output or default_output(notebook_path, {**os.environ, **spec.env})
        files.ensure_writable_folder(output.parent)
    except BaseException:
        if kernel is not None:
            await kernel.stop(graceful=False)
        raise
    nb = injection.notebook
    channel = MetricsChannel()
    trial_env = {
        **spec.env,
        TRIAL_ENV: "1",
        **channel.environment(),
        **_trial_file(spec, injection, channel),
    }
    environ = {**os.environ, **trial_env}
    redactor = Redactor.from_environ(environ)

    def on_record(record: MetricRecord) -> None:
        reporter.metric(record)
        if on_metric is not None:
            on_metric(record)

    metrics = Metrics(on_record=on_record, redactor=redactor)
    overflow = _StreamOverflow(output, injection)
    warm = kernel is not None
    kernel = kernel or Kernel(spec.settings.kernel_for(nb))
    stop = stop or StopRequest()
    started_cells = False
    try:
        for warning in injection.warnings:
            # The same skipped install lines every trial: an agent says so once.
            (reporter.warn_once if is_skipped_message(warning) else reporter.warn)(warning)
        reporter.trial_started(notebook_path, output)
        try:
            if not warm:
                await kernel.launch(spec.settings.cwd or notebook_path.resolve().parent, environ)
            if kernel.info is None:  # while it boots
                await asyncio.to_thread(prepare_output_handling)
            await kernel.wait_ready()
        except KernelStartError as error:  # it quotes what the kernel wrote as it died
            raise KernelStartError(redactor.text(str(error))) from None
        await kernel.update_environment(trial_env)
        kernel.send_silently(_INSTALL_HOOKS)
        started_cells = True
        hooks = Hooks(
            cell_started=lambda index, number, total: reporter.cell_started(
                injection.source_index(index), number, total
            ),
            cell_finished=reporter.cell_finished,
            stream=reporter.stream,
            overflow=overflow.write,
        )
        following = asyncio.ensure_future(_follow(channel, metrics))
        try:
            outcome = await execute(
                nb,
                kernel,
                spec.settings.execution,
                hooks,
                stop,
                spec.settings.metric_variables,
                redactor,
            )
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        channel.read(metrics)  # what the cells wrote, the mark of a wandb import among it
        kernel_lost = not await kernel.is_alive()
        if metrics.used_wandb and not kernel_lost:
            # Rows the notebook left uncommitted are W&B's at its run's end: nbsweep's now.
            await kernel.execute_silently(_FLUSH_PENDING_ROWS, _FINISH_RUN_TIMEOUT)
        if outcome.status != "finished" and not kernel_lost:
            # A kernel shut down with the notebook's own wandb run open would finish it
            # with exit code 0: end it as what it was first.
            code = EXIT_INTERRUPTED if outcome.status == "stopped" else 1
            await kernel.execute_silently(
                _FINISH_NOTEBOOK_RUN.format(code=code), _FINISH_RUN_TIMEOUT
            )
        channel.read(metrics)  # every record is in the file before its cell's reply
    except BaseException:
        await kernel.stop(graceful=False)
        channel.read(metrics)
        channel.close()
        overflow.close()
        if started_cells:  # nbsweep itself failed: keep what ran
            with contextlib.suppress(OutputError):  # the first error is the one to tell
                _save(nb, output, "failed", "error", None, None, started, redactor)
        raise
    channel.close()
    overflow.close()
    try:
        result = _result(spec, injection, outcome, kernel, kernel_lost, metrics, output, started)
        try:
            # On a thread: the loop stays free to hear a signal during a long save.
            await asyncio.to_thread(_save, nb, output, *_record(result), started, redactor)
        except OutputError as error:
            # The trial ran; what it measured is still reported. It failed all the same:
            # its notebook is not where it should be.
            result = dataclasses.replace(
                result, status="failed", reason="cannot-save", save_error=str(error)
            )
        else:
            result = await _save_html(nb, result, reporter)
    finally:
        stopping = kernel.retire(finished=outcome.status == "finished")
        if retire is None:
            await stopping
        else:
            retire(stopping)
    reporter.trial_finished(result)
    return result


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
        self.files: dict[Path, Any] = {}

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


def _result(
    spec: TrialSpec,
    injection: Injection,
    outcome: Outcome,
    kernel: Kernel,
    kernel_lost: bool,
    metrics: Metrics,
    output: Path,
    started: float,
) -> TrialResult:
    redactor = Redactor.from_environ({**os.environ, **spec.env, TRIAL_ENV: "1"})
    metrics.final.update(redactor.value(outcome.variables))
    metrics.missing.extend(outcome.missing_variables)
    failure = outcome.failure
    if failure is not None:
        traceback = failure.traceback
        if outcome.reason == "kernel-died" and kernel.log_tail():
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
        output,
        output.with_suffix(".html") if spec.settings.html else None,
        metrics,
        time.monotonic() - started,
        failure,
        injection.source_index(failure.cell_index) if failure else None,
        injection.warnings,
        kernel_lost,
    )


def _record(result: TrialResult) -> tuple[str, str, CellFailure | None, int | None]:
    return str(result.status), result.reason, result.failure, result.source_cell_index


def run_trial(
    spec: TrialSpec,
    reporter: Reporter,
    on_metric: Callable[[MetricRecord], None] | None = None,
    early: EarlyKernel | None = None,
    notebook: NotebookNode | None = None,
) -> TrialResult:
    """``run_trial_async`` with Ctrl-C and SIGTERM stopping the trial: interrupt, grace, kill.
    A second signal kills at once. ``early``: the kernel launched for this trial, if any.
    ``notebook``: ``spec.notebook`` already parsed."""

    async def main() -> TrialResult:
        stop = StopRequest()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            reason = "interrupted" if signum == signal.SIGINT else "terminated"
            reporter.warn(f"{reason}: stopping the trial (again to kill it now)")
            stop.stop(reason, now=stop.requested.is_set())

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            kernel = early.take() if early is not None else None
            result = await run_trial_async(
                spec, reporter, stop, kernel, on_metric=on_metric, notebook=notebook
            )
            if stop.reason is not None and result.status != "stopped":
                # The signal came once the cells had run: the trial stands as it ended.
                result = dataclasses.replace(result, late_stop=stop.reason)
            return result
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    if early is None:
        return asyncio.run(main())
    return early.loop.run_until_complete(main())


def exit_code_for_stop(reason: str) -> int:
    return EXIT_TERMINATED if reason == "terminated" else EXIT_INTERRUPTED


def _save(
    nb: NotebookNode,
    output: Path,
    status: str,
    reason: str,
    failure: CellFailure | None,
    source_index: int | None,
    started: float,
    redactor: Redactor,
) -> None:
    record: dict[str, Any] = {
        "status": status,
        "reason": reason,
        "duration": round(time.monotonic() - started, 3),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if failure is not None:
        record["error"] = {
            "cell_index": failure.cell_index,
            "source_cell_index": source_index,
            "ename": failure.ename,
            "evalue": failure.evalue,
        }
    nb.metadata["nbsweep"] = record
    redactor.notebook(nb)
    files.write_notebook(nb, output)
