"""Load YAML the way people who write ``lr: 1e-5`` mean it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from nbsweep.errors import UsageError
from nbsweep.notebook.literals import MAX_DEPTH, nesting_depth
from nbsweep.notebook.textfile import read_text

# YAML 1.1 (PyYAML) wants a dot in a float; YAML 1.2 and people do not: 1e-5 is a number.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _TooDeep(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__(f"nested more than {MAX_DEPTH} levels deep")
        self.problem_mark = mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads e-notation without a dot (``1e-5``) as a float, and refuses
    nesting deeper than ``MAX_DEPTH``."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # PyYAML composes recursively and dies of it some 500 levels down: stop long before.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH + 1:  # the root is level 1, not nested in anything
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def loads(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


# Bounds on what a sweep or parameter file may hold: far above any real one, far below
# what a YAML alias bomb (a few lines that expand to billions of values) would build.
MAX_BYTES = 16 * 1024 * 1024
MAX_VALUES = 1_000_000


def load_file(path: str | Path, what: str = "YAML file") -> Any:
    """Parse ``path``; a missing, malformed, binary or oversized file is a UsageError naming
    it, and so is one whose aliases expand past ``MAX_VALUES`` values."""
    text = read_text(path, what, limit=MAX_BYTES)
    try:
        loaded = loads(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        if isinstance(error, _TooDeep):
            raise UsageError(_too_deep(what, path, where)) from None
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        hint = "; quote values that hold ${...} or :" if "${" in text else ""
        message = f"{what} {str(path)!r} is not valid YAML{where}: {problem}{hint}"
        raise UsageError(message) from None
    if _expands_past(loaded, MAX_VALUES):
        raise UsageError(
            f"{what} {str(path)!r} expands to more than {MAX_VALUES:,} values (YAML aliases "
            "repeating each other?); write the values out"
        )
    if nesting_depth(loaded) > MAX_DEPTH:  # aliases nest without nesting the text
        raise UsageError(_too_deep(what, path))
    return loaded


def _too_deep(what: str, path: str | Path, where: str = "") -> str:
    return (
        f"{what} {str(path)!r} nests more than {MAX_DEPTH} levels deep{where}; nbsweep reads "
        f"at most {MAX_DEPTH} levels"
    )


def _expands_past(value: Any, limit: int) -> bool:
    """Whether walking ``value`` as JSON would, visiting aliased parts each time they appear,
    meet more than ``limit`` values. Stops counting at the limit, so a bomb costs little."""
    seen = 0
    stack = [value]
    while stack:
        item = stack.pop()
        seen += 1
        if seen > limit:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False
