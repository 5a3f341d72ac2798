"""A notebook's parameters and setup as ``nbsweep inspect`` shows them
(``inspect_notebook``): a table, JSON, or a starter sweep YAML."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from nbformat import NotebookNode

from nbsweep.errors import NotebookError
from nbsweep.notebook.files import read_notebook
from nbsweep.notebook.parameters import (
    Parameter,
    ParameterSet,
    find_parameters,
    find_parameters_or_none,
    parse_leniently,
)
from nbsweep.notebook.setup import SetupPlan, plan_setup
from nbsweep.notebook.wandb_way import (
    NotebookSweep,
    analyse,
    sweep_parameter_leaves,
    values_go_to_wandb_config,
)
from nbsweep.options import DEFAULT_CONFIG_VAR
from nbsweep.sweeping.configs.loading import notebook_sweep_config, yaml_text
from nbsweep.sweeping.configs.validation import DEFAULT_COMMAND, with_default_command

InspectForm = Literal["table", "json", "sweep-template"]


def inspect_notebook(
    notebook: Path,
    form: InspectForm = "table",
    *,
    config_var: str = DEFAULT_CONFIG_VAR,
    sweep_function: str | None = None,
) -> str:
    """The parameters ``notebook`` declares and how nbsweep found them (a parameters cell,
    a config dict, or the notebook's own wandb.sweep / wandb.agent calls), and its setup
    (the cells before a trial's values enter), as text to print: a table, JSON, or a starter
    sweep YAML."""
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
    declared = None if to_wandb_config else found
    if form == "sweep-template":
        if to_wandb_config and not own_sweep:
            return _READS_WANDB_CONFIG
        if own_sweep:
            return yaml_text(with_default_command(notebook_sweep_config(notebook, shape)))
        return sweep_template_yaml(notebook, declared, nb) if declared is not None else ""
    setup = plan_setup(nb, config_var=config_var, sweep_function=sweep_function)
    if form == "json":
        data: dict[str, Any] = parameters_json(declared) if declared else {"style": "wandb"}
        if own_sweep:
            data["wandb"] = wandb_sweep_json(shape)
        if found is not None and declared is None:
            data["config_dict_left_alone"] = {"name": found.config_var, "cell": found.cell_index}
        data["setup"] = setup_json(setup)
        return json.dumps(data, indent=2) + "\n"
    parts = [parameters_table(declared)] if declared is not None else []
    if to_wandb_config and not own_sweep:
        parts.append(_READS_WANDB_CONFIG)
    if own_sweep:
        parts.append(wandb_sweep_table(shape))
    if found is not None and declared is None:
        parts.append(
            f"{found.config_var} (cell {found.cell_index}) is left as it is: the notebook "
            "runs its own sweep, so trials' values go to wandb.config\n"
        )
    parts.append(setup_table(setup))
    return "\n".join(parts)


_READS_WANDB_CONFIG = (
    "no parameters cell or config dict: the notebook reads wandb.config, where "
    "nbsweep puts each trial's values; the sweep YAML names them\n"
)


def setup_table(plan: SetupPlan) -> str:
    """The setup and the fork point, for a person: one line."""
    if not plan.cells:
        return f"setup: none (trials start at {plan.fork_point})\n"
    first, last = plan.file_cells[0], plan.file_cells[-1]
    cells = f"cells {first}-{last}" if last > first else f"cell {first}"
    count = len(plan.cells)
    code = f"{count} code cell{'s' if count > 1 else ''}"
    return (
        f"setup (run once per agent, trials fork after it): {cells} ({code}); "
        f"trials start at {plan.fork_point}\n"
    )


def setup_json(plan: SetupPlan) -> dict[str, Any]:
    return {
        "cells": list(plan.file_cells),
        "fork_point": plan.fork_point,
        "fork_cell": plan.fork_cell,
    }


def _source(found: ParameterSet, parameter: Parameter) -> str:
    if found.style == "config-dict":
        return f"cell {parameter.cell_index} line {parameter.line} ({found.config_var} dict)"
    return f"cell {parameter.cell_index} line {parameter.line} (parameters cell)"


def parameters_json(found: ParameterSet) -> dict[str, Any]:
    return {
        "style": found.style,
        "cell_index": found.cell_index,
        "config_var": found.config_var,
        "parameters": [
            {
                "name": p.name,
                "default": p.default if p.is_literal and _jsonable(p.default) else None,
                "default_source": p.default_source,
                "type": p.type_name,
                "cell_index": p.cell_index,
                "line": p.line,
            }
            for p in found.parameters
        ],
    }


def parameters_table(found: ParameterSet) -> str:
    rows = [("name", "default", "type", "source")]
    for parameter in found.parameters:
        default = " ".join(parameter.default_source.split())
        if len(default) > 40:
            default = default[:37] + "..."
        rows.append((parameter.name, default, parameter.type_name, _source(found, parameter)))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def sweep_template_yaml(notebook: Path, found: ParameterSet, nb: NotebookNode) -> str:
    """A sweep config to start from: every parameter with a range around its default."""
    metric = _logged_metric_names(nb)
    chosen = next((name for name in metric if "val" in name), metric[0] if metric else "val_loss")
    goal = (
        "maximize"
        if any(word in chosen for word in ("acc", "f1", "auc", "score"))
        else ("minimize")
    )
    config = {
        "program": str(notebook),
        "command": list(DEFAULT_COMMAND),
        "method": "random",
        "metric": {"name": chosen, "goal": goal},
        "parameters": {p.name: _distribution(p) for p in found.parameters},
    }
    header = (
        "# Starter sweep for this notebook: edit the ranges, then\n"
        "#   wandb sweep sweep.yaml   and   wandb agent SWEEP_ID\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def _distribution(parameter: Parameter) -> dict[str, Any]:
    default = parameter.default
    if not parameter.is_literal:
        return {"value": parameter.default_source}
    if type(default) is bool:
        return {"values": [True, False]}
    if type(default) is int and default > 1:
        return {"distribution": "int_uniform", "min": default // 2, "max": default * 2}
    if type(default) is float and math.isfinite(default):
        if default > 0:
            return {"distribution": "log_uniform_values", "min": default / 10, "max": default * 10}
        return {"distribution": "uniform", "min": default - 1.0, "max": default + 1.0}
    if _jsonable(default):
        return {"values": [default]}
    return {"value": parameter.default_source}


def _logged_metric_names(nb: NotebookNode) -> list[str]:
    """Keys of dict literals passed to ``nbsweep.log(...)`` or ``wandb.log(...)``."""
    names: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        module, _ = parse_leniently(cell.source)
        for node in ast.walk(module):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "log"
                and node.args
                and isinstance(node.args[0], ast.Dict)
            ):
                for key in node.args[0].keys:
                    if (
                        isinstance(key, ast.Constant)
                        and isinstance(key.value, str)
                        and key.value not in names
                    ):
                        names.append(key.value)
    return names


def _jsonable(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(map(_jsonable, value))
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def wandb_sweep_table(shape: NotebookSweep) -> str:
    """What the notebook's own ``wandb.sweep``/``wandb.agent`` calls say, for a person."""
    lines: list[str] = []
    if shape.sweep_cell is not None:
        config = shape.config or {}
        metric = config.get("metric") if isinstance(config.get("metric"), dict) else {}
        described = [
            f"wandb.sweep gets {shape.config_name or 'a dict'} (cell {shape.sweep_cell})",
            f"method {config.get('method', '?')}",
        ]
        if metric:
            described.append(f"metric {metric.get('name')} ({metric.get('goal', 'minimize')})")
        if shape.project:
            described.append(f"project {shape.project}")
        lines.append(", ".join(described))
    if shape.config is not None:
        rows = [("name", "distribution", "source")]
        for name, spec in sweep_parameter_leaves(shape.config):
            rows.append((name, _describe_spec(spec), f"sweep config (cell {shape.sweep_cell})"))
        widths = [max(len(row[column]) for row in rows) for column in range(2)]
        lines.extend(
            f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}".rstrip()
            for row in rows
        )
    for index, call in enumerate(shape.agent_calls):
        count = f", count={call.count}" if call.count is not None else ""
        where = f"wandb.agent calls {call.function or '?'} (cell {call.cell}{count})"
        if index == shape.chosen:
            lines.append(f"{where}: nbsweep runs it once per trial, each trial in a fresh kernel")
        else:
            lines.append(f"{where}: skipped in trials (--sweep-function {call.function} runs it)")
    if shape.defaults:
        listed = ", ".join(f"{name}={value!r}" for name, value in shape.defaults.items())
        lines.append(f"defaults given to wandb.init / wandb.config: {listed}")
    lines.extend(f"problem: {problem}" for problem in shape.problems)
    return "\n".join(lines) + "\n"


def wandb_sweep_json(shape: NotebookSweep) -> dict[str, Any]:
    return {
        "sweep_config": shape.config,
        "config_name": shape.config_name,
        "sweep_cell": shape.sweep_cell,
        "project": shape.project,
        "entity": shape.entity,
        "agent_function": shape.agent_function,
        "agent_cell": shape.agent_cell,
        "agent_count": shape.agent_count,
        "agent_calls": [
            {**dataclasses.asdict(call), "runs_in_trials": index == shape.chosen}
            for index, call in enumerate(shape.agent_calls)
        ],
        "syntax_errors": list(shape.syntax_errors),
        "parameters": shape.parameter_names(),
        "defaults": shape.defaults,
        "problems": list(shape.problems),
    }


def _describe_spec(spec: Any) -> str:
    if not isinstance(spec, dict):
        return repr(spec)
    if "value" in spec:
        return f"value: {spec['value']!r}"
    if "values" in spec:
        return "values: " + ", ".join(map(str, spec["values"]))
    bounds = ", ".join(f"{key} {spec[key]}" for key in ("min", "max", "mu", "sigma") if key in spec)
    return f"{spec.get('distribution', 'uniform')}: {bounds}".rstrip(": ")
