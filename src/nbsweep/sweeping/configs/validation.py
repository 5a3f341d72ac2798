"""Check a W&B sweep config the way the W&B server would, before ``wandb sweep`` sends it:
pure functions of the config (and of the notebook's parameter names), no I/O. The rules
for ``parameters:`` are in ``parameter_rules``.

The rules are those of W&B's sweep JSON schema (wandb/sweeps ``config/schema.json``) and the
checks its validator adds (min < max, probabilities, grid needs enumerable parameters, bayes
and hyperband need a metric). Every problem is collected and reported at once, one line each:
where, what is wrong, what to do. Neither ``wandb`` nor ``sweeps`` is imported.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from nbsweep.notebook.literals import MAX_DEPTH, nesting_depth
from nbsweep.sweeping.configs.parameter_rules import check_notebook_names, check_parameters
from nbsweep.sweeping.configs.value_checks import (
    is_int,
    is_number,
    mapping_problems,
    not_a_number,
)

METHODS = ("grid", "random", "bayes")
# "--": whatever ${args} holds is a parameter, never one of `nbsweep run`'s options.
DEFAULT_COMMAND = ("nbsweep", "run", "${program}", "--", "${args}")
RUN_OPTIONS = (
    "allow-unknown", "args-json", "config-var", "cwd", "help", "html", "kernel", "log-output",
    "metric", "metrics-json", "output", "parameter", "parameter-raw", "parameters-file",
    "run-install-cells", "stop-grace", "sweep-function", "timeout", "trial-timeout",
)  # fmt: skip
"""`nbsweep run`'s long options, which a parameter of the same name passed as --NAME=VALUE
before a ``--`` would set instead."""
# W&B's macros that pass each parameter as --NAME=VALUE (or --NAME VALUE).
_HYPHENATED_ARGS = ("${args}", "${args_no_equals}", "${args_no_boolean_flags}")
TOP_LEVEL_KEYS = (
    "apiVersion", "command", "controller", "description", "early_terminate", "entity",
    "image_uri", "job", "kind", "method", "metric", "metrics", "name", "parameters",
    "program", "project", "run_cap", "scheduler",
)  # fmt: skip
_TEXT_KEYS = (
    "apiVersion", "description", "entity", "image_uri", "job", "name", "program", "project",
)  # fmt: skip
_METRIC_CHOICES = {
    "goal": ("minimize", "maximize"),
    "impute": ("latest", "best", "worst"),
    "impute_while_running": ("latest", "best", "worst", "false"),
}
_METRIC_KEYS = ("name", "target", *_METRIC_CHOICES)
_HYPERBAND_KEYS = ("type", "min_iter", "max_iter", "s", "eta", "strict")


def validate(config: Any, notebook_parameters: Collection[str] | None = None) -> list[str]:
    """Every problem W&B would have with ``config`` (and, given its parameter names, the
    notebook), one line each; empty when there is none."""
    if not isinstance(config, dict):
        got = "nothing (an empty file)" if config is None else repr(config)
        return [f"the sweep config must be a mapping (method: ..., parameters: ...), got {got}"]
    too_deep = nesting_problem(config)
    if too_deep:
        return [too_deep]  # alone: the other checks repr values, which recurses
    problems = [
        *_check_top_level(config),
        *_check_method(config),
        *_check_metric(config),
        *check_parameters(config),
        *_check_early_terminate(config),
        *_check_command(config),
    ]
    if notebook_parameters is not None:
        problems += check_notebook_names(config, list(notebook_parameters))
    return problems


def with_default_command(config: dict[str, Any]) -> dict[str, Any]:
    """A copy that runs the program with nbsweep when there is no ``command`` (W&B's default
    would run ``python NOTEBOOK.ipynb``); a user's own command is kept."""
    result = copy.deepcopy(config)
    result.setdefault("command", list(DEFAULT_COMMAND))
    return result


def _check_top_level(config: dict[str, Any]) -> Iterator[str]:
    yield from mapping_problems(config, "", TOP_LEVEL_KEYS, "")
    for key in _TEXT_KEYS:
        if key in config and not isinstance(config[key], str):
            yield f"{key}: must be text, got {config[key]!r}"
    if "run_cap" in config and not is_int(config["run_cap"], above=0):
        yield f"run_cap: must be a whole number above 0, got {config['run_cap']!r}"
    if "scheduler" in config:
        # W&B runs a sweep scheduler as a Launch job, not through agents running a program.
        yield "scheduler: a sweep scheduler runs W&B Launch jobs, which nbsweep does not; remove it"
    if config.get("kind", "sweep") != "sweep":
        yield f"kind: must be sweep, got {config['kind']!r}"
    controller = config.get("controller", {"type": "cloud"})
    if not (isinstance(controller, dict) and controller.get("type") in ("cloud", "local")):
        yield f"controller: must be {{type: cloud}} or {{type: local}}, got {controller!r}"


def _check_method(config: dict[str, Any]) -> Iterator[str]:
    method = config.get("method")
    if "method" not in config:
        yield "method: missing; add method: random, grid or bayes"
    elif method == "custom":
        yield "method: custom needs a custom scheduler, which nbsweep does not run; use another"
    elif method not in METHODS:
        yield f"method: {method!r} is not a W&B search method; use grid, random or bayes"


def _check_metric(config: dict[str, Any]) -> Iterator[str]:
    if "metrics" in config:
        yield (
            "metrics: several objectives need method: custom, which nbsweep does not run; "
            "optimize one: metric: {name: NAME, goal: minimize or maximize}"
        )
    users = ["bayes search"] if config.get("method") == "bayes" else []
    users += ["hyperband"] if "early_terminate" in config else []
    if "metric" not in config:
        if users:
            yield (
                f"metric: missing, and {' and '.join(users)} cannot rank runs without it; add "
                "metric: {name: NAME, goal: minimize or maximize}, NAME a metric the notebook logs"
            )
        return
    metric = config["metric"]
    yield from mapping_problems(metric, "metric", _METRIC_KEYS, "{name: val_loss, goal: minimize}")
    if not isinstance(metric, dict):
        return
    if not (isinstance(metric.get("name"), str) and metric["name"]):
        got = f"must be text, got {metric['name']!r}" if "name" in metric else "missing"
        yield f"metric.name: {got}; give the name of a metric the notebook logs"
    for key, choices in _METRIC_CHOICES.items():
        if key in metric and metric[key] not in choices:
            yield f"metric.{key}: {metric[key]!r} is not one of {', '.join(choices)}; use one"
    if "target" in metric and not is_number(metric["target"]):
        yield f"metric.target: {not_a_number(metric['target'])}"


def _check_early_terminate(config: dict[str, Any]) -> Iterator[str]:
    if "early_terminate" not in config:
        return
    stop = config["early_terminate"]
    yield from mapping_problems(stop, "early_terminate", _HYPERBAND_KEYS, "{type: hyperband}")
    if not isinstance(stop, dict):
        return
    if stop.get("type") != "hyperband":
        got = f"{stop['type']!r} is not supported" if "type" in stop else "missing"
        yield f"early_terminate.type: {got}; W&B's one kind is type: hyperband"
    if "min_iter" not in stop and not ("max_iter" in stop and "s" in stop):
        yield "early_terminate: give min_iter (the first step to stop runs at), or max_iter and s"
    for key in ("min_iter", "max_iter", "s"):
        if key in stop and not is_int(stop[key], above=0):
            yield f"early_terminate.{key}: must be a whole number above 0, got {stop[key]!r}"
    if "eta" in stop and not (is_number(stop["eta"]) and stop["eta"] > 1):
        yield f"early_terminate.eta: must be a number above 1, got {stop['eta']!r}"
    if not isinstance(stop.get("strict", True), bool):
        yield f"early_terminate.strict: must be true or false, got {stop['strict']!r}"


def _check_command(config: dict[str, Any]) -> Iterator[str]:
    command = config.get("command", [])
    if not isinstance(command, list):
        yield f"command: must be a list like {list(DEFAULT_COMMAND)}, got {command!r}"
        return
    # The agent str()s every item, so numbers are fine; null or a list is a YAML slip.
    bad = [item for item in command if not (isinstance(item, str) or is_number(item))]
    if bad:
        yield f"command: items must be text or numbers, not {', '.join(map(repr, bad))}"
    runs_nbsweep = any(
        Path(str(item)).name == "nbsweep" and after == "run"
        for item, after in itertools.pairwise(command)
    )
    # Before a --, `nbsweep run` reads --timeout=5 as its own option, not a parameter.
    unseparated = [
        item for place, item in enumerate(command)
        if item in _HYPHENATED_ARGS and "--" not in command[:place]
    ]  # fmt: skip
    parameters = config.get("parameters")
    if not (runs_nbsweep and unseparated and isinstance(parameters, dict)):
        return
    for name in parameters:
        if name in RUN_OPTIONS:
            yield (
                f"parameters.{name}: `nbsweep run` would take {unseparated[0]}'s --{name}=VALUE "
                f"as its own --{name} option; put -- before {unseparated[0]} in command: (as "
                "the default command does) or rename the parameter"
            )


def nesting_problem(config: Mapping[str, Any]) -> str | None:
    """Where ``config`` nests deeper than ``MAX_DEPTH`` (the path down its deepest keys), as
    a problem; None where it does not. Counted without recursion."""
    if nesting_depth(config) <= MAX_DEPTH:
        return None
    path: list[str] = []
    node: Any = config
    while isinstance(node, Mapping) and node:
        key, node = max(node.items(), key=lambda item: nesting_depth(item[1]))
        path.append(str(key))
    return (
        f"{'.'.join(path)}: nests more than {MAX_DEPTH} levels deep; nbsweep takes sweep "
        f"configs and values nested at most {MAX_DEPTH} levels"
    )
