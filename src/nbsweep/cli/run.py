"""``nbsweep run``: one trial."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nbsweep.cli.options import (
    execution_options,
)
from nbsweep.errors import (
    TrialFailed,
    TrialStopped,
)

if TYPE_CHECKING:
    from nbsweep.trial.result import TrialResult

from nbsweep.cli.options import trial_settings


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
    pairs: tuple,
    raw_pairs: tuple,
    files: tuple[str, ...],
    args_json: tuple[str, ...],
    output: Path | None,
    metrics_json: Path | None,
    **execution: Any,
) -> None:
    """Run NOTEBOOK once with the given parameter values: one sweep trial.

    \b
    nbsweep run train.ipynb --lr=0.01 --layers='[64, 32]'
    nbsweep run train.ipynb -p lr 0.01 -f params.yaml
    sweep YAML: command: [nbsweep, run, ${program}, --, ${args}]
    """
    from nbsweep.kernel.prestart import EarlyKernel

    # The kernel boots while the rest of this command imports and reads the values.
    early = EarlyKernel(notebook, execution["kernel"], execution["cwd"])
    try:
        from nbsweep.notebook.files import ensure_writable_folder, write_json
        from nbsweep.notebook.outputs import check_outputs
        from nbsweep.sweeping.arguments import PARAM_PATH_ENV, ParameterSources, collect
        from nbsweep.sweeping.path import agent_sweep_path
        from nbsweep.sweeping.wandb.run_reporter import run_under_wandb_agent
        from nbsweep.trial.reporting import Reporter, failure_message
        from nbsweep.trial.run import TrialSpec, exit_code_for_stop, run_trial

        sources = ParameterSources(
            args, files, args_json, pairs, raw_pairs, os.environ.get(PARAM_PATH_ENV)
        )
        spec = TrialSpec(
            notebook, collect(sources), output, settings=trial_settings(**execution)
        )
        html_path = output.with_suffix(".html") if output and execution["html"] else None
        check_outputs(
            notebook, {"--output": output, "--html": html_path, "--metrics-json": metrics_json}
        )
        if metrics_json is not None:
            ensure_writable_folder(metrics_json.parent, "--metrics-json")
        reporter = Reporter(log_output=execution["log_output"])
        if agent_sweep_path(os.environ) is not None:
            result = run_under_wandb_agent(spec, reporter, os.environ, early)
        else:
            result = run_trial(spec, reporter, early=early)
        _print_metrics(result)
        if metrics_json is not None:
            write_json(result.metrics.to_json(), metrics_json)
        if result.status == "stopped":
            raise TrialStopped(
                f"stopped ({result.reason}); partial notebook saved: {result.output}",
                exit_code_for_stop(result.reason),
                result=result,
            )
        if result.late_stop is not None:
            raise TrialStopped(
                f"{result.late_stop} while the trial ({result.status}) was saved; notebook "
                f"saved: {result.output}",
                exit_code_for_stop(result.late_stop),
                result=result,
            )
        if result.status == "failed":
            raise TrialFailed(failure_message(result), result=result)
    finally:
        early.close()


def _print_metrics(result: TrialResult) -> None:
    summary = result.metrics.summary()
    for name, value in summary.items():
        click.echo(f"{name}\t{value}")
    for name in result.metrics.missing:
        click.echo(f"warning: --metric {name}: the notebook never defined it", err=True)
