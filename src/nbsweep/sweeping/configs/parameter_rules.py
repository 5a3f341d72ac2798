"""W&B's rules for a sweep's ``parameters:``: each parameter's distribution and the keys and
bounds it takes, what grid search can enumerate, the names the notebook declares, and the
warnings for what W&B accepts but was probably not meant. Pure functions of the config."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any, NamedTuple

from nbsweep.sweeping.configs.value_checks import (
    NUMBER_TEXT,
    did_you_mean,
    is_int,
    is_number,
    not_a_number,
)

# The schema's pattern for parameter names: dots and dashes too (Hydra- and gin-style names).
_PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")

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


def find_warnings(config: Any) -> list[str]:
    """What W&B accepts but is probably not what was meant, one line each."""
    if not isinstance(config, dict):
        return []
    leaves = _leaves(config.get("parameters"), "parameters", "")
    return [warning for leaf in leaves for warning in (*_legacy(leaf), *_text_values(leaf))]


class _Leaf(NamedTuple):
    """A swept parameter that is not a nested group. ``name`` is what the notebook sees
    (nested groups' names joined with dots), ``path`` where it is in the YAML."""

    name: str
    path: str
    spec: dict[str, Any]
    distribution: str | None


def check_parameters(config: dict[str, Any]) -> Iterator[str]:
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
        hint = did_you_mean(name, DISTRIBUTIONS)
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
        both_ints = is_int(spec.get("min")) and is_int(spec.get("max"))
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
    if is_number(low) and is_number(high) and not low < high:
        yield f"{path}: min {low!r} is not less than max {high!r}; min must be the lower bound"
    if name.endswith("_values") and is_number(low) and low <= 0:
        yield f"{path}.min: must be above 0, as {name} samples its values on a log scale"
    values = spec.get("values")
    if "values" in required and "values" in spec and not (isinstance(values, list) and values):
        yield f"{path}.values: must be a non-empty list, got {values!r}"
    if name == "categorical_w_probabilities" and "probabilities" in spec:
        yield from _check_probabilities(spec["probabilities"], values, path)


def _check_number(value: Any, path: str, distribution: str) -> Iterator[str]:
    key = path.rpartition(".")[2]
    if not is_number(value):
        yield f"{path}: {not_a_number(value)}"
    elif not math.isfinite(value):
        yield f"{path}: must be a finite number, got {value!r}"
    elif distribution == "int_uniform" and not is_int(value):
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
    if not (valid and all(is_number(p) and p >= 0 for p in probabilities)):
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


def check_notebook_names(config: dict[str, Any], known: list[str]) -> Iterator[str]:
    listed = ", ".join(known) or "none"
    for leaf in _leaves(config.get("parameters"), "parameters", ""):
        # As nbsweep's injection allows: a key inside a known parameter (a dict, or a default
        # nbsweep cannot read) merges into it, and a known group can be set whole.
        if not any(_same_or_nested(leaf.name, name) for name in known):
            yield (
                f"{leaf.path}: the notebook has no parameter {leaf.name!r}"
                f"{did_you_mean(leaf.name, known)}; its parameters are: {listed}"
            )


def _same_or_nested(one: str, other: str) -> bool:
    return one == other or one.startswith(f"{other}.") or other.startswith(f"{one}.")


def _legacy(leaf: _Leaf) -> Iterator[str]:
    name, low, high = leaf.distribution, leaf.spec.get("min"), leaf.spec.get("max")
    newer = LEGACY_DISTRIBUTIONS.get(name or "")
    if name is not None and newer is not None and is_number(low) and is_number(high):
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
        or bool(NUMBER_TEXT.fullmatch(stripped))
    )
