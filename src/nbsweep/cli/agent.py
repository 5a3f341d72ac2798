"""``nbsweep agent``: run a sweep's trials."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from nbsweep import api
from nbsweep.api import AgentOptions, TrialSettings
from nbsweep.cli.options import (
    StoreFlags,
    agent_options,
    agent_run_options,
    execution_options,
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
    gpus: str | None,
    workers: int | None,
    local: bool,
    store: Path | str | None,
    agent_run: AgentOptions,
    store_flags: StoreFlags,
    trial: TrialSettings,
    log_output: bool,
) -> None:
    """Run trials of sweep SWEEP_ID, one at a time: a W&B sweep (ID, PROJECT/ID or
    ENTITY/PROJECT/ID) or a local one (local:ID, or ID with --local).

    Ctrl-C once finishes the current trial and exits; twice (or SIGTERM) stops it now.
    Exit codes: 0 done, 1 too many failed trials or a server error, 130 interrupted.
    """
    if gpus is not None or workers is not None:
        if gpus is not None and workers is not None:
            raise click.UsageError("use --gpus or --workers, not both")
        fleet = api.agent_fleet(gpus, workers)
        # A database URL may hold a password: it goes to each worker's environment, not
        # onto its command line for `ps` to show.
        argv = without_fanout_options(sys.argv[1:], ("--gpus", "--workers", "--store"))
        sys.exit(api.run_command_workers(fleet, argv, store))
    options = dataclasses.replace(
        agent_run,
        count=count,
        notebook=notebook,
        project=project,
        entity=entity,
        trial=trial,
        log_output=log_output,
    )
    reporter = api.Reporter(log_output=log_output)
    code = api.run_agent(sweep_id, options, store_flags.store_options(store), reporter, local=local)
    sys.exit(code)


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
