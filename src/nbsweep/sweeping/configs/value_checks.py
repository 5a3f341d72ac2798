"""What a sweep config's values are (a number, an int, a mapping of known keys) and how a
problem with one is said: the words every rule of ``validation`` and ``parameter_rules`` uses."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator
from typing import Any, TypeGuard

NUMBER_TEXT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def mapping_problems(value: Any, path: str, keys: tuple[str, ...], example: str) -> Iterator[str]:
    if not isinstance(value, dict):
        yield f"{path}: must be a mapping like {example}, got {value!r}"
        return
    for key in value:
        if key not in keys:
            where = f"{path}.{key}" if path else str(key)
            hint = did_you_mean(key, keys)
            yield f"{where}: unknown key{hint}; W&B refuses keys it does not know, so remove it"


def is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: Any, above: int | None = None) -> bool:
    whole = isinstance(value, int) and not isinstance(value, bool)
    return whole and (above is None or value > above)


def not_a_number(value: Any) -> str:
    if not (isinstance(value, str) and NUMBER_TEXT.fullmatch(value.strip())):
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


def did_you_mean(word: Any, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
