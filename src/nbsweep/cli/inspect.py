"""``nbsweep inspect``: a notebook's parameters."""

from __future__ import annotations

import json
from pathlib import Path

import click

from nbsweep.cli.options import (
    config_var_option,
)


@click.command()
@click.argument("notebook", type=click.Path(dir_okay=False, path_type=Path))
@config_var_option
@click.option("--json", "as_json", is_flag=True, help="Print the parameters as JSON.")
@click.option(
    "--sweep-template", is_flag=True, help="Print a starter sweep YAML for this notebook."
)
def inspect(notebook: Path, config_var: str, as_json: bool, sweep_template: bool) -> None:
    """Show the parameters NOTEBOOK declares and how nbsweep found them: a parameters cell,
    a config dict, or the notebook's own wandb.sweep / wandb.agent calls (W&B's tutorials)."""
    from nbsweep.notebook.files import read_notebook
    from nbsweep.notebook.parameters import find_parameters, find_parameters_or_none
    from nbsweep.notebook.wandb_way import analyse
    from nbsweep.sweeping import config as config_module
    from nbsweep.sweeping import inspection

    nb = read_notebook(notebook)
    found = find_parameters_or_none(nb, config_var)
    shape = analyse(nb)
    own_sweep = inspection.shows_wandb_sweep(shape)
    if found is None and not own_sweep and not shape.reads_wandb_config:
        find_parameters(nb, config_var)  # raises: says how to declare parameters
    if found is None and not own_sweep:
        click.echo(
            "no parameters cell or config dict: the notebook reads wandb.config, where "
            "nbsweep puts each trial's values; the sweep YAML names them"
        )
        return
    if sweep_template:
        if own_sweep:
            config = config_module.with_default_command(
                config_module.notebook_sweep_config(notebook, shape)
            )
            click.echo(config_module.yaml_text(config), nl=False)
        else:
            click.echo(inspection.sweep_template_yaml(notebook, found, nb), nl=False)
    elif as_json:
        data = inspection.parameters_json(found) if found is not None else {"style": "wandb"}
        if own_sweep:
            data["wandb"] = inspection.wandb_sweep_json(shape)
        click.echo(json.dumps(data, indent=2))
    else:
        parts = [inspection.parameters_table(found)] if found is not None else []
        if own_sweep:
            parts.append(inspection.wandb_sweep_table(shape))
        click.echo("\n".join(parts), nl=False)
