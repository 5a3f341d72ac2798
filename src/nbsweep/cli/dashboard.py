"""``nbsweep dashboard``: a live page of a store's local sweeps."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from types import FrameType

import click

from nbsweep import api
from nbsweep.api import DashboardOptions, StoreOptions
from nbsweep.cli.options import store_option


@click.command()
@click.argument("sweep_id", required=False)
@store_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Another than 127.0.0.1 lets other machines in (with the token).",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=0, help="Port (default: any free one)."
)
@click.option(
    "--notebooks",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    help="The folder the agents ran in: runs' notebooks are served from inside it only "
    "(default: here).",
)
def dashboard(
    sweep_id: str | None, store: Path | str | None, host: str, port: int, notebooks: Path
) -> None:
    """Serve a live page of the store's local sweeps (SWEEP_ID, local:ID or ID: open that
    one) and print its URL, with the token every request needs. Ctrl-C stops it."""
    options = DashboardOptions(
        store=StoreOptions.from_environment(store),
        notebooks=notebooks,
        host=host,
        port=port,
        sweep_id=sweep_id.removeprefix("local:") if sweep_id else None,
    )
    server = api.dashboard_server(options)
    if server.exposed:
        click.echo(api.dashboard_warning(host), err=True)
    click.echo(server.url)
    # uvicorn shuts down on either signal, then raises it again: SIGTERM ends as nbsweep's
    # other commands do (143), after the store is closed; Ctrl-C is how a server is ended.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
    finally:
        click.echo("dashboard stopped", err=True)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(143)
