"""``nbsweep agent``: run a sweep's trials."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from nbsweep.cli.options import (
    agent_options,
    agent_run_options,
    execution_options,
    trial_settings,
)


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("sweep_id")
@agent_options
@agent_run_options
@execution_options
def agent(
    sweep_id: str,
    count: int | None,
    notebook: Path | None,
    project: str | None,
    entity: str | None,
    poll: float,
    heartbeat: float | None,
    max_consecutive_failures: int,
    gpus: str | None,
    workers: int | None,
    local: bool,
    store: Path | str | None,
    requeue_crashed: bool,
    agent_name: str | None,
    heartbeat_timeout: float | None,
    no_wandb: bool,
    preload: str,
    preload_cuda: bool,
    no_warm_kernels: bool,
    kernel_start: str,
    **execution: Any,
) -> None:
    """Run trials of sweep SWEEP_ID, one at a time: a W&B sweep (ID, PROJECT/ID or
    ENTITY/PROJECT/ID) or a local one (local:ID, or ID with --local).

    Ctrl-C once finishes the current trial and exits; twice (or SIGTERM) stops it now.
    Exit codes: 0 done, 1 too many failed trials or a server error, 130 interrupted.
    """
    from nbsweep.api import run_agent
    from nbsweep.kernel.preload import Preload
    from nbsweep.options import AgentOptions
    from nbsweep.trial.reporting import Reporter

    preloading = Preload.parse(preload, preload_cuda)
    if gpus is not None or workers is not None:
        from nbsweep.sweeping.workers import (
            agents_on_store,
            cpu_workers,
            gpu_workers,
            run_workers,
        )

        if gpus is not None and workers is not None:
            raise click.UsageError("use --gpus or --workers, not both")
        fleet = gpu_workers(gpus, os.environ) if gpus is not None else cpu_workers(workers or 1)
        # A database URL may hold a password: it goes to each worker's environment, not
        # onto its command line for `ps` to show.
        argv = without_fanout_options(sys.argv[1:], ("--gpus", "--workers", "--store"))
        sys.exit(run_workers(*agents_on_store(fleet, argv, store)))
    options = AgentOptions(
        count=count,
        notebook=notebook,
        poll=poll,
        max_consecutive_failures=max_consecutive_failures,
        trial=trial_settings(**execution),
        report_to_wandb=not no_wandb,
        warm_kernels=not no_warm_kernels,
        kernel_start=kernel_start,
        preload=preloading,
    )
    reporter = Reporter(log_output=execution["log_output"])
    sys.exit(
        run_agent(
            sweep_id,
            options,
            reporter,
            store=store,
            local=local,
            project=project,
            entity=entity,
            requeue_crashed=requeue_crashed,
            heartbeat=heartbeat,
            agent_name=agent_name,
            heartbeat_timeout=heartbeat_timeout,
        )
    )


def without_fanout_options(
    argv: list[str], options: tuple[str, ...] = ("--gpus", "--workers")
) -> list[str]:
    """The command line a worker gets: the user's, less ``options`` and their values."""
    kept: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in options:
            skip = True
        elif not token.startswith(tuple(f"{option}=" for option in options)):
            kept.append(token)
    return kept
