"""Reading notebooks and writing results atomically (temp file in the same folder, then
``os.replace``), so a reader never sees half a file and an interrupted write loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import nbformat
from nbformat import NotebookNode

from nbsweep.errors import NotebookError, UsageError


def read_notebook(path: Path) -> NotebookNode:
    if path.suffix != ".ipynb":
        raise NotebookError(f"{str(path)!r} is not a notebook: nbsweep runs .ipynb files")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise NotebookError(f"cannot read notebook {str(path)!r}: {error.strerror}") from None
    try:
        nb = nbformat.reads(text, as_version=4)
    except (ValueError, KeyError, AttributeError, TypeError) as error:
        raise NotebookError(f"{str(path)!r} is not a valid notebook: {error}") from None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as error:
        raise NotebookError(f"{str(path)!r} is not a valid notebook: {error.message}") from None
    return nb


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Have ``write`` fill a temp file in ``path``'s folder, then move it over ``path``."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_notebook(nb: NotebookNode, path: Path) -> None:
    atomic_write_text(path, nbformat.writes(nb))


def write_html(nb: NotebookNode, path: Path) -> None:
    from nbconvert import HTMLExporter  # ~0.4 s to import: only when asked for

    body, _ = HTMLExporter().from_notebook_node(nb)
    atomic_write_text(path, body)


def write_json(data: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def ensure_writable_folder(folder: Path, option: str = "--output") -> None:
    """Create ``folder`` and prove a file can be written there, before any work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nbsweep-check-"):
            pass
    except OSError as error:
        raise UsageError(
            f"cannot write to output folder {str(folder)!r}: {error.strerror}; "
            f"choose another with {option}"
        ) from None
