"""Reading notebooks and writing results atomically (temp file in the same folder, then
``os.replace``), so a reader never sees half a file and an interrupted write loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import nbformat
import nbformat.reader
import nbformat.v4
from nbformat import NotebookNode

from nbsweep.errors import NotebookError, OutputError, UsageError
from nbsweep.notebook.textfile import read_text

_CELL_TYPES = ("code", "markdown", "raw")


def read_notebook(path: Path) -> NotebookNode:
    """Parse a notebook, checking only what nbsweep relies on: nbformat's full schema check
    costs tens of milliseconds per trial and a cell nbsweep never looks at cannot hurt."""
    if path.suffix != ".ipynb":
        raise NotebookError(f"{str(path)!r} is not a notebook: nbsweep runs .ipynb files")
    text = read_text(path, "notebook", NotebookError)
    try:
        if not text.lstrip().startswith("{"):
            kind = type(json.loads(text)).__name__  # a JSON error says what is wrong instead
            raise ValueError(f"it holds a JSON {kind}, not a notebook object")
        nb: NotebookNode = nbformat.reader.reads(text)
        if nb.get("nbformat") != 4:
            nb = nbformat.convert(nb, 4)
        problem = _structure_problem(nb)
    except (ValueError, KeyError, AttributeError, TypeError, nbformat.ValidationError) as error:
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
    if problem:
        raise NotebookError(f"{str(path)!r} is not a valid notebook: {problem}") from None
    return nb


def _structure_problem(nb: NotebookNode) -> str | None:
    if not isinstance(nb.get("metadata"), dict):
        return "no metadata"
    kernelspec = nb.metadata.get("kernelspec", {})
    if not isinstance(kernelspec, dict) or not isinstance(kernelspec.get("name", ""), str):
        return "metadata.kernelspec is not a mapping with a name"
    if not isinstance(nb.get("cells"), list):
        return "no list of cells"
    for index, cell in enumerate(nb.cells):
        if not isinstance(cell, dict) or cell.get("cell_type") not in _CELL_TYPES:
            return f"cell {index} has no known cell_type"
        if not isinstance(cell.get("source"), str):
            return f"cell {index} has no source"
        metadata = cell.setdefault("metadata", NotebookNode())
        if not isinstance(metadata, dict) or not isinstance(metadata.get("tags", []), list):
            return f"cell {index} has bad metadata (tags must be a list)"
        if cell["cell_type"] == "code":
            cell.setdefault("outputs", [])
            cell.setdefault("execution_count", None)
    return None


def notebook_text(nb: NotebookNode) -> str:
    """The notebook as nbformat writes it, without its schema check (see read_notebook)."""
    return str(nbformat.v4.writes(nb)) + "\n"


def atomic_write(path: Path, write: Callable[[BinaryIO], object], durable: bool = True) -> None:
    """Have ``write`` fill a temp file in ``path``'s folder, then move it over ``path``.
    ``durable``: on disk before it replaces ``path`` (not needed for a file only read now).
    A character device (``-o /dev/null``) is written to, as papermill does, never replaced
    by a file; a FIFO, socket or block device is an OutputError (see ``unwritable_kind``)."""
    kind = unwritable_kind(path)
    if kind is not None:
        raise OutputError(f"cannot write {str(path)!r}: it is {kind}, not a regular file")
    if _is_character_device(path):
        try:
            with open(path, "wb") as handle:
                write(handle)
        except OSError as error:
            raise _output_error(path, error) from None
        return
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise _output_error(path, error) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _output_error(path, error) from None
        raise


def unwritable_kind(path: Path) -> str | None:
    """What ``path`` is if no output may go there: an existing FIFO, socket or block device
    (replacing it would break what uses it; writing to a FIFO may wait for ever)."""
    mode = _mode(path)
    if mode is None:
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a block device" if stat.S_ISBLK(mode) else None


def _is_character_device(path: Path) -> bool:
    mode = _mode(path)
    return mode is not None and stat.S_ISCHR(mode)


def _mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None  # absent, or the write says what is wrong


def _output_error(path: Path, error: OSError) -> OutputError:
    return OutputError(f"cannot write {str(path)!r}: {error.strerror or error}")


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")), durable)


def write_notebook(nb: NotebookNode, path: Path) -> None:
    atomic_write_text(path, notebook_text(nb))


def write_html(nb: NotebookNode, path: Path) -> None:
    from nbconvert import HTMLExporter  # ~0.4 s to import: only when asked for

    body, _ = HTMLExporter().from_notebook_node(nb)
    atomic_write_text(path, body)


def write_json(data: Any, path: Path) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


# What W&B refuses in a run id (wandb_settings.validate_run_id), and NUL, which no path holds.
_NOT_IN_IDS = frozenset(":;,#?/'\0")


def safe_id(value: str, what: str) -> str:
    """``value``, a sweep or run id from a store, a server or the environment, if it is one
    W&B accepts (no ``/``, none of ``:;,#?'``, no spaces around it) and not ``.`` or ``..``:
    every path built from ids goes through here, so ``folder/<id>`` and
    ``folder/sweep-<id>`` are names inside ``folder``. UsageError (one line) otherwise."""
    if value.strip() != value or value in ("", ".", "..") or set(value) & _NOT_IN_IDS:
        raise UsageError(
            f"{what} {value!r} is not an id W&B accepts (no / : ; , # ? ' or spaces around "
            "it, not . or ..): nbsweep makes no path of it"
        )
    return value


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
