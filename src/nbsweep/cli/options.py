"""Options several nbsweep commands share, each declared once with its default and help,
and turned into the library's option objects (``execution_options`` gives the command a
``TrialSettings``; ``agent_run_options`` an ``AgentOptions`` and ``StoreFlags``)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from nbsweep.api import (
    DEFAULT_CONFIG_VAR,
    AgentOptions,
    ExecutionOptions,
    KernelStart,
    Preload,
    StoreOptions,
    TrialSettings,
    store_location,
)


class AgentOption(click.Option):
    """An option of how trials run: `nbsweep agent` has it, and `nbsweep sweep --run` too,
    which hands it on to the agents it starts (``handed_on``)."""


_option = functools.partial(click.option, cls=AgentOption)


class Seconds(click.FloatRange):
    """A FloatRange that refuses nan, which passes every range check (nan < 0 is false)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


config_var_option = _option(
    "--config-var",
    default=DEFAULT_CONFIG_VAR,
    show_default=True,
    metavar="NAME",
    help="Variable holding a config dict, used when no cell is tagged 'parameters'.",
)
sweep_function_option = _option(
    "--sweep-function",
    metavar="NAME",
    help="Where the notebook calls wandb.agent more than once: the function trials run "
    "(as written in the call, e.g. train or mymod.train). Default: the last call's.",
)


class _StoreLocation(click.ParamType):
    """An SQLite file's path, or a ``postgresql://`` URL (kept as text)."""

    name = "PATH|URL"

    def convert(self, value: Any, param: Any, ctx: Any) -> Path | str:
        return store_location(str(value))


Decorator = Callable[[Callable[..., None]], Callable[..., None]]


def store_option(command: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--store",
        type=_StoreLocation(),
        help="Local sweep store: an SQLite file, or postgresql://USER@HOST/DB for agents on "
        "several machines. Default: $NBSWEEP_STORE, else .nbsweep/sweeps.db.",
    )(command)


gpus_option = click.option(
    "--gpus",
    metavar="IDS",
    help="One agent per GPU: 0,1,2 or 'all'; each sees only its GPU through CUDA_VISIBLE_DEVICES.",
)


_EXECUTION_OPTIONS: list[Decorator] = [
    _option(
        "--kernel",
        metavar="NAME",
        help="Kernel to use instead of the notebook's "
        "kernelspec (python3 means the interpreter running nbsweep).",
    ),
    _option(
        "--cwd",
        type=click.Path(file_okay=False, path_type=Path),
        help="Working directory of the kernel. Default: the notebook's folder.",
    ),
    _option(
        "--timeout",
        "cell_timeout",
        type=Seconds(min=0, min_open=True),
        metavar="SECONDS",
        help="Stop a cell that runs longer (interrupt, then kill). Default: no limit.",
    ),
    _option(
        "--trial-timeout",
        type=Seconds(min=0, min_open=True),
        metavar="SECONDS",
        help="Stop the notebook after this long. Default: no limit.",
    ),
    _option(
        "--run-install-cells",
        is_flag=True,
        help="Run install lines (!pip install, %pip install, %conda install ...) in "
        "trials. Default: skip them, saying so once.",
    ),
    _option(
        "--stop-grace",
        type=Seconds(min=0),
        default=10.0,
        show_default=True,
        metavar="SECONDS",
        help="After interrupting a stopped or timed-out cell, wait this long "
        "before killing the kernel.",
    ),
    config_var_option,
    sweep_function_option,
    _option(
        "--allow-unknown",
        is_flag=True,
        help="Inject names the notebook does not define instead of failing.",
    ),
    _option(
        "--metric",
        "metrics",
        multiple=True,
        metavar="NAME",
        help="Report this variable's final value as a metric (repeatable).",
    ),
    _option(
        "--log-output",
        is_flag=True,
        help="Stream the kernel's stdout and stderr while it runs.",
    ),
    _option("--html", is_flag=True, help="Also save the executed notebook as HTML."),
]


def execution_options(command: Callable[..., None]) -> Callable[..., None]:
    """Options every command that executes a notebook shares; the command gets them as
    ``trial`` (``TrialSettings``) and ``log_output`` (a setting of its reporter)."""

    @functools.wraps(command)
    def with_settings(
        *args: Any,
        kernel: str | None,
        cwd: Path | None,
        cell_timeout: float | None,
        trial_timeout: float | None,
        stop_grace: float,
        config_var: str,
        sweep_function: str | None,
        allow_unknown: bool,
        metrics: tuple[str, ...],
        log_output: bool,
        html: bool,
        run_install_cells: bool,
        **rest: Any,
    ) -> None:
        trial = TrialSettings(
            config_var=config_var,
            sweep_function=sweep_function,
            allow_unknown=allow_unknown,
            html=html,
            kernel_name=kernel,
            cwd=cwd,
            metric_variables=metrics,
            run_install_cells=run_install_cells,
            execution=ExecutionOptions(cell_timeout, trial_timeout, stop_grace),
        )
        command(*args, trial=trial, log_output=log_output, **rest)

    decorated: Callable[..., None] = with_settings
    for option in reversed(_EXECUTION_OPTIONS):
        decorated = option(decorated)
    return decorated


@dataclass(frozen=True)
class StoreFlags:
    """What an agent's options say of the local store it shares with others."""

    requeue_crashed: bool = False
    agent_name: str | None = None
    heartbeat_timeout: float | None = None

    def store_options(self, store: Path | str | None) -> StoreOptions:
        """With ``--store`` (None: ``NBSWEEP_STORE``, else the default) and the
        environment's ``NBSWEEP_*`` settings where no option was given."""
        return StoreOptions.from_environment(
            store,
            heartbeat_timeout=self.heartbeat_timeout,
            agent_name=self.agent_name,
            requeue_crashed=self.requeue_crashed,
        )


_AGENT_RUN_OPTIONS: list[Decorator] = [
    _option(
        "--poll",
        type=Seconds(min=0.05),
        default=2.0,
        show_default=True,
        metavar="SECONDS",
        help="Heartbeat interval while idle; the next trial is asked for as soon as one ends.",
    ),
    _option(
        "--heartbeat",
        type=Seconds(min=0.05),
        metavar="SECONDS",
        help="Heartbeat interval while a trial runs (how soon a stop arrives). Default: 5 for "
        "W&B, 1 for local sweeps.",
    ),
    _option(
        "--max-consecutive-failures",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        help="Stop after this many failed trials in a row.",
    ),
    _option(
        "--requeue-crashed",
        is_flag=True,
        help="Local sweeps: put a dead agent's run back to pending instead of marking it crashed.",
    ),
    _option(
        "--agent-name",
        metavar="NAME",
        help="Local sweeps: the name this machine's agents go by in the store (default: "
        "the host name); give each node its own where nodes share a host name.",
    ),
    _option(
        "--heartbeat-timeout",
        type=Seconds(min=0, min_open=True),
        metavar="SECONDS",
        help="Local sweeps: a run whose agent sent no heartbeat for this long is lost "
        "(crashed, or requeued with --requeue-crashed)  [default: 600]",
    ),
    _option(
        "--preload",
        default="auto",
        show_default=True,
        metavar="auto|none|MODULES",
        help="What the next trial's kernel imports while the current trial runs: auto "
        "(the notebook's leading import statements), none, or modules (numpy,torch).",
    ),
    _option(
        "--preload-cuda",
        is_flag=True,
        help="Also initialise CUDA (through torch) in the next trial's kernel.",
    ),
    _option(
        "--kernel-start",
        type=click.Choice(["fork", "exec"]),
        default="fork",
        show_default=True,
        help="fork: each trial's kernel is forked from a template process that imported "
        "ipykernel and the preload once (Linux, this Python's kernel, no --preload-cuda; "
        "else exec, said once); exec: a fresh interpreter per kernel.",
    ),
    _option(
        "--setup-once/--no-setup-once",
        default=True,
        show_default=True,
        help="Run the notebook's setup (the cells before the first one a trial's values "
        "reach) once per agent in the kernel template, and fork each trial's kernel from "
        "there; where that is not safe (a thread, a process, a socket, an open wandb run, "
        "CUDA) or not possible, every trial runs every cell, said once. A cell tagged "
        "nbsweep-per-trial and those after it run per trial.",
    ),
    _option(
        "--no-warm-kernels",
        is_flag=True,
        help="Start each trial's kernel when the trial starts (no kernel started ahead, "
        "no preload).",
    ),
    _option(
        "--no-wandb",
        is_flag=True,
        help="Open no wandb run per trial (local sweeps otherwise keep an offline one each).",
    ),
]


def agent_run_options(command: Callable[..., None]) -> Callable[..., None]:
    """How an agent runs its trials, beyond the execution options: `nbsweep agent` and
    `nbsweep sweep --run` (which hands them on to its agents) share them. The command gets
    them as ``agent_run`` (an ``AgentOptions`` whose ``trial``, ``count``, ``notebook``,
    ``project`` and ``entity`` it fills in) and ``store_flags``."""

    @functools.wraps(command)
    def with_options(
        *args: Any,
        poll: float,
        heartbeat: float | None,
        max_consecutive_failures: int,
        requeue_crashed: bool,
        agent_name: str | None,
        heartbeat_timeout: float | None,
        preload: str,
        preload_cuda: bool,
        kernel_start: KernelStart,
        setup_once: bool,
        no_warm_kernels: bool,
        no_wandb: bool,
        **rest: Any,
    ) -> None:
        agent_run = AgentOptions(
            poll=poll,
            heartbeat=heartbeat,
            max_consecutive_failures=max_consecutive_failures,
            report_to_wandb=not no_wandb,
            warm_kernels=not no_warm_kernels,
            kernel_start=kernel_start,
            setup_once=setup_once,
            preload=Preload.parse(preload, preload_cuda),
        )
        flags = StoreFlags(requeue_crashed, agent_name, heartbeat_timeout)
        command(*args, agent_run=agent_run, store_flags=flags, **rest)

    decorated: Callable[..., None] = with_options
    for option in reversed(_AGENT_RUN_OPTIONS):
        decorated = option(decorated)
    return decorated


def agent_options(command: Callable[..., None]) -> Callable[..., None]:
    """What only `nbsweep agent` takes: which sweep, and how many agents."""
    options: list[Decorator] = [
        click.option("--count", type=click.IntRange(min=1), help="Stop after this many trials."),
        click.option(
            "--notebook",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Notebook to run. Default: the sweep's program:, relative to the cwd.",
        ),
        click.option(
            "--project", help="W&B project of the sweep (else from SWEEP_ID or WANDB_PROJECT)."
        ),
        click.option(
            "--entity", help="W&B entity of the sweep (else from SWEEP_ID or WANDB_ENTITY)."
        ),
        gpus_option,
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            help="Run this many agents in parallel, without GPUs.",
        ),
        click.option("--local", is_flag=True, help="SWEEP_ID is a local sweep (same as local:ID)."),
        store_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def handed_on(ctx: click.Context) -> list[str]:
    """The ``AgentOption``s given on ``ctx``'s command line, as arguments for `nbsweep
    agent`; the rest it has already: the same defaults, the same environment."""
    arguments: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if not isinstance(param, AgentOption) or name is None:
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        flag, value = param.opts[0], ctx.params[name]
        if param.is_flag:
            arguments += [flag] if value else []
        else:
            # --name=value: a value that starts with "-" stays a value.
            values = value if param.multiple else (value,)
            arguments += [f"{flag}={item}" for item in values]
    return arguments
