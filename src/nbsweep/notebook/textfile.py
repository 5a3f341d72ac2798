"""Reading the text files users hand nbsweep (notebooks, sweep and parameter files)."""

from __future__ import annotations

from pathlib import Path

from nbsweep.errors import UsageError


def read_text(path: str | Path, what: str, error: type[UsageError] = UsageError) -> str:
    """A text file as Jupyter and YAML tools read it: UTF-8, with or without a byte-order
    mark. Anything else (binary, UTF-16) is one line naming the file, not a traceback."""
    try:
        data = Path(path).read_bytes()
    except OSError as problem:
        raise error(f"cannot read {what} {str(path)!r}: {problem.strerror}") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(f"{what} {str(path)!r} is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        raise error(
            f"{what} {str(path)!r} is not UTF-8 text (byte {problem.start} cannot be decoded)"
            "; is it the right file?"
        ) from None
