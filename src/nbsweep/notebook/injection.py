"""Inject a trial's values into a notebook: a pure function of (notebook, values).

The injected code is a new cell tagged ``injected-parameters`` placed right after the
parameters (or right after the ``config`` assignment). Re-injecting replaces that cell.
Values become literals through ``nbsweep.notebook.literals``; names must be (dotted) identifiers.
"""

from __future__ import annotations

import copy
import difflib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nbformat import NotebookNode
from nbformat.corpus.words import generate_corpus_id as random_cell_id

from nbsweep.errors import NotebookError, ParameterError
from nbsweep.notebook.literals import refuse_too_deep, to_literal
from nbsweep.notebook.parameters import (
    CONTINUED_TAG,
    DEFAULT_CONFIG_VAR,
    INJECTED_TAG,
    OPAQUE,
    Leaf,
    ParameterSet,
    find_parameters,
    find_parameters_or_none,
    is_parameter_name,
)
from nbsweep.notebook.wandb_way import (
    NotebookSweep,
    SweepFunction,
    analyse,
    values_go_to_wandb_config,
)

# Cells earlier tools added to mark a failure; they would be stale in a new run.
_STALE_TAGS = ("papermill-error-cell-tag",)

_MERGE_HELPER = '''\
def _nbsweep_merge(base, updates):
    """Deep-merge updates into base, in place; keys the trial does not set keep their value."""
    if not isinstance(base, dict):
        return updates
    for key, value in updates.items():
        base[key] = _nbsweep_merge(base.get(key), value) if isinstance(value, dict) else value
    return base
'''


@dataclass(frozen=True)
class Injection:
    """The outcome of ``parameterize``."""

    notebook: NotebookNode
    values: dict[str, Any]
    """The nested values injected, after type sanity."""
    warnings: tuple[str, ...]
    parameters: ParameterSet | None
    injected_cell_index: int | None
    origins: tuple[int | None, ...]
    """For each cell of ``notebook``: its index in the notebook as read, None if injected."""
    sweep_function: SweepFunction | None = None
    """The ``wandb.agent`` call the trial runs, where the notebook has any."""

    def source_index(self, index: int) -> int | None:
        return self.origins[index] if 0 <= index < len(self.origins) else None


Values = Mapping[str, Any] | Iterable[tuple[str, Any]]


def nest(values: Values) -> dict[str, Any]:
    """``{"opt.beta1": 0.9, "lr": 1}`` -> ``{"opt": {"beta1": 0.9}, "lr": 1}``.

    ``values`` may be a list of (name, value) pairs; later pairs deep-merge over earlier ones.
    """
    nested: dict[str, Any] = {}
    pairs = values.items() if isinstance(values, Mapping) else values
    for name, value in pairs:
        if not isinstance(name, str) or not is_parameter_name(name):
            raise ParameterError(
                f"{name!r} is not a parameter name: use a Python identifier, or dotted "
                "identifiers (opt.beta1) for nested keys"
            )
        *parents, leaf = name.split(".")
        refuse_too_deep(name, value, len(parents))  # before merging, which copies recursively
        node = nested
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = deep_merge(node.get(leaf), value)
    return nested


def deep_merge(base: Any, update: Any) -> Any:
    """``update`` merged into a copy of ``base`` where both are dicts, else ``update``."""
    if not (isinstance(base, dict) and isinstance(update, dict)):
        return copy.deepcopy(update)
    merged = dict(base)
    for key, value in update.items():
        merged[key] = deep_merge(merged.get(key), value)
    return merged


def clean(nb: NotebookNode) -> tuple[NotebookNode, list[int | None]]:
    """A copy without earlier injections, stale error cells, outputs and run metadata,
    and for each of its cells the index it had in ``nb``."""
    nb = copy.deepcopy(nb)
    cells: list[NotebookNode] = []
    origins: list[int | None] = []
    for index, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        if INJECTED_TAG in tags or any(tag in tags for tag in _STALE_TAGS):
            continue
        if CONTINUED_TAG in tags and cells and cells[-1].cell_type == "code":
            cells[-1].source = cells[-1].source.rstrip("\n") + "\n" + cell.source
            continue
        for key in ("papermill", "execution", "nbsweep"):  # a saved trial run again
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cells.append(cell)
        origins.append(index)
    nb.cells = cells
    for key in ("papermill", "nbsweep"):
        nb.metadata.pop(key, None)
    return nb, origins


def parameterize(
    nb: NotebookNode,
    values: Values,
    *,
    config_var: str = DEFAULT_CONFIG_VAR,
    allow_unknown: bool = False,
    sweep_function: str | None = None,
) -> Injection:
    """Inject ``values`` (flat dotted names, or nested dicts) into a clean copy of ``nb``.

    Safe to run twice on its own output. With no values the notebook is only cleaned.
    ``sweep_function``: which ``wandb.agent`` call's function trials run (None: the last).
    """
    nb, origins = clean(nb)
    pairs = list(values.items() if isinstance(values, Mapping) else values)
    nested = nest(pairs)
    language = notebook_language(nb)
    shape = analyse(nb, sweep_function) if language == "python" else NotebookSweep()
    chosen = shape.sweep_function()
    if not nested:
        return Injection(nb, {}, (), None, None, tuple(origins), chosen)
    if language != "python":
        raise NotebookError(
            f"nbsweep injects Python, but this notebook's language is {language!r}: "
            "run it without parameters or use a Python kernel"
        )
    found = find_parameters_or_none(nb, config_var)
    if values_go_to_wandb_config(found, shape) or found is None:
        return _for_wandb_config(nb, nested, origins, shape, config_var, allow_unknown)
    if not allow_unknown:
        names = [name for name, _ in pairs]
        _check_known(nested, found.tree, found.names(), "the notebook's parameters are", names)
    warnings: list[str] = []
    nested = _coerce(nested, found.tree, "", warnings)
    source = _render(nested, found)
    cell = _code_cell(source, INJECTED_TAG)
    position = _insert(nb, found, cell)
    split = found.style == "config-dict" and not found.statement_is_last
    origins[position:position] = [None, origins[found.cell_index]] if split else [None]
    return Injection(nb, nested, tuple(warnings), found, position, tuple(origins), chosen)


def notebook_language(nb: NotebookNode) -> str:
    """The notebook's language in lower case: its kernelspec's, else its language_info's,
    else python."""
    kernelspec = nb.metadata.get("kernelspec", {})
    language = kernelspec.get("language") or nb.metadata.get("language_info", {}).get("name")
    return (language or "python").lower()


def _for_wandb_config(
    nb: NotebookNode,
    nested: dict[str, Any],
    origins: list[int | None],
    shape: NotebookSweep,
    config_var: str,
    allow_unknown: bool,
) -> Injection:
    """A notebook whose values go to ``wandb.config`` (W&B's tutorials; see
    ``values_go_to_wandb_config``): nothing is injected; the kernel's ``wandb.init`` gets
    the values. Where the notebook's sweep names its parameters, the values are checked."""
    if not (shape.has_own_sweep or shape.reads_wandb_config):
        find_parameters(nb, config_var)  # raises: says how to declare parameters
    names = [name for name in shape.parameter_names() if is_parameter_name(name)]
    if names and not allow_unknown:
        tree = nest([(name, OPAQUE) for name in names])
        _check_known(nested, tree, names, "the notebook's sweep parameters are")
    return Injection(nb, nested, (), None, None, tuple(origins), shape.sweep_function())


def _check_known(
    nested: dict[str, Any], tree: Any, known: list[str], listing: str, names: Iterable[str] = ()
) -> None:
    unknown = _unknown_names(nested, tree, "") + _under_scalars(names, tree)
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    listed = ", ".join(known) if known else "none"
    raise ParameterError(
        f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
        f"{listing}: {listed}. Pass --allow-unknown (allow_unknown=True) to inject anyway"
    )


def _unknown_names(values: dict[str, Any], tree: Any, prefix: str) -> list[str]:
    if tree is OPAQUE:
        return []
    unknown: list[str] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if not isinstance(tree, dict) or key not in tree:
            unknown.append(name)
        elif isinstance(value, dict) and isinstance(tree[key], dict):
            unknown.extend(_unknown_names(value, tree[key], name + "."))
    return unknown


def _under_scalars(names: Iterable[str], tree: Any) -> list[str]:
    """Dotted names that reach below a scalar default (``lr.x`` where ``lr = 0.1``): keys
    it does not have. (A dict value for it is the whole new value, as written.)"""
    found: list[str] = []
    for name in names:
        node = tree
        for part in name.split(".")[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, Leaf):
                found.append(name)
            if not isinstance(node, dict):
                break
    return found


def _coerce(values: dict[str, Any], tree: Any, prefix: str, warnings: list[str]) -> dict:
    """Type sanity against literal defaults: ints for float defaults become floats,
    numeric strings for number defaults become numbers (with a warning)."""
    result: dict[str, Any] = {}
    for key, value in values.items():
        node = tree.get(key) if isinstance(tree, dict) else None
        name = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(node, dict):
            result[key] = _coerce(value, node, name + ".", warnings)
        elif isinstance(node, Leaf):
            result[key] = coerce_to_default(name, value, node.default, warnings)
        else:
            result[key] = value
    return result


def coerce_to_default(name: str, value: Any, default: Any, warnings: list[str]) -> Any:
    """The value to inject for a parameter whose literal default is ``default``."""
    default_is_number = type(default) in (int, float)
    if type(default) is float and type(value) is int:
        return float(value)
    if type(default) is int and type(value) is float and value.is_integer():
        warnings.append(
            f"{name}: {value!r} was injected as the int {int(value)} because the notebook's "
            "default is an int (W&B's q_uniform gives whole floats)"
        )
        return int(value)
    if default_is_number and isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        converted: int | float = number
        if type(default) is int and number.is_integer():
            converted = int(number)
        warnings.append(
            f"{name}: the string {value!r} was injected as the number {converted!r} because "
            "the notebook's default is a number (YAML reads 1e-5 without a dot as a string)"
        )
        return converted
    return value


def _render(nested: dict[str, Any], found: ParameterSet) -> str:
    lines = ["# Parameters injected by nbsweep"]
    if found.style == "config-dict":
        lines += [_MERGE_HELPER, f"_nbsweep_merge({found.config_var}, {to_literal(nested)})"]
        lines.append("del _nbsweep_merge")
        return "\n".join(lines) + "\n"
    merges = []
    for name, value in nested.items():
        node = found.tree.get(name)
        if isinstance(value, dict) and (isinstance(node, dict) or node is OPAQUE):
            merges.append(f"{name} = _nbsweep_merge({name}, {to_literal(value)})")
        else:
            lines.append(f"{name} = {to_literal(value)}")
    if merges:
        lines += [_MERGE_HELPER, *merges, "del _nbsweep_merge"]
    return "\n".join(lines) + "\n"


def _insert(nb: NotebookNode, found: ParameterSet, cell: NotebookNode) -> int:
    _give_id(nb, cell)
    position = found.cell_index + 1
    if found.style == "config-dict" and not found.statement_is_last:
        original = nb.cells[found.cell_index]
        lines = original.source.split("\n")
        head, tail = lines[: found.statement_end_line], lines[found.statement_end_line :]
        original.source = "\n".join(head)
        rest = _code_cell("\n".join(tail), CONTINUED_TAG)
        _give_id(nb, rest)
        nb.cells.insert(position, rest)
    nb.cells.insert(position, cell)
    return position


def _give_id(nb: NotebookNode, cell: NotebookNode) -> None:
    # Cell ids exist from nbformat 4.5 on; an older notebook must not get one.
    if (nb.nbformat, nb.nbformat_minor) >= (4, 5):
        cell.id = uuid.uuid4().hex[:8]
    else:
        cell.pop("id", None)


def _code_cell(source: str, tag: str) -> NotebookNode:
    """A code cell as ``nbformat.v4.new_code_cell`` makes it, without its schema check: that
    builds a validator each call, several milliseconds of every trial."""
    return NotebookNode(
        id=random_cell_id(),
        cell_type="code",
        metadata=NotebookNode(tags=[tag]),
        execution_count=None,
        source=source,
        outputs=[],
    )
