"""One trial from Python (``run_notebook``) and from the command line (``run_prestarted``,
the part of ``nbsweep run`` after its kernel started), under ``wandb agent`` or not; how a
trial's ending becomes an error."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from nbformat import NotebookNode

from nbsweep.api.arguments import PARAM_PATH_ENV, ParameterSources, collect
from nbsweep.api.single_run import RunCommand
from nbsweep.api.threads import reporter_for, require_main_thread, run_on_own_loop
from nbsweep.errors import TrialFailed, TrialStopped, UsageError
from nbsweep.kernel.executor import StopRequest
from nbsweep.kernel.prestart import EarlyKernel
from nbsweep.notebook.files import ensure_writable_folder, read_notebook, safe_id, write_json
from nbsweep.notebook.injection import nest
from nbsweep.notebook.outputs import check_outputs
from nbsweep.options import DEFAULT_CONFIG_VAR, ExecutionOptions, TrialSettings
from nbsweep.status import EndReason, TrialStatus
from nbsweep.sweeping.path import agent_sweep_path
from nbsweep.sweeping.wandb import runs
from nbsweep.sweeping.wandb.run_reporter import RunMode, RunReporter, run_now
from nbsweep.trial.reporting import Reporter, failure_message
from nbsweep.trial.result import TrialResult
from nbsweep.trial.run import exit_code_for_stop, run_trial, run_trial_async
from nbsweep.trial.spec import TrialSpec, html_path


def run_notebook(
    notebook: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    kernel: str | None = None,
    cell_timeout: float | None = None,
    trial_timeout: float | None = None,
    stop_grace: float = 10.0,
    config_var: str = DEFAULT_CONFIG_VAR,
    sweep_function: str | None = None,
    allow_unknown: bool = False,
    html: bool = False,
    env: Mapping[str, str] | None = None,
    run_install_cells: bool = False,
    progress: bool | TextIO = False,
    raise_on_failure: bool = True,
    handle_signals: bool = False,
    settings: TrialSettings | None = None,
) -> TrialResult:
    """Run ``notebook`` once with ``parameters`` injected (``nbsweep run``); the result has
    ``status``, ``metrics`` and ``output`` (the executed notebook, always saved).

    ``parameters``: names to values; a dotted name (``"optimizer.lr"``) or a dict value
    deep-merges into the notebook's config dict. ``output``: where the executed notebook
    goes (default: a new folder under ``nbsweep-runs/``). ``progress``: True prints
    progress to stderr, or pass a stream. ``raise_on_failure``: a failed trial raises
    ``TrialFailed`` and a stopped one ``TrialStopped``, each with ``.result``; False
    returns the result whatever its status. ``sweep_function``: in a notebook that calls
    ``wandb.agent`` more than once, the function the trial runs (default: the last call's).
    ``settings``: every trial setting as one ``TrialSettings`` (what ``nbsweep run``'s
    options build), instead of the keyword arguments from ``cwd`` to ``run_install_cells``.
    """
    notebook = Path(notebook)
    output_path = None if output is None else Path(output)
    if parameters is not None and not isinstance(parameters, Mapping):
        raise UsageError(f"parameters must be a mapping of names to values, not {parameters!r}")
    check_outputs(notebook, {"output": output_path})
    from_keywords = TrialSettings(
        config_var=config_var,
        sweep_function=sweep_function,
        allow_unknown=allow_unknown,
        html=html,
        kernel_name=kernel,
        cwd=None if cwd is None else Path(cwd),
        run_install_cells=run_install_cells,
        execution=ExecutionOptions(cell_timeout, trial_timeout, stop_grace),
    )
    if settings is None:
        settings = from_keywords
    elif from_keywords != TrialSettings():
        raise UsageError(
            "give the trial's settings either as settings=TrialSettings(...) or as keyword "
            "arguments (cwd, kernel, cell_timeout ...), not both"
        )
    spec = TrialSpec(
        notebook,
        list((parameters or {}).items()),
        output_path,
        env=dict(env or {}),
        settings=settings,
    )
    reporter = reporter_for(progress)
    if handle_signals:
        require_main_thread("handle_signals=True")
        result = run_trial(spec, reporter)
    else:
        stop = StopRequest()

        def interrupt(loop: asyncio.AbstractEventLoop, now: bool) -> None:
            loop.call_soon_threadsafe(lambda: stop.stop(EndReason.INTERRUPTED, now=now))

        result = run_on_own_loop(lambda: run_trial_async(spec, reporter, stop), interrupt)
    if raise_on_failure:
        # A stop that came while the trial was saved is the command's business (its exit
        # code); a function's caller gets the trial as it ended.
        raise_for_ending(result, late_stop=False)
    return result


def run_prestarted(command: RunCommand, early: EarlyKernel) -> TrialResult:
    """``run_command``'s trial, its kernel already booting in ``early``: reads the values and
    checks the outputs while it boots, then runs the trial in it (under ``wandb agent``, in
    the agent's run). Raises ``TrialFailed`` or ``TrialStopped`` as ``nbsweep run`` exits."""
    settings = command.settings
    sources = ParameterSources(
        command.parameters.tokens,
        command.parameters.files,
        command.parameters.args_json,
        command.parameters.pairs,
        command.parameters.raw_pairs,
        os.environ.get(PARAM_PATH_ENV),
    )
    spec = TrialSpec(command.notebook, collect(sources), command.output, settings=settings)
    output, metrics_json = command.output, command.metrics_json
    html = html_path(output) if output and settings.html else None
    check_outputs(
        command.notebook, {"--output": output, "--html": html, "--metrics-json": metrics_json}
    )
    if metrics_json is not None:
        ensure_writable_folder(metrics_json.parent, "--metrics-json")
    reporter = Reporter(log_output=command.log_output)
    if agent_sweep_path(os.environ) is not None:
        result = run_under_wandb_agent(spec, reporter, os.environ, early)
    else:
        # Parsed here once, for the trial (the early kernel only peeked at its kernelspec).
        nb = read_notebook(spec.notebook)
        result = run_trial(spec, reporter, early=early, notebook=nb)
    if metrics_json is not None:
        write_json(result.metrics.to_json(), metrics_json)
    raise_for_ending(result, late_stop=True)
    return result


def run_under_wandb_agent(
    spec: TrialSpec,
    reporter: Reporter,
    environ: Mapping[str, str],
    early: EarlyKernel | None = None,
) -> TrialResult:
    """``nbsweep run`` under ``wandb agent``: the trial joins the run the agent announced in
    the environment; nbsweep opens, reports to and closes it if the notebook will not."""
    path = agent_sweep_path(environ)
    assert path is not None, "only under wandb agent"
    # The environment's ids name folders: one that would lead outside is refused (exit 2)
    # before a run is opened or a file written.
    safe_id(path.sweep, "WANDB_SWEEP_ID")
    safe_id(environ["WANDB_RUN_ID"], "WANDB_RUN_ID")
    nb: NotebookNode = read_notebook(spec.notebook)
    mode = RunMode.choose(nb, enabled=True, offline=False)
    wandb = RunReporter(
        mode,
        path,
        environ["WANDB_RUN_ID"],
        nest(spec.values),
        Path(environ.get(PARAM_PATH_ENV, "")),
        Path.cwd(),
        run_now,
        reporter.warn,
    )
    try:
        wandb.started()
        result = run_trial(spec, reporter, on_metric=wandb.record, early=early, notebook=nb)
        wandb.finished(result)
    finally:
        runs.teardown()
    return result


def raise_for_ending(result: TrialResult, *, late_stop: bool) -> None:
    """``TrialStopped`` for a stopped trial, ``TrialFailed`` for a failed one (each with
    ``.result``); ``late_stop``: also ``TrialStopped`` for a stop that came while a trial
    that ran to its end was being saved."""
    if result.status == TrialStatus.STOPPED:
        raise TrialStopped(
            f"stopped ({result.reason}); partial notebook saved: {result.output}",
            exit_code_for_stop(result.reason),
            result=result,
        )
    if late_stop and result.late_stop is not None:
        raise TrialStopped(
            f"{result.late_stop} while the trial ({result.status}) was saved; notebook "
            f"saved: {result.output}",
            exit_code_for_stop(result.late_stop),
            result=result,
        )
    if result.status == TrialStatus.FAILED:
        raise TrialFailed(failure_message(result), result=result)
