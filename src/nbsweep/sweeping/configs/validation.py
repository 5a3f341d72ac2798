"""Check a W&B sweep config the way the W&B server would, before ``wandb sweep`` sends it:
pure functions of the config (and of the notebook's parameter names), no I/O.

The rules are those of W&B's sweep JSON schema (wandb/sweeps ``config/schema.json``) and the
checks its validator adds (min < max, probabilities, grid needs enumerable parameters, bayes
and hyperband need a metric). Every problem is collected and reported at once, one line each:
where, what is wrong, what to do. Neither ``wandb`` nor ``sweeps`` is imported.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypeGuard

from nbsweep.notebook.literals import MAX_DEPTH, nesting_depth

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
# The schema's pattern for parameter names: dots and dashes too (Hydra- and gin-style names).
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_NUMBER_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

_RANGE, _NORMAL = ("min", "max"), ("mu", "sigma")
# Each W&B distribution: (the keys it needs, the keys it may have), besides `distribution`.
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "constant": (("value",), ()),
    "categorical": (("values",), ()),
    "categorical_w_probabilities": (("values", "probabilities"), ()),
    "int_uniform": (_RANGE, ()),
    "uniform": (_RANGE, ()),
    "q_uniform": (_RANGE, ("q",)),
    "log_uniform": (_RANGE, ()),
    "log_uniform_values": (_RANGE, ()),
    "q_log_uniform": (_RANGE, ("q",)),
    "q_log_uniform_values": (_RANGE, ("q",)),
    "inv_log_uniform": (_RANGE, ()),
    "inv_log_uniform_values": (_RANGE, ()),
    "normal": ((), _NORMAL),
    "q_normal": ((), (*_NORMAL, "q")),
    "log_normal": ((), _NORMAL),
    "q_log_normal": ((), (*_NORMAL, "q")),
    "beta": ((), ("a", "b")),
    "q_beta": ((), ("a", "b", "q")),
}
# What W&B's grid search can turn into lists of values; it refuses everything else.
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")
# The natural-log ("v1") distributions W&B deprecated, and what replaces each.
LEGACY_DISTRIBUTIONS = {
    "log_uniform": "log_uniform_values",
    "q_log_uniform": "q_log_uniform_values",
    "inv_log_uniform": "inv_log_uniform_values",
}


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
        *_check_parameters(config),
        *_check_early_terminate(config),
        *_check_command(config),
    ]
    if notebook_parameters is not None:
        problems += _check_notebook_names(config, list(notebook_parameters))
    return problems


def with_default_command(config: dict[str, Any]) -> dict[str, Any]:
    """A copy that runs the program with nbsweep when there is no ``command`` (W&B's default
    would run ``python NOTEBOOK.ipynb``); a user's own command is kept."""
    result = copy.deepcopy(config)
    result.setdefault("command", list(DEFAULT_COMMAND))
    return result


def find_warnings(config: Any) -> list[str]:
    """What W&B accepts but is probably not what was meant, one line each."""
    if not isinstance(config, dict):
        return []
    leaves = _leaves(config.get("parameters"), "parameters", "")
    return [warning for leaf in leaves for warning in (*_legacy(leaf), *_text_values(leaf))]


def _check_top_level(config: dict[str, Any]) -> Iterator[str]:
    yield from _mapping_problems(config, "", TOP_LEVEL_KEYS, "")
    for key in _TEXT_KEYS:
        if key in config and not isinstance(config[key], str):
            yield f"{key}: must be text, got {config[key]!r}"
    if "run_cap" in config and not _is_int(config["run_cap"], above=0):
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
    yield from _mapping_problems(metric, "metric", _METRIC_KEYS, "{name: val_loss, goal: minimize}")
    if not isinstance(metric, dict):
        return
    if not (isinstance(metric.get("name"), str) and metric["name"]):
        got = f"must be text, got {metric['name']!r}" if "name" in metric else "missing"
        yield f"metric.name: {got}; give the name of a metric the notebook logs"
    for key, choices in _METRIC_CHOICES.items():
        if key in metric and metric[key] not in choices:
            yield f"metric.{key}: {metric[key]!r} is not one of {', '.join(choices)}; use one"
    if "target" in metric and not _is_number(metric["target"]):
        yield f"metric.target: {_not_a_number(metric['target'])}"


class _Leaf(NamedTuple):
    """A swept parameter that is not a nested group. ``name`` is what the notebook sees
    (nested groups' names joined with dots), ``path`` where it is in the YAML."""

    name: str
    path: str
    spec: dict[str, Any]
    distribution: str | None


def _check_parameters(config: dict[str, Any]) -> Iterator[str]:
    if "parameters" not in config:
        yield "parameters: missing; add the parameters to sweep, e.g. lr: {values: [0.01, 0.1]}"
        return
    yield from _check_group(config["parameters"], "parameters")
    if config.get("method") == "grid":
        ranges = [
            f"{leaf.path} ({leaf.distribution})"
            for leaf in _leaves(config["parameters"], "parameters", "")
            if leaf.distribution in DISTRIBUTIONS and leaf.distribution not in GRID_DISTRIBUTIONS
        ]
        if ranges:
            yield (
                f"method: grid cannot enumerate {', '.join(ranges)}; give each a values list "
                "(or int_uniform, q_uniform), or use method random or bayes"
            )


def _check_group(group: Any, path: str) -> Iterator[str]:
    if not (isinstance(group, dict) and group):
        yield f"{path}: must be a mapping of parameter names to specs, got {group!r}"
        return
    for name, spec in group.items():
        if not (isinstance(name, str) and _PARAMETER_NAME.fullmatch(name)):
            yield f"{path}.{name}: not a parameter name; use letters, digits, _, . and - only"
        yield from _check_parameter(spec, f"{path}.{name}")


def _check_parameter(spec: Any, path: str) -> Iterator[str]:
    if not isinstance(spec, dict):
        yield (
            f"{path}: {spec!r} is not a parameter spec; write {{value: {spec!r}}} for a fixed "
            "value or {values: [...]} to sweep a list"
        )
    elif "parameters" in spec:
        if len(spec) > 1:
            others = ", ".join(str(key) for key in spec if key != "parameters")
            yield f"{path}: a nested group has only parameters, not {others}; move them inside"
        yield from _check_group(spec["parameters"], f"{path}.parameters")
    elif (name := _distribution_of(spec)) is None:
        yield f"{path}: nothing to sweep; give value, values, min and max, or a distribution"
    elif not (isinstance(name, str) and name in DISTRIBUTIONS):
        hint = _did_you_mean(name, DISTRIBUTIONS)
        yield f"{path}.distribution: {name!r} is not a W&B distribution{hint}"
    else:
        yield from _check_distribution(spec, path, name)


def _distribution_of(spec: dict[str, Any]) -> Any:
    """The distribution named, else the one W&B infers from the keys (None if none fits)."""
    if "distribution" in spec:
        return spec["distribution"]
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
    if "min" in spec or "max" in spec:
        # Like W&B: bounds written as whole numbers (no dot) sample ints.
        both_ints = _is_int(spec.get("min")) and _is_int(spec.get("max"))
        return "int_uniform" if both_ints else "uniform"
    return None


def _check_distribution(spec: dict[str, Any], path: str, name: str) -> Iterator[str]:
    required, optional = DISTRIBUTIONS[name]
    takes = (*required, *optional)
    for key in spec:
        if key != "distribution" and key not in takes:
            yield f"{path}.{key}: a {name} parameter takes only {', '.join(takes)}; remove it"
    for key in required:
        if key not in spec:
            yield f"{path}.{key}: missing; a {name} parameter needs {' and '.join(required)}"
    for key in takes:
        if key in spec and key not in ("value", "values", "probabilities"):
            yield from _check_number(spec[key], f"{path}.{key}", name)
    low, high = spec.get("min"), spec.get("max")
    if _is_number(low) and _is_number(high) and not low < high:
        yield f"{path}: min {low!r} is not less than max {high!r}; min must be the lower bound"
    if name.endswith("_values") and _is_number(low) and low <= 0:
        yield f"{path}.min: must be above 0, as {name} samples its values on a log scale"
    values = spec.get("values")
    if "values" in required and "values" in spec and not (isinstance(values, list) and values):
        yield f"{path}.values: must be a non-empty list, got {values!r}"
    if name == "categorical_w_probabilities" and "probabilities" in spec:
        yield from _check_probabilities(spec["probabilities"], values, path)


def _check_number(value: Any, path: str, distribution: str) -> Iterator[str]:
    key = path.rpartition(".")[2]
    if not _is_number(value):
        yield f"{path}: {_not_a_number(value)}"
    elif not math.isfinite(value):
        yield f"{path}: must be a finite number, got {value!r}"
    elif distribution == "int_uniform" and not _is_int(value):
        yield (
            f"{path}: {value!r} is not a whole number; int_uniform needs int bounds written "
            "without a dot (2, not 2.0), or use uniform for real numbers"
        )
    elif key == "q" and value <= 0:
        yield f"{path}: must be above 0 (the step samples are rounded to), got {value!r}"
    elif key in ("sigma", "a", "b") and value < 0:
        yield f"{path}: must be 0 or more, got {value!r}"


def _check_probabilities(probabilities: Any, values: Any, path: str) -> Iterator[str]:
    valid = isinstance(probabilities, list) and probabilities
    if not (valid and all(_is_number(p) and p >= 0 for p in probabilities)):
        yield f"{path}.probabilities: must be a list of numbers 0 or more, got {probabilities!r}"
        return
    if isinstance(values, list) and len(probabilities) != len(values):
        count = f"{len(probabilities)} probabilities for {len(values)} values"
        yield f"{path}.probabilities: {count}; give one per value"
    # numpy.isclose's tolerance, which W&B uses.
    if not math.isclose(total := sum(probabilities), 1.0, rel_tol=1e-5, abs_tol=1e-8):
        yield f"{path}.probabilities: add up to {total:g}, not 1; scale them to sum to 1"


def _leaves(group: Any, path: str, prefix: str) -> Iterator[_Leaf]:
    """Every swept parameter below ``group``, skipping what ``_check_group`` reports."""
    if not isinstance(group, dict):
        return
    for key, spec in group.items():
        if not isinstance(spec, dict):
            continue
        if "parameters" in spec:
            yield from _leaves(spec["parameters"], f"{path}.{key}.parameters", f"{prefix}{key}.")
        else:
            name = _distribution_of(spec)
            name = name if isinstance(name, str) else None  # not a distribution's name at all
            yield _Leaf(f"{prefix}{key}", f"{path}.{key}", spec, name)


def _check_notebook_names(config: dict[str, Any], known: list[str]) -> Iterator[str]:
    listed = ", ".join(known) or "none"
    for leaf in _leaves(config.get("parameters"), "parameters", ""):
        # As nbsweep's injection allows: a key inside a known parameter (a dict, or a default
        # nbsweep cannot read) merges into it, and a known group can be set whole.
        if not any(_same_or_nested(leaf.name, name) for name in known):
            yield (
                f"{leaf.path}: the notebook has no parameter {leaf.name!r}"
                f"{_did_you_mean(leaf.name, known)}; its parameters are: {listed}"
            )


def _same_or_nested(one: str, other: str) -> bool:
    return one == other or one.startswith(f"{other}.") or other.startswith(f"{one}.")


def _check_early_terminate(config: dict[str, Any]) -> Iterator[str]:
    if "early_terminate" not in config:
        return
    stop = config["early_terminate"]
    yield from _mapping_problems(stop, "early_terminate", _HYPERBAND_KEYS, "{type: hyperband}")
    if not isinstance(stop, dict):
        return
    if stop.get("type") != "hyperband":
        got = f"{stop['type']!r} is not supported" if "type" in stop else "missing"
        yield f"early_terminate.type: {got}; W&B's one kind is type: hyperband"
    if "min_iter" not in stop and not ("max_iter" in stop and "s" in stop):
        yield "early_terminate: give min_iter (the first step to stop runs at), or max_iter and s"
    for key in ("min_iter", "max_iter", "s"):
        if key in stop and not _is_int(stop[key], above=0):
            yield f"early_terminate.{key}: must be a whole number above 0, got {stop[key]!r}"
    if "eta" in stop and not (_is_number(stop["eta"]) and stop["eta"] > 1):
        yield f"early_terminate.eta: must be a number above 1, got {stop['eta']!r}"
    if not isinstance(stop.get("strict", True), bool):
        yield f"early_terminate.strict: must be true or false, got {stop['strict']!r}"


def _check_command(config: dict[str, Any]) -> Iterator[str]:
    command = config.get("command", [])
    if not isinstance(command, list):
        yield f"command: must be a list like {list(DEFAULT_COMMAND)}, got {command!r}"
        return
    # The agent str()s every item, so numbers are fine; null or a list is a YAML slip.
    bad = [item for item in command if not (isinstance(item, str) or _is_number(item))]
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


def _legacy(leaf: _Leaf) -> Iterator[str]:
    name, low, high = leaf.distribution, leaf.spec.get("min"), leaf.spec.get("max")
    newer = LEGACY_DISTRIBUTIONS.get(name or "")
    if name is not None and newer is not None and _is_number(low) and _is_number(high):
        yield _legacy_warning(leaf.path, name, newer, low, high)


def _legacy_warning(path: str, name: str, newer: str, low: float, high: float) -> str:
    sign = -1 if name.startswith("inv_") else 1
    # min(..., 700): math.exp overflows a little above 709.
    ends = sorted(math.exp(min(sign * bound, 700.0)) for bound in (low, high))
    sampled = f"min {low!r} and max {high!r} are natural-log exponents"
    sampled += f": it samples {ends[0]:.3g}..{ends[1]:.3g}"
    if 0 < low < high <= 1:  # exponents this small give values near 1: surely meant as values
        return f"{path}: {name}'s {sampled}; if you meant these values, use {newer}"
    return f"{path}: {name} is deprecated ({sampled}); W&B suggests {newer} instead"


def _text_values(leaf: _Leaf) -> Iterator[str]:
    values = leaf.spec.get("values")
    items = [leaf.spec.get("value"), *(values if isinstance(values, list) else [])]
    texts = [repr(item) for item in items if isinstance(item, str) and _looks_typed(item)]
    if texts:
        yield (
            f"{leaf.path}: {', '.join(texts)} {'is' if len(texts) == 1 else 'are'} text, so the "
            "notebook gets a string; for a boolean, None or a number write true, false, null "
            "or 1.0e-5 unquoted"
        )


def _looks_typed(text: str) -> bool:
    """True for text that reads as a boolean, None or number: 'true', 'None', '1e-5'.
    ('none', 'yes' or 'off' are left alone: they are common option names.)"""
    stripped = text.strip()
    return (
        stripped.lower() in ("true", "false")
        or stripped in ("None", "null", "Null", "NULL", "~")
        or bool(_NUMBER_TEXT.fullmatch(stripped))
    )


def _mapping_problems(value: Any, path: str, keys: tuple[str, ...], example: str) -> Iterator[str]:
    if not isinstance(value, dict):
        yield f"{path}: must be a mapping like {example}, got {value!r}"
        return
    for key in value:
        if key not in keys:
            where = f"{path}.{key}" if path else str(key)
            hint = _did_you_mean(key, keys)
            yield f"{where}: unknown key{hint}; W&B refuses keys it does not know, so remove it"


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any, above: int | None = None) -> bool:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return is_int and (above is None or value > above)


def _not_a_number(value: Any) -> str:
    if not (isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip())):
        return f"must be a number, got {value!r}"
    fixed = _yaml_float(value)
    # PyYAML (YAML 1.1), which `wandb sweep` uses, wants both to read e-notation as a number.
    why = " (with a dot and a signed exponent, every YAML loader reads a number)"
    return f"{value!r} is text, not a number; write it unquoted as {fixed}" + (
        why if "e" in fixed else ""
    )


def _yaml_float(text: str) -> str:
    """``1e-5`` as PyYAML's YAML 1.1 float pattern wants it: ``1.0e-5``."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    if not exponent:
        return mantissa
    mantissa += "" if "." in mantissa else ".0"
    return f"{mantissa}e{exponent if exponent[0] in '+-' else '+' + exponent}"


def _did_you_mean(word: Any, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
