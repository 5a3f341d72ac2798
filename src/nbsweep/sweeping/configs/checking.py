"""Check a sweep config before a sweep is made of it: W&B's rules (``validation``) against
the parameters its program notebook declares, and for a local sweep the engine's own schema."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from nbsweep.errors import SweepConfigError, UsageError
from nbsweep.sweeping.configs.loading import load_sweep
from nbsweep.sweeping.configs.parameter_rules import find_warnings
from nbsweep.sweeping.configs.validation import nesting_problem, validate, with_default_command


class ProgramParameters(NamedTuple):
    """What the program notebook says of its parameters, for checking a sweep against."""

    names: list[str] | None
    """The names a sweep may set; None where they cannot be known (then none is refused)."""
    problems: list[str]
    notes: list[str]
    """What could not be checked, and why."""


def program_parameters(config: Any, config_var: str) -> ProgramParameters:
    """The notebook's parameter names to check the sweep against (sweep_config accepts a
    whole group and keys below an opaque default), or why the notebook cannot be read.
    Where the values go follows ``wandb_way.values_go_to_wandb_config``."""
    program = config.get("program") if isinstance(config, dict) else None
    if not program:
        return ProgramParameters(
            None, ["program: missing; name the notebook with program: NB.ipynb"], []
        )
    notebook = Path(str(program))
    if notebook.suffix != ".ipynb":
        problem = f"program: {program!r} is not a notebook (.ipynb); nbsweep runs notebooks"
        return ProgramParameters(None, [problem], [])
    from nbsweep.notebook.files import read_notebook
    from nbsweep.notebook.parameters import find_parameters, find_parameters_or_none
    from nbsweep.notebook.wandb_way import analyse, values_go_to_wandb_config

    try:
        nb = read_notebook(notebook)
        shape = analyse(nb)
    except UsageError as error:
        return ProgramParameters(None, [f"program: {error}"], [])
    found = find_parameters_or_none(nb, config_var)
    if not values_go_to_wandb_config(found, shape):
        if found is not None:
            return ProgramParameters(found.names(), [], [])
        try:
            find_parameters(nb, config_var)
        except UsageError as error:
            return ProgramParameters(None, [f"program: {error}"], [])
    syntax_error = shape.syntax_error()
    if syntax_error is not None:
        return ProgramParameters(None, [f"program: {syntax_error}"], [])
    notes = []
    if shape.agent is not None and not shape.function_is_readable:
        # Imported, a lambda, a partial: it runs, but which wandb.config keys it reads
        # cannot be seen from the notebook.
        notes.append(
            f"program: {notebook.name}'s sweep function {shape.agent_function} is not "
            "defined in the notebook, so which parameters it reads was not checked"
        )
    return ProgramParameters(shape.parameter_names() or None, [], notes)


@dataclass(frozen=True)
class CheckedSweep:
    """A sweep config ready to create: validated, with nbsweep's ``command`` if it had none."""

    config: dict[str, Any]
    notes: list[str]
    """Where nbsweep read a value as its writer meant, not as PyYAML alone would."""
    warnings: list[str]
    """What W&B accepts but is probably not what was meant."""


def check_sweep(
    source: Mapping[str, Any] | Path,
    *,
    project: str | None = None,
    config_var: str = "config",
    local: bool = False,
) -> CheckedSweep:
    """A sweep config (a dict, a sweep YAML, or a notebook that calls ``wandb.sweep``)
    checked as ``nbsweep sweep`` checks it; SweepConfigError lists every problem."""
    notes: list[str] = []
    if isinstance(source, Mapping):
        too_deep = nesting_problem(dict(source))  # before deepcopy, which recurses
        if too_deep:
            raise SweepConfigError([too_deep])
        config = copy.deepcopy(dict(source))
    else:
        loaded = load_sweep(Path(source))
        config = loaded.config
        notes = [f"{fix} (PyYAML alone would have read a string)" for fix in loaded.enotation_fixes]
    if project:
        config["project"] = project
    program = program_parameters(config, config_var)
    problems = sweep_problems(config, program, local)
    if problems:
        raise SweepConfigError(problems)
    notes += program.notes
    return CheckedSweep(with_default_command(config), notes, find_warnings(config))


def sweep_problems(config: dict[str, Any], program: ProgramParameters, local: bool) -> list[str]:
    """Every problem with creating ``config``: its program notebook, W&B's rules against the
    notebook's parameters, and for a local sweep the engine's own schema."""
    problems = program.problems + validate(config, program.names)
    if local and not problems:
        from nbsweep.local.engine import Engine

        engine = Engine(config)  # the engine's own schema, so local means what W&B means
        problems += [f"engine: {problem}" for problem in engine.problems()]
    return problems
