"""How a value is written for a person to read: in progress lines, tables, plot labels.
One rule everywhere, with the number of significant digits each place shows."""

from __future__ import annotations

from typing import Any


def format_value(value: Any, digits: int = 4, *, quote: bool = True) -> str:
    """A float to ``digits`` significant digits; with ``quote``, a string with spaces (or an
    empty one) quoted, so that ``k=v`` pairs stay readable; anything else as ``str`` does."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if quote and isinstance(value, str):
        return value if value and not any(c.isspace() for c in value) else repr(value)
    return str(value)
