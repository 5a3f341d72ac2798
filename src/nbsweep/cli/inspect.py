"""``nbsweep inspect``: a notebook's parameters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from nbsweep import api

if TYPE_CHECKING:
    from nbsweep.api import InspectForm
from nbsweep.cli.options import config_var_option, sweep_function_option


@click.command()
@click.argument("notebook", type=click.Path(dir_okay=False, path_type=Path))
@config_var_option
@click.option("--json", "as_json", is_flag=True, help="Print the parameters as JSON.")
@click.option(
    "--sweep-template", is_flag=True, help="Print a starter sweep YAML for this notebook."
)
@sweep_function_option
def inspect(
    notebook: Path,
    config_var: str,
    as_json: bool,
    sweep_template: bool,
    sweep_function: str | None,
) -> None:
    """Show the parameters NOTEBOOK declares and how nbsweep found them: a parameters cell,
    a config dict, or the notebook's own wandb.sweep / wandb.agent calls (W&B's tutorials)."""
    form: InspectForm = "sweep-template" if sweep_template else "json" if as_json else "table"
    text = api.inspect_notebook(
        notebook, form, config_var=config_var, sweep_function=sweep_function
    )
    click.echo(text, nl=False)
