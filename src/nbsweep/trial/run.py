"""One trial: inject the values, execute in a fresh kernel, collect metrics, save the
executed notebook (also when it failed or was stopped), and leave no process behind.

The entry points: ``prepare`` (the notebook as the trial runs it), ``run_trial_async`` (one
trial on the caller's loop; the ``Trial`` of ``trial/trial.py`` does the work) and
``run_trial`` (the same, with Ctrl-C and SIGTERM stopping it)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from nbformat import NotebookNode

from nbsweep.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, ParameterError
from nbsweep.kernel.executor import StopRequest
from nbsweep.kernel.process import Kernel
from nbsweep.notebook import files
from nbsweep.notebook.injection import Injection, parameterize
from nbsweep.notebook.install_cells import skip_as_trials_do, skipped_message
from nbsweep.notebook.parameters import is_parameter_name
from nbsweep.status import EndReason, TrialStatus
from nbsweep.trial.metrics import MetricRecord
from nbsweep.trial.reporting import Reporter
from nbsweep.trial.result import TrialResult
from nbsweep.trial.spec import TrialSpec, default_output
from nbsweep.trial.trial import Trial

if TYPE_CHECKING:
    from nbsweep.kernel.prestart import EarlyKernel

__all__ = ["exit_code_for_stop", "prepare", "run_trial", "run_trial_async"]


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
    skipped = skip_as_trials_do(injection.notebook, settings.run_install_cells)
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
    ``notebook``: ``spec.notebook`` already parsed (it is not changed, nor read again).
    ``retire``: given the stopping of the used kernel to await later, off the trial's path;
    None: the trial awaits it before returning.
    """
    started = time.monotonic()
    try:
        injection = prepare(spec, notebook or files.read_notebook(spec.notebook))
        output = spec.output or default_output(spec.notebook, {**os.environ, **spec.env})
        files.ensure_writable_folder(output.parent)
        trial = Trial(spec, reporter, injection, output, started, on_metric)
    except BaseException:
        if kernel is not None:
            await kernel.stop(graceful=False)
        raise
    return await trial.run(kernel, stop or StopRequest(), retire)


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
            reason = EndReason.INTERRUPTED if signum == signal.SIGINT else EndReason.TERMINATED
            reporter.warn(f"{reason}: stopping the trial (again to kill it now)")
            stop.stop(reason, now=stop.requested.is_set())

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            kernel = early.take() if early is not None else None
            result = await run_trial_async(
                spec, reporter, stop, kernel, on_metric=on_metric, notebook=notebook
            )
            if stop.reason is not None and result.status is not TrialStatus.STOPPED:
                # The signal came once the cells had run: the trial stands as it ended.
                result = dataclasses.replace(result, late_stop=stop.reason)
            return result
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    if early is None:
        return asyncio.run(main())
    return early.loop.run_until_complete(main())


def exit_code_for_stop(reason: EndReason | str) -> int:
    """The exit code of a command a signal stopped (a plain string is read as the reason)."""
    return EXIT_TERMINATED if reason == EndReason.TERMINATED else EXIT_INTERRUPTED
