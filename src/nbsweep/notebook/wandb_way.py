"""The W&B way of writing a sweep notebook, read with ``ast``: the dict passed to
``wandb.sweep`` (built over several cells with literal steps), the function passed to
``wandb.agent``, the defaults its ``wandb.init(config=...)`` gets, and whether the notebook
reads ``wandb.config`` at all.

Pure functions of a notebook: no kernel, no wandb, no I/O. Cells are named by their index,
as everywhere in nbsweep.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nbformat import NotebookNode

from nbsweep.notebook.parameters import INJECTED_TAG, parse_leniently

_WHAT_TO_DO = (
    "write it as a literal, or put the sweep in a YAML and run `nbsweep sweep SWEEP.yaml`"
)


@dataclass(frozen=True)
class NotebookSweep:
    """What a notebook's own ``wandb.sweep``/``wandb.agent`` calls say."""

    config: dict[str, Any] | None = None
    """The dict passed to ``wandb.sweep``, resolved; None without a call or if unresolved."""
    config_name: str | None = None
    """The variable passed to ``wandb.sweep``; None for an inline dict."""
    sweep_cell: int | None = None
    project: str | None = None
    entity: str | None = None
    agent_function: str | None = None
    agent_cell: int | None = None
    agent_count: int | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    """What the agent's function gives ``wandb.init(config=...)`` or sets on wandb.config."""
    problems: tuple[str, ...] = ()
    """Steps that are not literals, each with the cell and what to do."""
    reads_wandb_config: bool = False
    """The notebook reads ``wandb.config`` or calls ``wandb.init`` (also inside functions)."""

    def parameter_names(self) -> list[str]:
        return sweep_parameter_names(self.config or {})


def sweep_parameter_names(config: Mapping[str, Any]) -> list[str]:
    """The swept names; a nested ``parameters:`` group gives ``group.key``, as W&B nests."""
    return [name for name, _ in sweep_parameter_leaves(config)]


def sweep_parameter_leaves(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Each swept name with its spec (``{"values": [...]}``, ``{"min": ...}``)."""
    parameters = config.get("parameters")
    return _leaves(parameters, "") if isinstance(parameters, Mapping) else []


def _leaves(parameters: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    leaves: list[tuple[str, Any]] = []
    for name, spec in parameters.items():
        inner = spec.get("parameters") if isinstance(spec, Mapping) else None
        if isinstance(inner, Mapping):
            leaves.extend(_leaves(inner, f"{prefix}{name}."))
        else:
            leaves.append((f"{prefix}{name}", spec))
    return leaves


_MUTATING = frozenset({"pop", "popitem", "clear", "setdefault", "update", "__setitem__"})


class _Unresolved(Exception):
    """An expression that is not a literal nor a dict the reader tracks."""


class _Reader:
    """Walks top-level statements in cell order, keeping the dicts built from literals."""

    def __init__(self) -> None:
        self.dicts: dict[str, Any] = {}
        self.tainted: dict[str, str] = {}
        """Variables whose value the reader lost, with the problem that says where."""
        self.wandb_names = {"wandb"}
        self.problems: list[str] = []
        self.functions: dict[str, ast.FunctionDef] = {}
        self.found: dict[str, Any] = {}
        self.imported: dict[str, str] = {}
        """Names bound by ``from wandb import sweep, agent``: local name -> wandb's."""
        self.literals: dict[str, Any] = {}

    def cell(self, index: int, module: ast.Module) -> None:
        for statement in module.body:
            self.statement(index, statement)

    def statement(self, index: int, node: ast.stmt) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "wandb":
                    self.wandb_names.add(alias.asname or "wandb")
        elif isinstance(node, ast.ImportFrom) and node.module == "wandb":
            for alias in node.names:
                self.imported[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.FunctionDef):
            self.functions[node.name] = node
        elif isinstance(node, ast.Assign):
            self.remember_literal(node)
            self.assign(index, node)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            self.call(index, node.value, None)
        else:
            self.unfollowed(index, node)

    def remember_literal(self, node: ast.Assign) -> None:
        """Plain literals (``PROJECT = 'demo'``, ``N = 5``) that wandb.sweep/agent may name."""
        for target in node.targets:
            if isinstance(target, ast.Name):
                try:
                    self.literals[target.id] = ast.literal_eval(node.value)
                except (ValueError, SyntaxError, TypeError):
                    self.literals.pop(target.id, None)

    def mutated(self, node: ast.AST) -> set[str]:
        """Tracked dicts that ``node`` may change: stores and deletes into them, their
        mutating methods, or the name bound anew. Reading them (``print(d)``) changes none."""
        names: set[str] = set()
        for part in ast.walk(node):
            if isinstance(part, ast.Subscript) and isinstance(part.ctx, (ast.Store, ast.Del)):
                names.add(self.root(part) or "")
            elif isinstance(part, ast.Name) and isinstance(part.ctx, (ast.Store, ast.Del)):
                names.add(part.id)
            elif (
                isinstance(part, ast.Call)
                and isinstance(part.func, ast.Attribute)
                and part.func.attr in _MUTATING
            ):
                names.add(self.root(part.func.value) or "")
        return names & set(self.dicts)

    def unfollowed(self, index: int, node: ast.stmt) -> None:
        """A statement the reader does not replay (``del``, a loop, a ``with`` block ...)
        that touches a tracked dict: its value is then unknown, and the notebook is told."""
        for name in self.mutated(node):
            self.lose(
                ast.Name(id=name),
                f"{self.where(index, node)}: {name} is changed by a statement nbsweep does not "
                f"follow ({type(node).__name__.lower()}); {_WHAT_TO_DO}",
            )

    def where(self, index: int, node: ast.AST) -> str:
        return f"cell {index} line {getattr(node, 'lineno', 1)}"

    def assign(self, index: int, node: ast.Assign) -> None:
        if isinstance(node.value, ast.Call) and self.is_wandb(node.value.func, "sweep", "agent"):
            self.call(index, node.value, node.targets[0])
            return
        for target in node.targets:
            try:
                self.store(target, node.value)
            except (_Unresolved, ValueError, TypeError, KeyError) as error:
                self.lose(target, f"{self.where(index, node)}: {_described(error)}")

    def store(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            if not self.builds_dict(value):
                self.dicts.pop(target.id, None)
                self.tainted.pop(target.id, None)
                return
            self.dicts[target.id] = self.value(value)
            self.tainted.pop(target.id, None)
        elif isinstance(target, ast.Subscript) and self.root(target) in self.dicts:
            container = self.value(target.value)
            key = ast.literal_eval(target.slice)
            container[key] = self.value(value)

    def builds_dict(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.dicts or node.id in self.tainted
        return isinstance(node, ast.Dict) or _is_dict_call(node)

    def lose(self, target: ast.expr, problem: str) -> None:
        root = self.root(target)
        if root is not None and (root in self.dicts or isinstance(target, ast.Name)):
            self.dicts.pop(root, None)
            self.tainted[root] = problem

    def root(self, node: ast.expr) -> str | None:
        while isinstance(node, (ast.Subscript, ast.Attribute)):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    def value(self, node: ast.expr) -> Any:
        """A literal, a tracked dict (the same object: later updates show through it), or a
        dict display / ``dict(...)`` of those."""
        if isinstance(node, ast.Name) and node.id in self.dicts:
            return self.dicts[node.id]
        if isinstance(node, ast.Name) and node.id in self.tainted:
            raise _Unresolved(f"uses {node.id}, which is not known ({self.tainted[node.id]})")
        if isinstance(node, ast.Subscript) and self.root(node) in self.dicts:
            return self.value(node.value)[ast.literal_eval(node.slice)]
        if isinstance(node, ast.Dict):
            if any(key is None for key in node.keys):
                raise _Unresolved("a ** expansion is not a literal; " + _WHAT_TO_DO)
            return {
                ast.literal_eval(key): self.value(item)
                for key, item in zip(node.keys, node.values, strict=True)
                if key is not None
            }
        if _is_dict_call(node):
            assert isinstance(node, ast.Call)
            return {keyword.arg: self.value(keyword.value) for keyword in node.keywords}
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(item) for item in node.elts]
        try:
            return ast.literal_eval(node)
        except ValueError:
            raise _Unresolved(
                f"{ast.unparse(node)} is not a literal; {_WHAT_TO_DO}"
            ) from None

    def call(self, index: int, node: ast.Call, target: ast.expr | None) -> None:
        func = node.func
        if self.is_wandb(func, "sweep"):
            self.sweep_call(index, node, target)
        elif self.is_wandb(func, "agent"):
            self.agent_call(index, node)
        elif (
            isinstance(func, ast.Attribute)
            and func.attr == "update"
            and isinstance(func.value, (ast.Name, ast.Subscript))
            and self.root(func.value) in self.dicts
        ):
            try:
                updates: dict[str, Any] = {}
                for argument in node.args:
                    updates.update(self.value(argument))
                updates.update({kw.arg: self.value(kw.value) for kw in node.keywords if kw.arg})
                self.value(func.value).update(updates)
            except (_Unresolved, ValueError, TypeError, AttributeError, KeyError) as error:
                self.lose(func.value, f"{self.where(index, node)}: {_described(error)}")
        else:
            self.unfollowed(index, ast.Expr(value=node, lineno=node.lineno))

    def is_wandb(self, func: ast.expr, *names: str) -> bool:
        if isinstance(func, ast.Name):
            return self.imported.get(func.id) in names
        return (
            isinstance(func, ast.Attribute)
            and func.attr in names
            and isinstance(func.value, ast.Name)
            and func.value.id in self.wandb_names
        )

    def sweep_call(self, index: int, node: ast.Call, target: ast.expr | None) -> None:
        keywords = {kw.arg: kw.value for kw in node.keywords if kw.arg}
        argument = node.args[0] if node.args else keywords.get("sweep")
        self.found.update(
            sweep_cell=index, **_literal_keywords(keywords, self.literals, "project", "entity")
        )
        if isinstance(argument, ast.Name):
            self.found["config_name"] = argument.id
        if argument is None:
            self.problems.append(f"{self.where(index, node)}: wandb.sweep is given no config")
            return
        if isinstance(argument, ast.Name) and argument.id in self.tainted:
            self.problems.append(self.tainted[argument.id])
            return
        try:
            config = self.value(argument)
        except (_Unresolved, ValueError) as error:
            self.problems.append(f"{self.where(index, node)}: the sweep config {error}")
            return
        if isinstance(config, dict):
            self.found["config"] = copy.deepcopy(config)  # as it was when the sweep was made
        else:
            self.problems.append(
                f"{self.where(index, node)}: wandb.sweep is not given a dict; {_WHAT_TO_DO}"
            )

    def agent_call(self, index: int, node: ast.Call) -> None:
        keywords = {kw.arg: kw.value for kw in node.keywords if kw.arg}
        function = node.args[1] if len(node.args) > 1 else keywords.get("function")
        count = node.args[4] if len(node.args) > 4 else keywords.get("count")
        self.found["agent_cell"] = index
        if isinstance(function, ast.Name):
            self.found["agent_function"] = function.id
        known = self.literals.get(count.id) if isinstance(count, ast.Name) else None
        if isinstance(count, ast.Constant) and isinstance(count.value, int):
            self.found["agent_count"] = count.value
        elif isinstance(known, int):
            self.found["agent_count"] = known


def analyse(nb: NotebookNode) -> NotebookSweep:
    reader = _Reader()
    reads_config = False
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or INJECTED_TAG in cell.metadata.get("tags", []):
            continue
        module, _ = parse_leniently(cell.source)
        reader.cell(index, module)
        reads_config = reads_config or _reads_wandb_config(module, reader.wandb_names)
    problems = reader.problems
    function = reader.functions.get(reader.found.get("agent_function") or "")
    defaults = _defaults(function, reader.wandb_names) if function is not None else {}
    return NotebookSweep(
        **reader.found,
        defaults=defaults,
        problems=tuple(dict.fromkeys(problems)),
        reads_wandb_config=reads_config,
    )


def _reads_wandb_config(module: ast.Module, wandb_names: set[str]) -> bool:
    for node in ast.walk(module):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ("config", "init")
            and isinstance(node.value, ast.Name)
            and node.value.id in wandb_names
        ):
            return True
    return False


def _defaults(function: ast.FunctionDef, wandb_names: set[str]) -> dict[str, Any]:
    """``wandb.init(config=NAME)`` with NAME a literal dict (a parameter default or a local
    assignment), then literal ``wandb.config.x = v`` or ``config.x = v`` after
    ``config = wandb.config``: the defaults a trial's values are merged over."""
    local: dict[str, Any] = {}
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    for argument, default in zip(
        positional[len(positional) - len(arguments.defaults) :], arguments.defaults, strict=True
    ):
        _remember(local, argument.arg, default)
    config_aliases: set[str] = set()
    defaults: dict[str, Any] = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                if _is_wandb_attr(node.value, wandb_names, "config"):
                    config_aliases.add(target.id)
                else:
                    _remember(local, target.id, node.value)
            elif isinstance(target, ast.Attribute) and (
                _is_wandb_attr(target.value, wandb_names, "config")
                or (isinstance(target.value, ast.Name) and target.value.id in config_aliases)
            ):
                try:
                    defaults[target.attr] = ast.literal_eval(node.value)
                except ValueError:
                    continue
        elif isinstance(node, ast.Call) and _is_wandb_attr(node.func, wandb_names, "init"):
            for keyword in node.keywords:
                if keyword.arg == "config" and isinstance(keyword.value, ast.Name):
                    given = local.get(keyword.value.id)
                    if isinstance(given, dict):
                        defaults = {**given, **defaults}
    return defaults


def _remember(local: dict[str, Any], name: str, value: ast.expr) -> None:
    try:
        local[name] = ast.literal_eval(value)
    except ValueError:
        local.pop(name, None)


def _is_wandb_attr(node: ast.expr, wandb_names: set[str], attr: str) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == attr
        and isinstance(node.value, ast.Name)
        and node.value.id in wandb_names
    )


def _described(error: Exception) -> str:
    if isinstance(error, _Unresolved):
        return str(error)
    return f"a step that is not a literal ({type(error).__name__}); {_WHAT_TO_DO}"


def _is_dict_call(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "dict"
        and not node.args
        and all(keyword.arg for keyword in node.keywords)
    )


def _literal_keywords(
    keywords: dict[str | None, ast.expr], literals: dict[str, Any], *names: str
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in names:
        node = keywords.get(name)
        value = literals.get(node.id) if isinstance(node, ast.Name) else None
        if isinstance(node, ast.Constant):
            value = node.value
        if isinstance(value, str):
            found[name] = value
    return found
