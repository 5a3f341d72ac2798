"""nbsweep from Python: ``run_notebook``, ``sweep`` and ``agent``, with the CLI's semantics.

Each works from a plain script, from a thread, and from a running event loop (a Jupyter
cell): the trial's or agent's loop then runs on a thread of its own, and Ctrl-C (an
interrupted cell) stops it as it stops the CLI. No signal handlers are installed unless
asked (``handle_signals=True``, main thread only).
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from nbsweep.errors import TrialFailed, TrialStopped, UsageError

if TYPE_CHECKING:
    from nbsweep.options import AgentOptions
    from nbsweep.trial.reporting import Reporter
    from nbsweep.trial.result import TrialResult

T = TypeVar("T")


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
    config_var: str = "config",
    sweep_function: str | None = None,
    allow_unknown: bool = False,
    html: bool = False,
    env: Mapping[str, str] | None = None,
    run_install_cells: bool = False,
    progress: bool | TextIO = False,
    raise_on_failure: bool = True,
    handle_signals: bool = False,
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
    """
    from nbsweep.notebook.outputs import check_outputs
    from nbsweep.options import ExecutionOptions, TrialSettings
    from nbsweep.trial.reporting import failure_message
    from nbsweep.trial.run import (
        TrialSpec,
        exit_code_for_stop,
        run_trial,
        run_trial_async,
    )

    notebook = Path(notebook)
    output_path = None if output is None else Path(output)
    if parameters is not None and not isinstance(parameters, Mapping):
        raise UsageError(f"parameters must be a mapping of names to values, not {parameters!r}")
    check_outputs(notebook, {"output": output_path})
    settings = TrialSettings(
        config_var=config_var,
        sweep_function=sweep_function,
        allow_unknown=allow_unknown,
        html=html,
        kernel_name=kernel,
        cwd=None if cwd is None else Path(cwd),
        run_install_cells=run_install_cells,
        execution=ExecutionOptions(cell_timeout, trial_timeout, stop_grace),
    )
    spec = TrialSpec(
        notebook,
        list((parameters or {}).items()),
        output_path,
        env=dict(env or {}),
        settings=settings,
    )
    reporter = _reporter(progress)
    if handle_signals:
        _require_main_thread("handle_signals=True")
        result = run_trial(spec, reporter)
    else:
        from nbsweep.kernel.executor import StopRequest

        stop = StopRequest()
        result = _run(
            lambda: run_trial_async(spec, reporter, stop),
            lambda loop, now: loop.call_soon_threadsafe(
                lambda: stop.stop("interrupted", now=now)
            ),
        )
    if raise_on_failure and result.status == "stopped":
        raise TrialStopped(
            f"stopped ({result.reason}); partial notebook saved: {result.output}",
            exit_code_for_stop(result.reason),
            result=result,
        )
    if raise_on_failure and result.status == "failed":
        raise TrialFailed(failure_message(result), result=result)
    return result


def sweep(
    config: Mapping[str, Any] | str | os.PathLike[str],
    *,
    local: bool = True,
    store: str | os.PathLike[str] | None = None,
    project: str | None = None,
    entity: str | None = None,
    config_var: str = "config",
    name: str | None = None,
) -> str:
    """Validate a sweep config (a dict, a sweep YAML, or a notebook that calls
    ``wandb.sweep`` itself) as ``nbsweep sweep`` does, create it, and return the ID to give
    ``agent``: ``local:ID`` in the local store (``local=True``, the default: no W&B server),
    else ``ENTITY/PROJECT/ID`` on W&B. Raises ``SweepConfigError`` listing every problem."""
    from nbsweep.sweeping.configs.checking import check_sweep

    source = config if isinstance(config, Mapping) else Path(config)
    checked = check_sweep(source, project=project, config_var=config_var, local=local)
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if local:
        default_name = name or ("sweep" if isinstance(config, Mapping) else Path(config).stem)
        return "local:" + create_local_sweep(checked.config, default_name, store)
    return create_wandb_sweep(checked.config, entity)


def create_wandb_sweep(
    config: Mapping[str, Any],
    entity: str | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> str:
    """Create a checked sweep config on W&B; its ``ENTITY/PROJECT/ID``."""
    from nbsweep.sweeping.configs.loading import yaml_text
    from nbsweep.sweeping.wandb.service import Credentials, SweepService

    service = SweepService(
        Credentials.from_environment(os.environ), on_retry=on_retry or (lambda message: None)
    )
    created = service.create_sweep(
        yaml_text(config),
        entity or config.get("entity") or os.environ.get("WANDB_ENTITY"),
        config.get("project") or os.environ.get("WANDB_PROJECT"),
    )
    return str(created)


def control_wandb_sweep(sweep_id: str, action: str) -> str:
    """Pause, resume, stop or cancel a W&B sweep (``[ENTITY/]PROJECT/ID``), as ``wandb sweep
    --pause`` does; its new state (PAUSED, RUNNING, FINISHED, CANCELED)."""
    from nbsweep.sweeping.path import SweepPath
    from nbsweep.sweeping.wandb.service import Credentials, SweepService

    service = SweepService(Credentials.from_environment(os.environ))
    return service.set_sweep_state(SweepPath.parse(sweep_id), action)


def create_local_sweep(
    config: Mapping[str, Any], name: str, store: str | os.PathLike[str] | None = None
) -> str:
    """Create a validated local sweep in the store; its ID (without ``local:``)."""
    from nbsweep.local.server import store_path
    from nbsweep.local.store import Store

    with Store.open(store_path(None if store is None else store_location(store))) as opened:
        return str(opened.create_sweep(dict(config), name=name))


def agent(
    sweep_id: str,
    *,
    count: int | None = None,
    workers: int = 1,
    store: str | os.PathLike[str] | None = None,
    notebook: str | os.PathLike[str] | None = None,
    project: str | None = None,
    entity: str | None = None,
    report_to_wandb: bool = True,
    requeue_crashed: bool = False,
    progress: bool | TextIO = True,
    handle_signals: bool = False,
    options: AgentOptions | None = None,
) -> int:
    """Run trials of ``sweep_id`` (``local:ID``, or a W&B ``[ENTITY/][PROJECT/]ID``) as
    ``nbsweep agent`` does, each in a fresh kernel; returns its exit code (0 done, 1 too
    many failures, 130 interrupted). ``workers`` > 1 runs that many agent processes.
    ``options``: every other agent setting (``nbsweep.options.AgentOptions``)."""
    import dataclasses

    from nbsweep.options import AgentOptions

    _check_sweep_id(sweep_id)
    if workers > 1:
        return _agent_processes(sweep_id, workers, count, store, notebook)
    settings = dataclasses.replace(
        options or AgentOptions(),
        **({"count": count} if count is not None else {}),
        **({"notebook": Path(notebook)} if notebook is not None else {}),
        **({} if report_to_wandb else {"report_to_wandb": False}),
    )
    if handle_signals:
        _require_main_thread("handle_signals=True")
    reporter = _reporter(progress)
    return run_agent(
        sweep_id,
        settings,
        reporter,
        store=None if store is None else store_location(store),
        project=project,
        entity=entity,
        requeue_crashed=requeue_crashed,
        handle_signals=handle_signals,
    )


def run_agent(
    sweep_id: str,
    settings: AgentOptions,
    reporter: Reporter,
    *,
    store: Path | str | None = None,
    local: bool = False,
    project: str | None = None,
    entity: str | None = None,
    requeue_crashed: bool = False,
    handle_signals: bool = True,
    heartbeat: float | None = None,
    agent_name: str | None = None,
    heartbeat_timeout: float | None = None,
) -> int:
    """One agent in this process, on the sweep's server (local or W&B); its exit code."""
    import dataclasses

    from nbsweep.local.server import LocalSweepServer, local_sweep_id, open_store
    from nbsweep.sweeping.agent import Agent
    from nbsweep.sweeping.path import SweepPath
    from nbsweep.sweeping.wandb.runs import teardown
    from nbsweep.sweeping.wandb.service import Credentials, SweepService

    _check_sweep_id(sweep_id)
    local_id = local_sweep_id(sweep_id) or (sweep_id if local else None)
    server: Any
    if local_id is not None:
        server = LocalSweepServer(
            open_store(store),
            local_id,
            requeue_crashed=requeue_crashed,
            agent_name=agent_name,
            heartbeat_timeout=heartbeat_timeout,
            on_retry=reporter.warn,
        )
        config_project = server.record.config.get("project")
        path = SweepPath(local_id, project or config_project or "nbsweep-local", None)
    else:
        parsed = SweepPath.parse(sweep_id)
        path = SweepPath(parsed.sweep, project or parsed.project, entity or parsed.entity)
        server = SweepService(Credentials.from_environment(), on_retry=reporter.warn)
    beat = heartbeat or (1.0 if local_id is not None else 5.0)
    if heartbeat_timeout is not None and heartbeat_timeout <= 3 * beat:
        raise UsageError(
            f"--heartbeat-timeout {heartbeat_timeout:g} is too short for heartbeats every "
            f"{beat:g}s: give it more than {3 * beat:g}s"
        )
    settings = dataclasses.replace(settings, heartbeat=beat)
    running = Agent(server, path, settings, reporter, handle_signals=handle_signals)
    try:
        if handle_signals:
            return asyncio.run(running.run())
        return _run(running.run, lambda loop, now: loop.call_soon_threadsafe(running.interrupt))
    finally:
        teardown()
        if isinstance(server, LocalSweepServer):
            server.close()


def _agent_processes(
    sweep_id: str,
    workers: int,
    count: int | None,
    store: str | os.PathLike[str] | None,
    notebook: str | os.PathLike[str] | None,
) -> int:
    from nbsweep.sweeping.workers import agents_on_store, cpu_workers, run_workers

    argv = ["agent", sweep_id]
    if count is not None:
        argv += ["--count", str(count)]
    if notebook is not None:
        argv += ["--notebook", str(notebook)]
    location = store_location(store) if store is not None else None
    fleet, argv = agents_on_store(cpu_workers(workers), argv, location)
    return run_workers(fleet, argv)


def _run(
    make: Callable[[], Coroutine[Any, Any, T]],
    on_interrupt: Callable[[asyncio.AbstractEventLoop, bool], None],
) -> T:
    """``make()`` run to its end on an event loop of its own thread (this thread may run
    one already: a Jupyter cell). Ctrl-C while waiting calls ``on_interrupt(loop, now)``:
    ``now`` False the first time (a graceful stop), True after, as the CLI's signals do."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if threading.current_thread() is not threading.main_thread():
            return asyncio.run(make())
    outcome: dict[str, Any] = {}
    started = threading.Event()
    # Waited on instead of Thread.join: a KeyboardInterrupt inside join can leave the
    # thread marked as ended while it still runs.
    done = threading.Event()

    def body() -> None:
        async def main() -> T:
            outcome["loop"] = asyncio.get_running_loop()
            started.set()
            return await make()

        try:
            outcome["value"] = asyncio.run(main())
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error
        finally:
            started.set()
            done.set()

    worker = threading.Thread(target=body, name="nbsweep-api", daemon=True)
    worker.start()
    interrupts = 0
    while not done.is_set():
        try:
            done.wait(0.1)
        except KeyboardInterrupt:
            interrupts += 1
            started.wait()
            loop = outcome.get("loop")
            if loop is not None and not loop.is_closed():
                on_interrupt(loop, interrupts > 1)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def _reporter(progress: bool | TextIO) -> Reporter:
    from nbsweep.trial.reporting import Reporter

    if progress is True:
        return Reporter()
    if progress is False:
        return Reporter(io.StringIO(), tty=False)
    return Reporter(progress)


def store_location(store: str | os.PathLike[str]) -> Path | str:
    """A store given as text or a path: a ``postgresql://`` URL stays text."""
    from nbsweep.local.database import is_url

    text = os.fspath(store)
    return text if is_url(text) else Path(text)


def _check_sweep_id(sweep_id: object) -> None:
    from nbsweep.local.server import local_sweep_id

    if not (isinstance(sweep_id, str) and sweep_id.strip()):
        raise UsageError(
            f"sweep_id must be text such as 'local:ID' or 'ENTITY/PROJECT/ID', not {sweep_id!r}"
        )
    if local_sweep_id(sweep_id) == "":  # else "local:" would be taken for a W&B sweep
        raise UsageError("'local:' names no sweep: give its ID, local:ID")


def _require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise UsageError(f"{what} needs the main thread; leave it False on other threads")


__all__ = ["agent", "create_local_sweep", "run_agent", "run_notebook", "sweep"]
