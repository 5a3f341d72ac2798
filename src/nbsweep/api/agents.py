"""Agents: one in this process on a sweep's server (local or W&B), or several as worker
processes, each an ``nbsweep agent`` given the same options on its command line."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from nbsweep.api.sweeps import store_options
from nbsweep.api.threads import reporter_for, require_main_thread, run_on_own_loop
from nbsweep.errors import UsageError
from nbsweep.kernel.preload import Preload
from nbsweep.local.server import LocalSweepServer, local_sweep_id, open_store
from nbsweep.options import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    AgentOptions,
    ExecutionOptions,
    StoreOptions,
    TrialSettings,
)
from nbsweep.sweeping.agent import Agent, SweepServer
from nbsweep.sweeping.path import SweepPath
from nbsweep.sweeping.wandb.runs import teardown
from nbsweep.sweeping.wandb.service import Credentials, SweepService
from nbsweep.sweeping.workers import (
    Worker,
    agents_on_store,
    cpu_workers,
    gpu_workers,
    run_workers,
)
from nbsweep.trial.reporting import Reporter


def agent(
    sweep_id: str,
    *,
    count: int | None = None,
    workers: int = 1,
    store: str | os.PathLike[str] | StoreOptions | None = None,
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
    many failures, 130 interrupted). ``workers`` > 1 runs that many agent processes, each
    with every setting given here. ``options``: every other agent setting
    (``nbsweep.api.AgentOptions``); the keyword arguments given win over its fields.
    ``store``: a local sweep's store, an SQLite file or ``postgresql://`` URL (the rest of
    its settings from the ``NBSWEEP_*`` variables), or a whole ``StoreOptions``."""
    check_sweep_id(sweep_id)
    settings = options or AgentOptions()
    # The keyword arguments given win over the fields of ``options``.
    settings = dataclasses.replace(
        settings,
        count=settings.count if count is None else count,
        notebook=settings.notebook if notebook is None else Path(notebook),
        project=settings.project if project is None else project,
        entity=settings.entity if entity is None else entity,
        report_to_wandb=settings.report_to_wandb and report_to_wandb,
    )
    chosen = store_options(store)
    if requeue_crashed:
        chosen = dataclasses.replace(chosen, requeue_crashed=True)
    if workers > 1:
        return run_agent_workers(sweep_id, settings, chosen, cpu_workers(workers))
    if handle_signals:
        require_main_thread("handle_signals=True")
    return run_agent(
        sweep_id,
        settings,
        chosen,
        reporter_for(progress),
        handle_signals=handle_signals,
    )


def run_agent(
    sweep_id: str,
    options: AgentOptions,
    store: StoreOptions,
    reporter: Reporter,
    *,
    local: bool = False,
    handle_signals: bool = True,
) -> int:
    """One agent in this process, on the sweep's server (local: ``local:ID``, or any ID with
    ``local``; else W&B); its exit code."""
    check_sweep_id(sweep_id)
    local_id = local_sweep_id(sweep_id) or (sweep_id if local else None)
    check_heartbeats(options, store, local=local_id is not None)
    server: SweepServer
    if local_id is not None:
        local_server = LocalSweepServer(open_store(store), local_id, on_retry=reporter.warn)
        server = local_server
        config_project = local_server.record.config.get("project")
        path = SweepPath(local_id, options.project or config_project or "nbsweep-local", None)
    else:
        parsed = SweepPath.parse(sweep_id)
        path = SweepPath(
            parsed.sweep, options.project or parsed.project, options.entity or parsed.entity
        )
        server = SweepService(Credentials.from_environment(), on_retry=reporter.warn)
    running = Agent(server, path, options, reporter, handle_signals=handle_signals)
    try:
        if handle_signals:
            return asyncio.run(running.run())

        def interrupt(loop: asyncio.AbstractEventLoop, now: bool) -> None:
            loop.call_soon_threadsafe(running.interrupt)

        return run_on_own_loop(running.run, interrupt)
    finally:
        teardown()
        if isinstance(server, LocalSweepServer):
            server.close()


def check_heartbeats(options: AgentOptions, store: StoreOptions, *, local: bool) -> None:
    """A heartbeat timeout that three heartbeats in a row would not beat is a usage error."""
    beat = options.heartbeat_for(local)
    timeout = store.heartbeat_timeout
    if timeout != DEFAULT_HEARTBEAT_TIMEOUT and timeout <= 3 * beat:
        raise UsageError(
            f"--heartbeat-timeout {timeout:g} is too short for heartbeats every "
            f"{beat:g}s: give it more than {3 * beat:g}s"
        )


def agent_fleet(
    gpus: str | None, workers: int | None, environ: Mapping[str, str] = os.environ
) -> list[Worker]:
    """The agent processes ``--gpus`` (one per GPU) or ``--workers`` ask for."""
    if gpus is not None and workers is not None:
        raise UsageError("use --gpus or --workers, not both")
    return gpu_workers(gpus, environ) if gpus is not None else cpu_workers(workers or 1)


def run_agent_workers(
    sweep_id: str, options: AgentOptions, store: StoreOptions, fleet: Sequence[Worker]
) -> int:
    """One ``nbsweep agent`` process per worker, each with ``options`` and ``store``; their
    combined exit code."""
    check_heartbeats(options, store, local=local_sweep_id(sweep_id) is not None)
    argv = ["agent", sweep_id, *agent_arguments(options, store)]
    return run_command_workers(fleet, argv, store.location)


def run_command_workers(
    fleet: Sequence[Worker], argv: Sequence[str], store: Path | str | None
) -> int:
    """``nbsweep <argv>`` once per worker, on the local ``store`` (a file as ``--store``, a
    database URL, which may hold a password, in each worker's environment)."""
    workers, command = agents_on_store(fleet, argv, store)
    return run_workers(workers, command)


def agent_arguments(options: AgentOptions, store: StoreOptions | None = None) -> list[str]:
    """``options`` (and ``store``'s agent settings) as ``nbsweep agent`` arguments: each
    setting that is not its default. The store's location is not among them (see
    ``run_command_workers``); its busy and reconnect timeouts reach a worker as this
    process's environment does. UsageError for a setting no option can carry."""
    default = AgentOptions()
    arguments: list[str] = []
    if options.count is not None:
        arguments.append(f"--count={options.count}")
    if options.notebook is not None:
        arguments.append(f"--notebook={options.notebook}")
    for name in ("project", "entity"):
        value = getattr(options, name)
        if value is not None:
            arguments.append(f"--{name}={value}")
    if options.poll != default.poll:
        arguments.append(f"--poll={options.poll!r}")
    if options.heartbeat is not None:
        arguments.append(f"--heartbeat={options.heartbeat!r}")
    if options.max_consecutive_failures != default.max_consecutive_failures:
        arguments.append(f"--max-consecutive-failures={options.max_consecutive_failures}")
    arguments += trial_arguments(options.trial)
    if options.wandb_dir.resolve() != default.wandb_dir.resolve():
        raise UsageError(
            f"wandb_dir {str(options.wandb_dir)!r}: agent processes keep their runs under "
            "their working directory; run them from there"
        )
    if not options.report_to_wandb:
        arguments.append("--no-wandb")
    if not options.warm_kernels:
        arguments.append("--no-warm-kernels")
    arguments += preload_arguments(options.preload)
    if options.kernel_start != default.kernel_start:
        arguments.append(f"--kernel-start={options.kernel_start}")
    if not options.setup_once:
        arguments.append("--no-setup-once")
    if options.log_output:
        arguments.append("--log-output")
    if store is not None:
        arguments += store_arguments(store)
    return arguments


def trial_arguments(settings: TrialSettings) -> list[str]:
    """``settings`` as the execution options of ``nbsweep agent`` (and ``run``)."""
    default = TrialSettings()
    arguments: list[str] = []
    if settings.kernel_name is not None:
        arguments.append(f"--kernel={settings.kernel_name}")
    if settings.cwd is not None:
        arguments.append(f"--cwd={settings.cwd}")
    arguments += execution_arguments(settings.execution)
    if settings.run_install_cells:
        arguments.append("--run-install-cells")
    if settings.config_var != default.config_var:
        arguments.append(f"--config-var={settings.config_var}")
    if settings.sweep_function is not None:
        arguments.append(f"--sweep-function={settings.sweep_function}")
    if settings.allow_unknown:
        arguments.append("--allow-unknown")
    arguments += [f"--metric={name}" for name in settings.metric_variables]
    if settings.html:
        arguments.append("--html")
    return arguments


def execution_arguments(execution: ExecutionOptions) -> list[str]:
    default = ExecutionOptions()
    arguments: list[str] = []
    if execution.cell_timeout is not None:
        arguments.append(f"--timeout={execution.cell_timeout!r}")
    if execution.trial_timeout is not None:
        arguments.append(f"--trial-timeout={execution.trial_timeout!r}")
    if execution.stop_grace != default.stop_grace:
        arguments.append(f"--stop-grace={execution.stop_grace!r}")
    if execution.stream_limit != default.stream_limit:
        raise UsageError(
            "stream_limit has no command-line option: agent processes keep its default"
        )
    return arguments


def preload_arguments(preload: Preload) -> list[str]:
    arguments = []
    if preload.mode == "explicit":
        arguments.append(f"--preload={','.join(preload.modules)}")
    elif preload.mode != Preload().mode:
        arguments.append(f"--preload={preload.mode}")
    if preload.cuda:
        arguments.append("--preload-cuda")
    return arguments


def store_arguments(store: StoreOptions) -> list[str]:
    """The store's agent settings that are not their defaults (nor this environment's)."""
    arguments = []
    if store.requeue_crashed:
        arguments.append("--requeue-crashed")
    if store.heartbeat_timeout != DEFAULT_HEARTBEAT_TIMEOUT:
        arguments.append(f"--heartbeat-timeout={store.heartbeat_timeout!r}")
    if store.agent_name != StoreOptions().agent_name:
        arguments.append(f"--agent-name={store.agent_name}")
    return arguments


def check_sweep_id(sweep_id: object) -> None:
    if not (isinstance(sweep_id, str) and sweep_id.strip()):
        raise UsageError(
            f"sweep_id must be text such as 'local:ID' or 'ENTITY/PROJECT/ID', not {sweep_id!r}"
        )
    if local_sweep_id(sweep_id) == "":  # else "local:" would be taken for a W&B sweep
        raise UsageError("'local:' names no sweep: give its ID, local:ID")
