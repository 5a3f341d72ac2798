"""Find a notebook's parameters by parsing its code cells with ``ast`` (never regex).

Two conventions, in this order:

1. papermill's: the first code cell tagged ``parameters``; each top-level assignment in it
   (annotated or not) is a parameter.
2. the W&B-blog pattern: a top-level ``config = {...}`` or ``config = dict(...)`` in any
   code cell; its (nested) keys are the parameters, nested ones with dotted names.

Pure functions of a notebook: no kernel, no wandb, no I/O.
"""

from __future__ import annotations

import ast
import functools
import keyword
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nbsweep.errors import NotebookError

if TYPE_CHECKING:
    from nbformat import NotebookNode

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
CONTINUED_TAG = "nbsweep-continued"
DEFAULT_CONFIG_VAR = "config"

Style = Literal["parameters-cell", "config-dict"]


@dataclass(frozen=True)
class Parameter:
    """One injectable name with what the notebook says about it."""

    name: str
    """Dotted for keys of nested dicts: ``opt.beta1``."""
    default: Any
    """The default's value when it is a literal, else None (see ``default_source``)."""
    default_source: str
    is_literal: bool
    type_name: str
    """The annotation or type comment if there is one, else the type of a literal default."""
    cell_index: int
    line: int
    """1-based line in the cell."""


@dataclass(frozen=True)
class ParameterSet:
    """Where a notebook keeps its parameters, and which they are."""

    style: Style
    cell_index: int
    parameters: tuple[Parameter, ...]
    config_var: str | None = None
    """For the config-dict style: the variable that holds the dict."""
    statement_end_line: int = 0
    """For the config-dict style: the last line of the assignment, where injection goes."""
    statement_is_last: bool = True
    """For the config-dict style: nothing else follows the assignment in its cell."""
    tree: dict[str, Any] = field(default_factory=dict, compare=False)
    """Known names as a nested dict: dicts for literal dicts, else a Leaf or OPAQUE."""

    def names(self) -> list[str]:
        return [parameter.name for parameter in self.parameters]


@dataclass(frozen=True)
class Leaf:
    """In ``ParameterSet.tree``: a known name whose default is a literal that is not a dict."""

    default: Any


class _Opaque:
    def __repr__(self) -> str:
        return "OPAQUE"


OPAQUE = _Opaque()
"""In ``ParameterSet.tree``: a known name whose default is not a literal (any keys go)."""


def is_parameter_name(name: str) -> bool:
    """True for ``lr`` and dotted ``opt.beta1``: each part a Python identifier, no keyword."""
    parts = name.split(".")
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in parts)


def find_parameters(nb: NotebookNode, config_var: str = DEFAULT_CONFIG_VAR) -> ParameterSet:
    """The notebook's parameters; raises NotebookError telling how to mark them if none."""
    found = find_parameters_or_none(nb, config_var)
    if found is None:
        raise NotebookError(
            "no parameters found: tag the cell that sets the defaults with 'parameters' "
            "(Jupyter: View > Cell Toolbar > Tags) or define them in a top-level "
            f"`{config_var} = {{...}}` dict (--config-var names another variable), or read "
            "them from wandb.config after wandb.init()"
        )
    return found


def find_parameters_or_none(
    nb: NotebookNode, config_var: str = DEFAULT_CONFIG_VAR
) -> ParameterSet | None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and PARAMETERS_TAG in cell.metadata.get("tags", []):
            return _from_parameters_cell(index, cell.source)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or INJECTED_TAG in cell.metadata.get("tags", []):
            continue
        found = _from_config_dict(index, cell.source, config_var)
        if found is not None:
            return found
    return None


# Cells parsed lately: the readers of one trial's notebook (its parameters, its wandb calls,
# its preload) each look at the same cells, which are parsed once for all of them.
_PARSED_CELLS = 256


@functools.lru_cache(maxsize=_PARSED_CELLS)
def parse_leniently(source: str) -> tuple[ast.Module, str]:
    """Parse a cell, blanking lines that are not Python (magics, shell escapes, typos).

    Returns the module and the source it was parsed from; line numbers match ``source``.
    The module is shared by every caller that parses the same text: read it, never change it.
    """
    lines = source.split("\n")
    for _ in range(len(lines) + 1):
        text = "\n".join(lines)
        try:
            return ast.parse(text, type_comments=True), text
        except SyntaxError as error:
            bad = (error.lineno or 1) - 1
            if not 0 <= bad < len(lines) or not lines[bad].strip():
                bad = next((i for i in reversed(range(len(lines))) if lines[i].strip()), 0)
            lines[bad] = ""
    return ast.Module(body=[], type_ignores=[]), ""


def _from_parameters_cell(index: int, source: str) -> ParameterSet:
    module, text = parse_leniently(source)
    parameters: list[Parameter] = []
    tree: dict[str, Any] = {}
    for statement in module.body:
        target, value, annotation = _assignment_parts(statement)
        if target is None or value is None:
            continue
        annotation_text = ast.get_source_segment(text, annotation) if annotation else None
        annotation_text = annotation_text or _type_comment(statement)
        default, is_literal = _evaluate(value)
        tree[target] = _tree_of(default, is_literal)
        source_text = ast.get_source_segment(text, value) or ""
        if is_literal and isinstance(default, dict) and default:
            parameters.extend(_flatten(target, default, index, statement.lineno))
        else:
            type_name = annotation_text or (type(default).__name__ if is_literal else "")
            parameters.append(
                Parameter(
                    target, default, source_text, is_literal, type_name, index, statement.lineno
                )
            )
    return ParameterSet("parameters-cell", index, tuple(parameters), tree=tree)


def _from_config_dict(index: int, source: str, config_var: str) -> ParameterSet | None:
    module, text = parse_leniently(source)
    for position, statement in enumerate(module.body):
        target, value, _ = _assignment_parts(statement)
        if target != config_var or value is None or not is_dict_expression(value):
            continue
        tree = _dict_tree(value)
        parameters = tuple(_dict_parameters(value, "", index, text))
        following = module.body[position + 1 :]
        end_line = statement.end_lineno or statement.lineno
        if following and following[0].lineno == end_line:
            raise NotebookError(
                f"cell {index}: put `{config_var} = ...` on lines of its own (nothing after "
                "it on its last line) so nbsweep can inject right after it"
            )
        return ParameterSet(
            "config-dict",
            index,
            parameters,
            config_var=config_var,
            statement_end_line=end_line,
            statement_is_last=not following,
            tree=tree,
        )
    return None


def _assignment_parts(
    statement: ast.stmt,
) -> tuple[str | None, ast.expr | None, ast.expr | None]:
    if (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
    ):
        return statement.targets[0].id, statement.value, None
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return statement.target.id, statement.value, statement.annotation
    return None, None, None


def _type_comment(statement: ast.stmt) -> str | None:
    comment = getattr(statement, "type_comment", None)
    if not comment:
        return None
    # "List[str] Nice list": keep the longest prefix that is an expression.
    words = comment.split()
    for end in range(len(words), 0, -1):
        candidate = " ".join(words[:end])
        try:
            ast.parse(candidate, mode="eval")
        except SyntaxError:
            continue
        return candidate
    return None


def _evaluate(node: ast.expr) -> tuple[Any, bool]:
    try:
        return ast.literal_eval(node), True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None, False


def _tree_of(value: Any, is_literal: bool) -> Any:
    if not is_literal:
        return OPAQUE
    if isinstance(value, dict):
        return {key: _tree_of(item, True) for key, item in value.items()}
    return Leaf(value)


def _flatten(prefix: str, value: dict, index: int, line: int) -> list[Parameter]:
    parameters: list[Parameter] = []
    for key, item in value.items():
        if not (isinstance(key, str) and is_parameter_name(key)):
            continue  # reachable only through a dict value for the whole group
        name = f"{prefix}.{key}"
        if isinstance(item, dict) and item:
            parameters.extend(_flatten(name, item, index, line))
        else:
            parameters.append(
                Parameter(name, item, repr(item), True, type(item).__name__, index, line)
            )
    return parameters


def is_dict_call(node: ast.expr) -> bool:
    """``dict(a=1, b=2)``: keywords only (no positional argument, no ``**spread``)."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "dict"
        and not node.args
        and all(keyword.arg is not None for keyword in node.keywords)
    )


def is_dict_expression(node: ast.expr) -> bool:
    """A dict display without ``**spread``, or ``is_dict_call``: a dict whose every key is
    written out."""
    if isinstance(node, ast.Dict):
        return all(key is not None for key in node.keys)
    return is_dict_call(node)


def _dict_items(node: ast.expr) -> list[tuple[Any, ast.expr]]:
    if isinstance(node, ast.Dict):
        items = []
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            key, is_literal = _evaluate(key_node) if key_node is not None else (None, False)
            if is_literal:
                items.append((key, value_node))
        return items
    assert isinstance(node, ast.Call)
    return [(keyword.arg, keyword.value) for keyword in node.keywords]


def _dict_tree(node: ast.expr) -> dict[Any, Any]:
    tree: dict[Any, Any] = {}
    for key, value_node in _dict_items(node):
        if is_dict_expression(value_node):
            tree[key] = _dict_tree(value_node)
        else:
            tree[key] = _tree_of(*_evaluate(value_node))
    return tree


def _dict_parameters(node: ast.expr, prefix: str, index: int, text: str) -> list[Parameter]:
    parameters: list[Parameter] = []
    for key, value_node in _dict_items(node):
        if not (isinstance(key, str) and is_parameter_name(key)):
            continue
        name = f"{prefix}{key}"
        if is_dict_expression(value_node) and _dict_items(value_node):
            parameters.extend(_dict_parameters(value_node, name + ".", index, text))
            continue
        default, is_literal = _evaluate(value_node)
        parameters.append(
            Parameter(
                name,
                default,
                ast.get_source_segment(text, value_node) or "",
                is_literal,
                type(default).__name__ if is_literal else "",
                index,
                value_node.lineno,
            )
        )
    return parameters
