"""Turn parameter values into Python source literals, and back.

Values never reach a notebook as text pasted into code: each is rebuilt from its type
(``repr`` only for atoms whose repr is a literal) and the result is parsed back with
``ast.literal_eval`` and compared, type for type, with the original.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from nbsweep.errors import ParameterError

# ast.literal_eval has no spelling for these; they are the only calls we ever write.
_SPECIAL_FLOATS = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}

MAX_DEPTH = 100
"""How deeply a value, a sweep config or a parameters file may nest (a list in a list ...
100 times). Far beyond any real parameter, and well inside what a value must survive:
Python's parser takes 200 nested brackets (the injected cell and the trial file wrap the
value in a few more), json and PyYAML recurse about 1000 and 500 levels deep."""
# The deepest value to_literal writes: the parser's 200 brackets, less what wraps a value.
_PARSER_DEPTH = 190


def to_literal(value: Any) -> str:
    """Python source for ``value`` that ``parse_literal`` turns back into an equal value.

    Supports None, bool, int, float (inf and nan included), str, bytes, and lists,
    tuples, sets and dicts of those, by exact type (an enum is not an int).
    Raises ParameterError for anything else.
    """
    if nesting_depth(value, _PARSER_DEPTH) > _PARSER_DEPTH:
        raise ParameterError(
            f"a value nested more than {_PARSER_DEPTH} levels deep cannot be written as a "
            f"literal; nbsweep takes values nested at most {MAX_DEPTH} levels deep"
        )
    source = _render(value)
    if not same_value(parse_literal(source), value):
        raise ParameterError(f"value {value!r} does not survive being written as a literal")
    return source


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How many containers deep ``value`` nests (0 for an atom, 1 for ``[1]``), counted
    without recursion and only up to ``limit + 1``: a deeper value costs little to refuse."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def refuse_too_deep(name: str, value: Any, parents: int = 0) -> None:
    """ParameterError where parameter ``name``'s ``value``, below ``parents`` parts of a
    dotted name, nests more than ``MAX_DEPTH`` levels deep."""
    if parents + nesting_depth(value, MAX_DEPTH) > MAX_DEPTH:
        raise ParameterError(
            f"parameter {name!r} nests more than {MAX_DEPTH} levels deep (lists, dicts and "
            f"dotted names count); nbsweep takes values nested at most {MAX_DEPTH}"
        )


def parse_literal(source: str) -> Any:
    """Evaluate a literal written by ``to_literal`` (a superset of ``ast.literal_eval``)."""
    tree = ast.parse(source.strip(), mode="eval")
    return ast.literal_eval(_SpecialFloats().visit(tree))


def same_value(left: Any, right: Any) -> bool:
    """Equality that also requires equal types (1 is not 1.0 is not True) and nan == nan."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return (math.isnan(left) and math.isnan(right)) or left == right
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(map(same_value, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same_value(left[k], right[k]) for k in left)
    return bool(left == right)


def _render(value: Any) -> str:
    kind = type(value)
    if value is None or kind in (bool, int, str, bytes):
        # For exactly these types (not subclasses) repr() is a literal by construction.
        return repr(value)
    if kind is float:
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('inf')" if value > 0 else "float('-inf')"
        return repr(value)
    if kind is list:
        return "[" + ", ".join(_render(item) for item in value) + "]"
    if kind is tuple:
        items = [_render(item) for item in value]
        return "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if kind is set:
        if not value:
            return "set()"
        return "{" + ", ".join(sorted(_render(item) for item in value)) + "}"
    if kind is dict:
        pairs = (f"{_render(key)}: {_render(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise ParameterError(
        f"value of type {type(value).__name__} cannot be injected: use numbers, strings, "
        "booleans, None, or lists/tuples/dicts of them"
    )


class _SpecialFloats(ast.NodeTransformer):
    def visit_Call(self, node: ast.Call) -> ast.AST:
        is_empty_set = (
            isinstance(node.func, ast.Name)
            and node.func.id == "set"
            and not (node.args or node.keywords)
        )
        if is_empty_set:
            return node  # literal_eval's own spelling of an empty set
        argument = node.args[0] if len(node.args) == 1 else None
        is_float_call = (
            isinstance(node.func, ast.Name)
            and node.func.id == "float"
            and not node.keywords
            and isinstance(argument, ast.Constant)
            and argument.value in _SPECIAL_FLOATS
        )
        if not is_float_call or not isinstance(argument, ast.Constant):
            raise ValueError(f"not a literal: {ast.unparse(node)}")
        return ast.Constant(_SPECIAL_FLOATS[str(argument.value)])
