"""Where one command writes: never over its own source notebook, never two outputs on one
file. Paths are compared resolved and, where they exist, by inode, so links count."""

from __future__ import annotations

import os
from pathlib import Path

from nbsweep.errors import UsageError
from nbsweep.notebook.files import unwritable_kind


def check_outputs(source: Path, outputs: dict[str, Path | None]) -> None:
    """Raise UsageError (exit 2) if an output (option -> path) is ``source``, another
    output, or a FIFO, socket or block device. Overwriting an earlier run's output stays
    allowed, and a character device such as /dev/null is written to."""
    given = [(option, path) for option, path in outputs.items() if path is not None]
    for number, (option, path) in enumerate(given):
        kind = unwritable_kind(path)
        if kind is not None:
            raise UsageError(
                f"{option} {str(path)!r} is {kind}, not a regular file; choose another path"
            )
        if _same(path, source):
            raise UsageError(
                f"{option} {str(path)!r} is the notebook being run: it would be overwritten; "
                "choose another path"
            )
        for other_option, other in given[:number]:
            if _same(path, other):
                raise UsageError(
                    f"{option} {str(path)!r} is also {other_option}: one would overwrite the "
                    "other; choose another path"
                )


def _same(one: Path, other: Path) -> bool:
    if one.resolve() == other.resolve():
        return True
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False
