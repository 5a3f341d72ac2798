"""``nbsweep inspect``: a notebook's parameters."""

from __future__ import annotations

import json
from pathlib import Path

import click

from nbsweep.cli.options import (
    config_var_option,
    sweep_function_option,
)


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
    from nbsweep.errors import NotebookError
    from nbsweep.notebook.files import read_notebook
    from nbsweep.notebook.parameters import find_parameters, find_parameters_or_none
    from nbsweep.notebook.wandb_way import analyse, values_go_to_wandb_config
    from nbsweep.sweeping import configs as config_module
    from nbsweep.sweeping import inspection

    nb = read_notebook(notebook)
    found = find_parameters_or_none(nb, config_var)
    shape = analyse(nb, sweep_function)
    to_wandb_config = values_go_to_wandb_config(found, shape)
    if to_wandb_config or found is None:
        error = shape.syntax_error()
        if error is not None:
            raise NotebookError(f"{notebook}: {error}")
    if found is None and not to_wandb_config:
        find_parameters(nb, config_var)  # raises: says how to declare parameters
    own_sweep = shape.has_own_sweep
    if to_wandb_config and not own_sweep:
        click.echo(
            "no parameters cell or config dict: the notebook reads wandb.config, where "
            "nbsweep puts each trial's values; the sweep YAML names them"
        )
        return
    declared = None if to_wandb_config else found
    if sweep_template:
        if own_sweep:
            config = config_module.with_default_command(
                config_module.notebook_sweep_config(notebook, shape)
            )
            click.echo(config_module.yaml_text(config), nl=False)
        elif declared is not None:
            click.echo(inspection.sweep_template_yaml(notebook, declared, nb), nl=False)
    elif as_json:
        data = inspection.parameters_json(declared) if declared else {"style": "wandb"}
        if own_sweep:
            data["wandb"] = inspection.wandb_sweep_json(shape)
        if found is not None and declared is None:
            data["config_dict_left_alone"] = {"name": found.config_var, "cell": found.cell_index}
        click.echo(json.dumps(data, indent=2))
    else:
        parts = [inspection.parameters_table(declared)] if declared is not None else []
        if own_sweep:
            parts.append(inspection.wandb_sweep_table(shape))
        if found is not None and declared is None:
            parts.append(
                f"{found.config_var} (cell {found.cell_index}) is left as it is: the notebook "
                "runs its own sweep, so trials' values go to wandb.config\n"
            )
        click.echo("\n".join(parts), nl=False)
