"""``nbsweep status``: a local sweep's leaderboard."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nbsweep import api
from nbsweep.api import StoreOptions

if TYPE_CHECKING:
    from nbsweep.api import SweepStatus
from nbsweep.cli.options import Seconds, store_option


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
    views = api.sweep_status(sweep_id, StoreOptions.from_environment(store), plot=plot, watch=watch)
    for view in views:
        if as_json:
            click.echo(view.json())
        else:
            if watch:
                click.clear()
            show_table(view)
        if plot is not None:
            click.echo(f"plot written: {plot}", err=True)


def show_table(view: SweepStatus) -> None:
    """The leaderboard, as wide as the terminal."""
    width = shutil.get_terminal_size((120, 24)).columns
    click.echo(view.table(width), nl=False)
