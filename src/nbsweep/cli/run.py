"""``nbsweep run``: one trial."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from nbsweep import api
from nbsweep.api import TrialSettings

if TYPE_CHECKING:
    from nbsweep.api import TrialResult
from nbsweep.cli.options import execution_options
from nbsweep.errors import TrialFailed, TrialStopped


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
    epilog="Parameters, lowest precedence first: -f files; --args-json; --name=value and "
    "name=value; the WANDB_SWEEP_PARAM_PATH file (under wandb agent); -p/-r. Execution "
    "options win over --name=value of the same name: pass such a parameter with -p, or "
    "after --, after which every argument is a parameter.",
)
@click.argument("notebook", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "-p",
    "--parameter",
    "pairs",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Set a parameter; VALUE is read as a Python literal, else a string.",
)
@click.option(
    "-r",
    "--parameter-raw",
    "raw_pairs",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Set a parameter to VALUE as a string.",
)
@click.option(
    "-f",
    "--parameters-file",
    "files",
    multiple=True,
    metavar="FILE",
    help="YAML or JSON file of name: value (repeatable).",
)
@click.option(
    "--args-json",
    multiple=True,
    metavar="JSON",
    help="A JSON object of parameters (what W&B's ${args_json} gives).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Executed notebook path. Default: nbsweep-runs/<notebook>/<time>/ (under "
    "wandb agent: nbsweep-runs/<sweep>/<run>/).",
)
@click.option(
    "--metrics-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the captured metrics (summary and history) to this JSON file.",
)
@execution_options
def run(
    notebook: Path,
    args: tuple[str, ...],
    pairs: tuple[tuple[str, str], ...],
    raw_pairs: tuple[tuple[str, str], ...],
    files: tuple[str, ...],
    args_json: tuple[str, ...],
    output: Path | None,
    metrics_json: Path | None,
    trial: TrialSettings,
    log_output: bool,
) -> None:
    """Run NOTEBOOK once with the given parameter values: one sweep trial.

    \b
    nbsweep run train.ipynb --lr=0.01 --layers='[64, 32]'
    nbsweep run train.ipynb -p lr 0.01 -f params.yaml
    sweep YAML: command: [nbsweep, run, ${program}, --, ${args}]
    """
    command = api.RunCommand(
        notebook,
        api.ParameterSources(args, files, args_json, pairs, raw_pairs),
        output,
        metrics_json,
        trial,
        log_output,
    )
    try:
        result = api.run_command(command)
    except (TrialFailed, TrialStopped) as ended:
        if ended.result is not None:
            _print_metrics(ended.result)
        raise
    _print_metrics(result)


def _print_metrics(result: TrialResult) -> None:
    summary = result.metrics.summary()
    for name, value in summary.items():
        click.echo(f"{name}\t{value}")
    for name in result.metrics.missing:
        click.echo(f"warning: --metric {name}: the notebook never defined it", err=True)
