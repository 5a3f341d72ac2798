"""The ``nbsweep`` command: parse, call the library, turn its errors into one line and an
exit code (1 failed trial, 2 usage or input error, 130 interrupted, 143 terminated)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nbsweep import __version__
from nbsweep.cli.options import (
    agent_options,
    config_var_option,
    execution_options,
    store_option,
)
from nbsweep.errors import (
    NbsweepError,
    SweepConfigError,
    TrialFailed,
    TrialStopped,
    UsageError,
)

if TYPE_CHECKING:
    from nbsweep.trial.result import TrialResult


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NbsweepError as error:
            raise _Failure(str(error), error.exit_code) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nbsweep")
def cli() -> None:
    """Run a Jupyter notebook as a W&B sweep program."""


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
    epilog="Parameters, lowest precedence first: -f files; --args-json; --name=value and "
    "name=value; the WANDB_SWEEP_PARAM_PATH file (under wandb agent); -p/-r. Execution "
    "options win over --name=value of the same name: pass such a parameter with -p.",
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
    sweep YAML: command: [nbsweep, run, ${program}, ${args}]
    """
    from nbsweep.kernel.early import EarlyKernel

    # The kernel boots while the rest of this command imports and reads the values.
    early = EarlyKernel(notebook, execution["kernel"], execution["cwd"])
    try:
        from nbsweep.notebook.files import ensure_writable_folder, write_json
        from nbsweep.notebook.outputs import check_outputs
        from nbsweep.sweeping.arguments import PARAM_PATH_ENV, ParameterSources, collect
        from nbsweep.sweeping.path import agent_sweep_path
        from nbsweep.sweeping.run_reporter import run_under_wandb_agent
        from nbsweep.trial.reporting import Reporter, failure_message
        from nbsweep.trial.run import TrialSpec, exit_code_for_stop, run_trial

        sources = ParameterSources(
            args, files, args_json, pairs, raw_pairs, os.environ.get(PARAM_PATH_ENV)
        )
        spec = TrialSpec(
            notebook, collect(sources), output, settings=_trial_settings(**execution)
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
        if result.status == "failed":
            raise TrialFailed(failure_message(result), result=result)
    finally:
        early.close()


def _trial_settings(
    *,
    kernel: str | None,
    cwd: Path | None,
    cell_timeout: float | None,
    trial_timeout: float | None,
    stop_grace: float,
    config_var: str,
    allow_unknown: bool,
    metrics: tuple[str, ...],
    log_output: bool,
    html: bool,
    run_install_cells: bool,
) -> Any:
    """The execution options every command shares, as the trials' settings."""
    from nbsweep.kernel.executor import ExecutionOptions
    from nbsweep.trial.run import TrialSettings

    del log_output  # a Reporter setting, not the trial's
    return TrialSettings(
        config_var=config_var,
        allow_unknown=allow_unknown,
        html=html,
        kernel_name=kernel,
        cwd=cwd,
        metric_variables=metrics,
        run_install_cells=run_install_cells,
        execution=ExecutionOptions(cell_timeout, trial_timeout, stop_grace),
    )


def _print_metrics(result: TrialResult) -> None:
    summary = result.metrics.summary()
    for name, value in summary.items():
        click.echo(f"{name}\t{value}")
    for name in result.metrics.missing:
        click.echo(f"warning: --metric {name}: the notebook never defined it", err=True)


@cli.command()
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
            click.echo(yaml_text(config), nl=False)
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


def yaml_text(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("sweep_id")
@agent_options
@execution_options
def agent(
    sweep_id: str,
    count: int | None,
    notebook: Path | None,
    project: str | None,
    entity: str | None,
    poll: float,
    heartbeat: float | None,
    max_consecutive_failures: int,
    gpus: str | None,
    workers: int | None,
    local: bool,
    store: Path | None,
    requeue_crashed: bool,
    no_wandb: bool,
    preload: str,
    preload_cuda: bool,
    no_warm_kernels: bool,
    kernel_start: str,
    **execution: Any,
) -> None:
    """Run trials of sweep SWEEP_ID, one at a time: a W&B sweep (ID, PROJECT/ID or
    ENTITY/PROJECT/ID) or a local one (local:ID, or ID with --local).

    Ctrl-C once finishes the current trial and exits; twice (or SIGTERM) stops it now.
    Exit codes: 0 done, 1 too many failed trials or a server error, 130 interrupted.
    """
    from nbsweep.api import run_agent
    from nbsweep.kernel.preload import Preload
    from nbsweep.sweeping.agent import AgentOptions
    from nbsweep.trial.reporting import Reporter

    preloading = Preload.parse(preload, preload_cuda)
    if gpus is not None or workers is not None:
        from nbsweep.sweeping.workers import cpu_workers, gpu_workers, run_workers

        if gpus is not None and workers is not None:
            raise click.UsageError("use --gpus or --workers, not both")
        fleet = gpu_workers(gpus, os.environ) if gpus is not None else cpu_workers(workers or 1)
        sys.exit(run_workers(fleet, without_fanout_options(sys.argv[1:])))
    options = AgentOptions(
        count=count,
        notebook=notebook,
        poll=poll,
        max_consecutive_failures=max_consecutive_failures,
        trial=_trial_settings(**execution),
        report_to_wandb=not no_wandb,
        warm_kernels=not no_warm_kernels,
        kernel_start=kernel_start,
        preload=preloading,
    )
    reporter = Reporter(log_output=execution["log_output"])
    sys.exit(
        run_agent(
            sweep_id,
            options,
            reporter,
            store=store,
            local=local,
            project=project,
            entity=entity,
            requeue_crashed=requeue_crashed,
            heartbeat=heartbeat,
        )
    )


@cli.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--project", help="W&B project (else the YAML's project:, or WANDB_PROJECT).")
@click.option("--entity", help="W&B entity (else the YAML's entity:, or WANDB_ENTITY).")
@config_var_option
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
    help="With --local: then run agents on it (--workers, --count) and print the leaderboard.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Agents for --run."
)
@click.option("--count", type=click.IntRange(min=1), help="Trials per agent for --run.")
@click.option("--pause", "action", flag_value="pause", help="Pause local sweep SWEEP_FILE (an ID).")
@click.option("--resume", "action", flag_value="resume", help="Resume a paused local sweep.")
@click.option(
    "--stop", "action", flag_value="stop", help="Stop a local sweep: running trials finish."
)
@click.option(
    "--cancel", "action", flag_value="cancel", help="Cancel a local sweep: running trials stop."
)
@click.option("--stop-run", metavar="RUN_ID", help="Stop one run of local sweep SWEEP_FILE.")
def sweep(
    sweep_file: Path,
    project: str | None,
    entity: str | None,
    config_var: str,
    dry_run: bool,
    print_yaml: bool,
    local: bool,
    store: Path | None,
    run_it: bool,
    workers: int,
    count: int | None,
    action: str | None,
    stop_run: str | None,
) -> None:
    """Validate SWEEP_FILE against W&B's rules and its notebook, then create the sweep on
    W&B, or with --local in a local store (no server; agents on this machine share it).

    With --pause, --resume, --stop, --cancel or --stop-run RUN_ID, SWEEP_FILE is a local
    sweep's ID instead (as `wandb sweep --pause ID`); agents react within seconds.

    SWEEP_FILE is a sweep YAML, or a notebook that calls wandb.sweep itself (W&B's
    tutorials): its sweep config is that dict, with program: the notebook. Every problem
    is reported at once. A missing command: becomes [nbsweep, run, ${program}, ${args}].
    """
    from nbsweep.sweeping.config import (
        load_sweep,
        sweep_problems,
        with_default_command,
    )

    if action is not None or stop_run is not None:
        _control(str(sweep_file), action, stop_run, store)
        return
    if run_it and not local:
        raise click.UsageError("--run runs local sweeps: add --local")
    if not run_it and (workers != 1 or count is not None):
        raise click.UsageError("--workers and --count go with --run")
    loaded = load_sweep(sweep_file)
    for fix in loaded.enotation_fixes:
        click.echo(f"note: {fix} (PyYAML alone would have read a string)", err=True)
    config = loaded.config
    if project:
        config["project"] = project
    problems = sweep_problems(config, config_var, local)
    if problems:
        raise SweepConfigError(problems)
    from nbsweep.sweeping.config import find_warnings

    for warning in find_warnings(config):
        click.echo(f"warning: {warning}", err=True)
    config = with_default_command(config)
    if print_yaml:
        click.echo(yaml_text(config), nl=False)
        return
    if dry_run:
        click.echo(f"{sweep_file}: valid; command: {config['command']}")
        return
    if local:
        _create_local(config, sweep_file.stem, store, run_it, workers, count)
        return
    from nbsweep.sweeping.wandb_api import Credentials, SweepService

    environ = os.environ
    service = SweepService(
        Credentials.from_environment(environ),
        on_retry=lambda message: click.echo(f"warning: {message}", err=True),
    )
    path = service.create_sweep(
        yaml_text(config),
        entity or config.get("entity") or environ.get("WANDB_ENTITY"),
        config.get("project") or environ.get("WANDB_PROJECT"),
    )
    click.echo(f"created sweep {path}")
    click.echo(f"run it with: nbsweep agent {path}")


def _control(sweep_id: str, action: str | None, run_id: str | None, store: Path | None) -> None:
    from nbsweep.local.server import control_sweep, local_sweep_id

    if action is not None and run_id is not None:
        raise click.UsageError(f"--{action} and --stop-run are one action each: give one")
    if local_sweep_id(sweep_id) is None and ("/" in sweep_id or _is_file(sweep_id)):
        raise UsageError(
            f"{sweep_id!r} is not a local sweep ID; for a W&B sweep use "
            f"`wandb sweep --{action or 'stop'} ENTITY/PROJECT/ID`"
        )
    click.echo(control_sweep(sweep_id, action or "stop-run", store, run_id=run_id))


def _is_file(text: str) -> bool:
    return Path(text).suffix in (".yaml", ".yml", ".ipynb")


def _create_local(
    config: dict, name: str, store: Path | None, run_it: bool, workers: int, count: int | None
) -> None:
    from nbsweep.local.server import store_path
    from nbsweep.local.store import Store

    with Store.open(store_path(store)) as opened:
        sweep_id = opened.create_sweep(config, name=name)
    store_flag = f" --store {store}" if store is not None else ""
    click.echo(f"created local sweep {sweep_id} in {store_path(store)}")
    if not run_it:
        click.echo(f"run it with: nbsweep agent local:{sweep_id}{store_flag} [--workers N]")
        return
    from nbsweep.sweeping.workers import cpu_workers, run_workers

    argv = ["agent", f"local:{sweep_id}", "--store", str(store_path(store))]
    if count is not None:
        argv += ["--count", str(count)]
    code = run_workers(cpu_workers(workers), argv)
    click.echo()
    click.get_current_context().invoke(
        status, sweep_id=sweep_id, store=store, as_json=False, watch=None, plot=None
    )
    sys.exit(code)


@cli.command()
@click.argument("sweep_id", required=False)
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.2),
    metavar="SECONDS",
    help="Refresh every SECONDS until the sweep has nothing running or pending (Ctrl-C ends).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the metric per trial (with the best so far) and a parallel-coordinates view "
    "of the parameters to FILE.png (needs nbsweep[plot]) or FILE.html.",
)
def status(
    sweep_id: str | None, store: Path | None, as_json: bool, watch: float | None, plot: Path | None
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
            runs = opened.runs(chosen, with_history=True)
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
            if not watch or not busy:
                return
            time.sleep(watch)


def _newest(store: Any) -> str:
    from nbsweep.errors import UsageError

    sweeps = store.sweeps()
    if not sweeps:
        raise UsageError("the store has no sweeps: create one with nbsweep sweep --local")
    return max(sweeps, key=lambda sweep: sweep.created_at).sweep_id


def without_fanout_options(argv: list[str]) -> list[str]:
    """The command line a worker gets: the user's, less --gpus/--workers."""
    kept: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in ("--gpus", "--workers"):
            skip = True
        elif not token.startswith(("--gpus=", "--workers=")):
            kept.append(token)
    return kept


def main() -> None:
    cli(prog_name="nbsweep")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
