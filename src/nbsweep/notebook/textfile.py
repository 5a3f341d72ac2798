"""Reading the text files users hand nbsweep (notebooks, sweep and parameter files)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nbsweep.errors import UsageError


def read_text(
    path: str | Path, what: str, error: type[UsageError] = UsageError, limit: int | None = None
) -> str:
    """A text file as Jupyter and YAML tools read it: UTF-8, with or without a byte-order
    mark. Anything else (binary, UTF-16, not a regular file, over ``limit`` bytes) is one
    line naming the file, not a traceback."""
    try:
        data = _read_regular(Path(path), limit)
    except OSError as problem:
        raise error(f"cannot read {what} {str(path)!r}: {problem.strerror}") from None
    except _NotRegular as kind:
        raise error(f"{what} {str(path)!r} is {kind}, not a regular file") from None
    if limit is not None and len(data) > limit:
        raise error(f"{what} {str(path)!r} is over {limit // 2**20} MiB, the most nbsweep reads")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise error(f"{what} {str(path)!r} is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        raise error(
            f"{what} {str(path)!r} is not UTF-8 text (byte {problem.start} cannot be decoded)"
            "; is it the right file?"
        ) from None


class _NotRegular(Exception):
    """A folder, device, FIFO or socket: ``str`` says which."""


def _read_regular(path: Path, limit: int | None) -> bytes:
    """At most ``limit`` + 1 bytes of a regular file. A device such as /dev/zero never ends
    (and has no size to check first), and opening a FIFO waits for a writer that may never
    come: both are refused, the FIFO without waiting (O_NONBLOCK)."""
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise _NotRegular(_kind(mode))
        return file.read(-1 if limit is None else limit + 1)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket"
