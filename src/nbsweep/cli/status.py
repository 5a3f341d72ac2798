"""``nbsweep status``: a local sweep's leaderboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from nbsweep.cli.options import (
    Seconds,
    store_option,
)
from nbsweep.errors import (
    UsageError,
)


@click.command()
@click.argument("sweep_id", required=False)
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.option(
    "--watch",
    type=Seconds(min=0.2),
    metavar="SECONDS",
    help="Refresh every SECONDS until the sweep has nothing running or pending, once an "
    "agent has started it (Ctrl-C ends).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the metric per trial (with the best so far) and a parallel-coordinates view "
    "of the parameters to FILE.png (needs nbsweep[plot]) or FILE.html.",
)
def status(
    sweep_id: str | None,
    store: Path | str | None,
    as_json: bool,
    watch: float | None,
    plot: Path | None,
) -> None:
    """Show a local sweep's runs, best first, with totals per state (SWEEP_ID: local:ID or
    ID; default: the newest sweep in the store). Reaps runs whose agent died."""
    import shutil
    import time

    from nbsweep.local import leaderboard
    from nbsweep.local.plots import plot as write_plot
    from nbsweep.local.server import local_sweep_id, open_store

    with open_store(store, read=True) as opened:
        chosen = (local_sweep_id(sweep_id) or sweep_id) if sweep_id else _newest(opened)
        while True:
            opened.reap(chosen)
            record = opened.sweep(chosen)
            # With history: a run that never finished (its agent was killed) shows what it
            # recorded, its metric included.
            runs = [_as_written(run) for run in opened.runs(chosen, with_history=True)]
            if plot is not None:
                write_plot(record, runs, plot)
            if as_json:
                click.echo(json.dumps(leaderboard.as_json(record, runs), indent=2))
            else:
                if watch:
                    click.clear()
                width = shutil.get_terminal_size((120, 24)).columns
                click.echo(leaderboard.table(record, runs, width=width), nl=False)
            if plot is not None:
                click.echo(f"plot written: {plot}", err=True)
            busy = any(run.state.value in ("pending", "running") for run in runs)
            # A sweep no agent has started yet has all its work ahead of it.
            waiting = not runs and record.state in ("running", "paused")
            if not watch or not (busy or waiting):
                return
            time.sleep(watch)


def _as_written(run: Any) -> Any:
    """``run`` without the notebook path it names where no notebook is there (a trial that
    never started, or whose notebook could not be saved)."""
    import dataclasses

    if run.notebook and not Path(run.notebook).is_file():  # ".": a trial that never began
        return dataclasses.replace(run, notebook=None)
    return run


def _newest(store: Any) -> str:

    sweeps = store.sweeps()
    if not sweeps:
        raise UsageError("the store has no sweeps: create one with nbsweep sweep --local")
    return max(sweeps, key=lambda sweep: sweep.created_at).sweep_id
