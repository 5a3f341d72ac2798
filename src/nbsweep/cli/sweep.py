"""``nbsweep sweep``: validate and create a sweep; control a local one."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nbsweep import api
from nbsweep.api import AgentOptions, DashboardOptions, StoreOptions, SweepAction, TrialSettings

if TYPE_CHECKING:
    from nbsweep.api import CheckedSweep, Worker
from nbsweep.cli.options import (
    StoreFlags,
    agent_run_options,
    execution_options,
    gpus_option,
    handed_on,
    store_option,
)
from nbsweep.cli.status import show_table
from nbsweep.errors import UsageError


@click.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--project", help="W&B project (else the YAML's project:, or WANDB_PROJECT).")
@click.option("--entity", help="W&B entity (else the YAML's entity:, or WANDB_ENTITY).")
@click.option("--dry-run", is_flag=True, help="Validate only; create nothing.")
@click.option(
    "--print-yaml", is_flag=True, help="Print the sweep config as created (YAML); create nothing."
)
@click.option("--local", is_flag=True, help="Create a local sweep (no W&B server) in the store.")
@store_option
@click.option(
    "--run",
    "run_it",
    is_flag=True,
    help="With --local: then run agents on it and print the leaderboard. The agents take "
    "--workers or --gpus, --count, and the options below of how `nbsweep agent` runs trials.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), help="Agents for --run, without GPUs.  [default: 1]"
)
@gpus_option
@click.option("--count", type=click.IntRange(min=1), help="Trials per agent for --run.")
@click.option(
    "--dashboard",
    "serve_dashboard",
    is_flag=True,
    help="With --run: serve `nbsweep dashboard` on the sweep while its agents run (its URL "
    "first, on 127.0.0.1); it stops when they end.",
)
@click.option("--pause", "action", flag_value="pause", help="Pause local sweep SWEEP_FILE (an ID).")
@click.option("--resume", "action", flag_value="resume", help="Resume a paused local sweep.")
@click.option(
    "--stop", "action", flag_value="stop", help="Stop a local sweep: running trials finish."
)
@click.option(
    "--cancel", "action", flag_value="cancel", help="Cancel a local sweep: running trials stop."
)
@click.option("--stop-run", metavar="RUN_ID", help="Stop one run of local sweep SWEEP_FILE.")
@agent_run_options
@execution_options
@click.pass_context
def sweep(
    ctx: click.Context,
    sweep_file: Path,
    project: str | None,
    entity: str | None,
    dry_run: bool,
    print_yaml: bool,
    local: bool,
    store: Path | str | None,
    run_it: bool,
    workers: int | None,
    gpus: str | None,
    count: int | None,
    serve_dashboard: bool,
    action: str | None,
    stop_run: str | None,
    agent_run: AgentOptions,
    store_flags: StoreFlags,
    trial: TrialSettings,
    log_output: bool,
) -> None:
    """Validate SWEEP_FILE against W&B's rules and its notebook, then create the sweep on
    W&B, or with --local in a local store (no server; agents on this machine share it).

    With --pause, --resume, --stop, --cancel or --stop-run RUN_ID, SWEEP_FILE is a local
    sweep's ID instead (as `wandb sweep --pause ID`); agents react within seconds.

    SWEEP_FILE is a sweep YAML, or a notebook that calls wandb.sweep itself (W&B's
    tutorials): its sweep config is that dict, with program: the notebook. Every problem
    is reported at once. A missing command: becomes [nbsweep, run, ${program}, --, ${args}].
    """
    stored = store_flags.store_options(store)
    if action is not None or stop_run is not None:
        _control(str(sweep_file), action, stop_run, stored)
        return
    if run_it and not local:
        raise click.UsageError("--run runs local sweeps: add --local")
    if serve_dashboard and not run_it:
        raise click.UsageError("--dashboard serves the sweep --run runs: add --local --run")
    fleet = _agents(ctx, run_it, workers, gpus, count)
    # What the agents --run starts are given, checked before a sweep is made.
    agents = dataclasses.replace(agent_run, count=count, trial=trial, log_output=log_output)
    if fleet:
        api.check_heartbeats(agents, stored, local=True)
    checked = api.check_sweep(sweep_file, project=project, config_var=trial.config_var, local=local)
    for note in checked.notes:
        click.echo(f"note: {note}", err=True)
    for warning in checked.warnings:
        click.echo(f"warning: {warning}", err=True)
    if print_yaml:
        click.echo(api.yaml_text(checked.config), nl=False)
    elif dry_run:
        click.echo(f"{sweep_file}: valid; command: {checked.config['command']}")
    elif local:
        _create_local(
            checked, sweep_file.stem, stored, store is not None, fleet, agents, serve_dashboard
        )
    else:
        warn = lambda message: click.echo(f"warning: {message}", err=True)  # noqa: E731
        path = api.create_wandb_sweep(checked.config, entity, on_retry=warn)
        click.echo(f"created sweep {path}")
        click.echo(f"run it with: nbsweep agent {path}")


def _control(sweep_id: str, action: str | None, run_id: str | None, store: StoreOptions) -> None:
    if action is not None and run_id is not None:
        raise click.UsageError(f"--{action} and --stop-run are one action each: give one")
    if _is_file(sweep_id):
        raise UsageError(f"--{action or 'stop-run'} takes a sweep's ID, not the file {sweep_id!r}")
    chosen = None if action is None else SweepAction(action)
    click.echo(api.control_sweep(sweep_id, chosen, store, run_id=run_id))


def _is_file(text: str) -> bool:
    return Path(text).suffix in (".yaml", ".yml", ".ipynb")


def _agents(
    ctx: click.Context, run_it: bool, workers: int | None, gpus: str | None, count: int | None
) -> list[Worker]:
    """The agents --run starts; an option of theirs without --run is a usage error (checked
    before a sweep is made)."""
    arguments = handed_on(ctx)
    if not run_it:
        # --config-var is the sweep's own too: the notebook's parameters are checked with it.
        names = [arg.split("=", 1)[0] for arg in arguments if not arg.startswith("--config-var")]
        given = {"--workers": workers, "--gpus": gpus, "--count": count}
        names = list(dict.fromkeys([*names, *(n for n, v in given.items() if v is not None)]))
        if names:
            verb = "goes" if len(names) == 1 else "go"
            raise click.UsageError(f"{' and '.join(names)} {verb} with --run")
        return []
    if gpus is not None and workers is not None:
        raise click.UsageError("use --gpus or --workers, not both")
    return api.agent_fleet(gpus, workers)


def _create_local(
    checked: CheckedSweep,
    name: str,
    store: StoreOptions,
    store_given: bool,
    fleet: list[Worker],
    agents: AgentOptions,
    serve_dashboard: bool = False,
) -> None:
    """Create the sweep; with a ``fleet``, run its agents on it, then show the leaderboard."""
    sweep_id = api.create_local_sweep(checked.config, name, store)
    store_flag = f" --store {api.shown_store(store)}" if store_given else ""
    click.echo(f"created local sweep {sweep_id} in {api.shown_store(store)}")
    if not fleet:
        click.echo(f"run it with: nbsweep agent local:{sweep_id}{store_flag} [--workers N]")
        return
    server = None
    if serve_dashboard:
        server = api.dashboard_server(DashboardOptions(store, sweep_id=sweep_id))
        server.start()
        click.echo(f"dashboard: {server.url}")
    try:
        code = api.run_agent_workers(f"local:{sweep_id}", agents, store, fleet)
    finally:
        if server is not None:
            server.stop()
    click.echo()
    for view in api.sweep_status(sweep_id, store):
        show_table(view)
    sys.exit(code)
