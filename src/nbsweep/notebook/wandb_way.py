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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nbformat import NotebookNode

from nbsweep.errors import NotebookError
from nbsweep.notebook.parameters import (
    INJECTED_TAG,
    ParameterSet,
    is_dict_call,
    parse_leniently,
)

_WHAT_TO_DO = "write it as a literal, or put the sweep in a YAML and run `nbsweep sweep SWEEP.yaml`"


@dataclass(frozen=True)
class AgentCall:
    """One ``wandb.agent(...)`` call in the notebook."""

    cell: int
    line: int
    function: str | None
    """The function as written: ``train``, ``mymod.train``, ``partial(train)``, ``lambda``."""
    runtime_name: str | None
    """The ``__name__`` it has when called (a partial's function's); None if unknown."""
    count: int | None


@dataclass(frozen=True)
class SweepFunction:
    """Which ``wandb.agent`` call a trial runs, as the kernel's ``wandb.agent`` finds it:
    the ``ordinal``-th call (0-based, in the order they run), or, where the function's name
    is known, the first call at or after it whose function has that name."""

    name: str | None
    ordinal: int


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
    agent_calls: tuple[AgentCall, ...] = ()
    chosen: int | None = None
    """The index in ``agent_calls`` of the call trials run: the last one, unless asked."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """What the agent's function gives ``wandb.init(config=...)`` or sets on wandb.config."""
    function_is_readable: bool = False
    """The chosen call's function is defined in the notebook (not imported, not a lambda)."""
    problems: tuple[str, ...] = ()
    """Steps that are not literals, each with the cell and what to do."""
    syntax_errors: tuple[str, ...] = ()
    """Cells that are not Python (IPython's ``!`` and ``%`` lines aside): ``cell 3 line 2: ...``."""
    reads_wandb_config: bool = False
    """The notebook reads ``wandb.config`` or calls ``wandb.init`` (also inside functions)."""

    def parameter_names(self) -> list[str]:
        return sweep_parameter_names(self.config or {})

    @property
    def has_own_sweep(self) -> bool:
        """The notebook calls ``wandb.sweep`` or ``wandb.agent`` itself (W&B's tutorials)."""
        return self.sweep_cell is not None or bool(self.agent_calls)

    @property
    def agent(self) -> AgentCall | None:
        return None if self.chosen is None else self.agent_calls[self.chosen]

    @property
    def agent_function(self) -> str | None:
        return self.agent.function if self.agent else None

    @property
    def agent_cell(self) -> int | None:
        return self.agent.cell if self.agent else None

    @property
    def agent_count(self) -> int | None:
        return self.agent.count if self.agent else None

    def sweep_function(self) -> SweepFunction | None:
        """What the kernel needs to run the chosen call and skip the others."""
        if self.agent is None or self.chosen is None:
            return None
        return SweepFunction(self.agent.runtime_name, self.chosen)

    def syntax_error(self) -> NotebookError | None:
        """The first cell that is not Python, as the error reading the sweep from it is."""
        if not self.syntax_errors:
            return None
        more = len(self.syntax_errors) - 1
        also = f" (and {more} more)" if more else ""
        return NotebookError(
            f"{self.syntax_errors[0]}{also}: nbsweep reads the notebook's sweep from its "
            "cells; fix the cell and run again"
        )


def values_go_to_wandb_config(found: ParameterSet | None, shape: NotebookSweep) -> bool:
    """Where a trial's values enter the notebook, the one rule everything follows:

    1. a cell tagged ``parameters``: after it, always;
    2. else, a notebook that calls ``wandb.sweep``/``wandb.agent`` itself: ``wandb.config``
       (the notebook's sweep names the parameters; a top-level ``config`` dict is left as
       it is, as it is under ``wandb.agent``);
    3. else the top-level ``config`` dict;
    4. else ``wandb.config`` if the notebook reads it or calls ``wandb.init``.

    False with ``found`` None: the notebook declares no parameters at all."""
    if found is not None and found.style == "parameters-cell":
        return False
    if shape.has_own_sweep:
        return True
    return found is None and shape.reads_wandb_config


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
        self.agent_calls: list[AgentCall] = []

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
        return isinstance(node, ast.Dict) or is_dict_call(node)

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
        if is_dict_call(node):
            assert isinstance(node, ast.Call)
            return {keyword.arg: self.value(keyword.value) for keyword in node.keywords}
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.value(item) for item in node.elts]
        try:
            return ast.literal_eval(node)
        except ValueError:
            raise _Unresolved(f"{ast.unparse(node)} is not a literal; {_WHAT_TO_DO}") from None

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
        return _is_wandb_function(func, self.wandb_names, self.imported, *names)

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
        known = self.literals.get(count.id) if isinstance(count, ast.Name) else None
        if isinstance(count, ast.Constant) and isinstance(count.value, int):
            known = count.value
        written, runtime_name = _function_names(function)
        self.agent_calls.append(
            AgentCall(
                index,
                node.lineno,
                written,
                runtime_name,
                known if isinstance(known, int) and not isinstance(known, bool) else None,
            )
        )


def analyse(nb: NotebookNode, sweep_function: str | None = None) -> NotebookSweep:
    """Read the notebook's sweep. ``sweep_function``: the function of the ``wandb.agent``
    call trials run (as written, or its name); None: the last call. NotebookError if no
    call has it."""
    reader = _Reader()
    reads_config = False
    syntax_errors: list[str] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or INJECTED_TAG in cell.metadata.get("tags", []):
            continue
        module, problem = parse_cell(cell.source)
        if problem is not None:
            syntax_errors.append(f"cell {index} {problem}")
        reader.cell(index, module)
        reads_config = reads_config or _reads_wandb_config(
            module, reader.wandb_names, reader.imported
        )
    calls = tuple(reader.agent_calls)
    chosen = _choose(calls, sweep_function)
    written = calls[chosen].function if chosen is not None else None
    function = reader.functions.get(written or "")
    defaults = {} if function is None else _defaults(function, reader.wandb_names, reader.imported)
    return NotebookSweep(
        **reader.found,
        agent_calls=calls,
        chosen=chosen,
        defaults=defaults,
        function_is_readable=function is not None,
        problems=tuple(dict.fromkeys(reader.problems)),
        syntax_errors=tuple(syntax_errors),
        reads_wandb_config=reads_config,
    )


def _choose(calls: tuple[AgentCall, ...], wanted: str | None) -> int | None:
    if not calls:
        if wanted is not None:
            raise NotebookError(
                f"--sweep-function {wanted}: the notebook calls no wandb.agent; leave it out"
            )
        return None
    if wanted is None:
        return len(calls) - 1
    matching = [i for i, call in enumerate(calls) if wanted in (call.function, call.runtime_name)]
    if not matching:
        listed = ", ".join(sorted({str(call.function) for call in calls}))
        raise NotebookError(
            f"--sweep-function {wanted}: no wandb.agent call runs it; the notebook's calls "
            f"run {listed}"
        )
    return matching[-1]


def _function_names(node: ast.expr | None) -> tuple[str | None, str | None]:
    """A ``wandb.agent`` function as written, and the ``__name__`` it will have."""
    if isinstance(node, ast.Name):
        return node.id, node.id
    if isinstance(node, ast.Attribute):
        return ast.unparse(node), node.attr
    if isinstance(node, ast.Lambda):
        return "lambda", "<lambda>"
    if (
        isinstance(node, ast.Call)
        and node.args
        and isinstance(node.func, (ast.Name, ast.Attribute))
        and ast.unparse(node.func) in ("partial", "functools.partial")
    ):
        inner, name = _function_names(node.args[0])
        return f"partial({inner})", name
    return (ast.unparse(node), None) if node is not None else (None, None)


# Lines IPython turns into calls before Python sees them: shell escapes, magics, help.
_IPYTHON_LINE = re.compile(r"^\s*(?:[!%]|[\w.]+\s*=\s*[!%]|\?{1,2}[\w.]+\s*$|[\w.]+\?{1,2}\s*$)")
# Cell magics whose body is Python.
_PYTHON_CELL_MAGICS = frozenset({"capture", "time", "timeit", "prun"})


def parse_cell(source: str) -> tuple[ast.Module, str | None]:
    """A cell's statements, and its syntax error (``line 2: invalid syntax``) if, with
    IPython's own lines set aside, it is not Python. A cell in another language (``%%bash``)
    is no Python at all, and no error."""
    lines = source.split("\n")
    first = lines[0].strip() if lines else ""
    if first.startswith("%%"):
        magic = first[2:].split(maxsplit=1)
        if not magic or magic[0] not in _PYTHON_CELL_MAGICS:
            return ast.Module(body=[], type_ignores=[]), None
        lines = ["", *lines[1:]]
    # ``pass`` at the line's indent: an indented ``!ls`` is a block's whole body.
    python = "\n".join(
        line[: len(line) - len(line.lstrip())] + "pass" if _IPYTHON_LINE.search(line) else line
        for line in lines
    )
    if python == source:  # nothing IPython's own: the parse the other readers share
        module, parsed = parse_leniently(source)
        if parsed == source:
            return module, None
    try:
        return ast.parse(python, type_comments=True), None
    except SyntaxError as error:
        module, _ = parse_leniently(source)
        return module, f"line {error.lineno}: {error.msg}"


def _reads_wandb_config(
    module: ast.Module, wandb_names: set[str], imported: Mapping[str, str]
) -> bool:
    return any(
        isinstance(node, (ast.Attribute, ast.Name))
        and _is_wandb_function(node, wandb_names, imported, "config", "init")
        for node in ast.walk(module)
    )


def _defaults(
    function: ast.FunctionDef, wandb_names: set[str], imported: Mapping[str, str]
) -> dict[str, Any]:
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

    def is_wandb(node: ast.expr, name: str) -> bool:
        return _is_wandb_function(node, wandb_names, imported, name)

    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                if is_wandb(node.value, "config"):
                    config_aliases.add(target.id)
                else:
                    _remember(local, target.id, node.value)
            elif isinstance(target, ast.Attribute) and (
                is_wandb(target.value, "config")
                or (isinstance(target.value, ast.Name) and target.value.id in config_aliases)
            ):
                try:
                    defaults[target.attr] = ast.literal_eval(node.value)
                except ValueError:
                    continue
        elif isinstance(node, ast.Call) and is_wandb(node.func, "init"):
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


def _is_wandb_attr(node: ast.expr, wandb_names: set[str], *attrs: str) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr in attrs
        and isinstance(node.value, ast.Name)
        and node.value.id in wandb_names
    )


def _is_wandb_function(
    func: ast.expr, wandb_names: set[str], imported: Mapping[str, str], *names: str
) -> bool:
    """``func`` is one of wandb's ``names``: ``wandb.init``, ``wb.init`` after ``import
    wandb as wb``, or ``init`` after ``from wandb import init`` (also ``config``)."""
    if isinstance(func, ast.Name):
        return imported.get(func.id) in names
    return _is_wandb_attr(func, wandb_names, *names)


def calls_wandb_init(nb: NotebookNode) -> bool:
    """Whether any code cell calls ``wandb.init``, under whatever name an import gave it,
    also inside a function: then the notebook opens its own W&B run."""
    return first_wandb_init_cell(nb) is not None


def first_wandb_init_cell(nb: NotebookNode) -> int | None:
    """The index of the first code cell that calls ``wandb.init`` (as ``calls_wandb_init``
    reads a call: any name an import gave it, also inside a function); None if none does."""
    code = [(index, cell.source) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    if not any("wandb" in source for _, source in code):
        return None  # no import of it and no call: the usual notebook, left unparsed
    modules = [(index, parse_leniently(source)[0]) for index, source in code]
    wandb_names = {"wandb"}
    imported: dict[str, str] = {}
    for node in (node for _, module in modules for node in ast.walk(module)):
        if isinstance(node, ast.Import):
            wandb_names |= {a.asname or "wandb" for a in node.names if a.name == "wandb"}
        elif isinstance(node, ast.ImportFrom) and node.module == "wandb":
            imported.update((a.asname or a.name, a.name) for a in node.names)
    return next(
        (
            index
            for index, module in modules
            for node in ast.walk(module)
            if isinstance(node, ast.Call)
            and _is_wandb_function(node.func, wandb_names, imported, "init")
        ),
        None,
    )


def _described(error: Exception) -> str:
    if isinstance(error, _Unresolved):
        return str(error)
    return f"a step that is not a literal ({type(error).__name__}); {_WHAT_TO_DO}"


def _literal_keywords(
    keywords: Mapping[str, ast.expr], literals: dict[str, Any], *names: str
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
