"""Load YAML the way people who write ``lr: 1e-5`` mean it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from nbsweep.errors import UsageError

# YAML 1.1 (PyYAML) wants a dot in a float; YAML 1.2 and people do not: 1e-5 is a number.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads e-notation without a dot (``1e-5``) as a float."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def loads(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_file(path: str | Path, what: str = "YAML file") -> Any:
    """Parse ``path``; a missing or malformed file is a UsageError naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read {what} {str(path)!r}: {error.strerror}") from None
    try:
        return loads(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        hint = "; quote values that hold ${...} or :" if "${" in text else ""
        message = f"{what} {str(path)!r} is not valid YAML{where}: {problem}{hint}"
        raise UsageError(message) from None
