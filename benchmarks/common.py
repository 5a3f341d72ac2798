"""Helpers the benchmark scripts share: notebooks, processes, tables, report metadata.

Each script imports these with ``from common import ...``. That works because Python puts
the folder of the script it runs first on ``sys.path``: run the scripts as files, from the
repository root, e.g. ``python benchmarks/bench_run.py`` (not ``python -m``). Processes
that ``bench_local.py`` starts with ``multiprocessing``'s ``spawn`` inherit that
``sys.path``, so they find this module too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import nbformat
import psutil

Cell = str | tuple[str, Sequence[str]]
"""A code cell: its source, or its source and its tags (``("lr = 0.1", ["parameters"])``)."""

AGENT_ENV = ("WANDB_SWEEP_PARAM_PATH", "WANDB_SWEEP_ID", "WANDB_RUN_ID")
"""Variables that would make nbsweep behave as under ``wandb agent``."""


def write_notebook(folder: Path, cells: Sequence[Cell], name: str = "nb.ipynb") -> Path:
    """Write a Python 3 notebook of code ``cells`` to ``folder / name``; its path.

    A cell given as a plain string has no metadata; one given as ``(source, tags)`` with
    tags has ``{"tags": [...]}`` (tag one ``parameters`` for papermill and nbsweep).
    """
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    new_cells = []
    for cell in cells:
        source, tags = (cell, ()) if isinstance(cell, str) else cell
        metadata_ = {"tags": list(tags)} if tags else {}
        new_cells.append(nbformat.v4.new_code_cell(source, metadata=metadata_))
    nb.cells = new_cells
    path = folder / name
    nbformat.write(nb, path)
    return path


def console_script(name: str, module: str) -> list[str]:
    """``name`` from the interpreter's own bin folder, else ``python -m module``."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return [str(candidate)]
    return [sys.executable, "-m", module]


def without_agent_env() -> dict[str, str]:
    """``os.environ`` without the variables in ``AGENT_ENV``."""
    return {key: value for key, value in os.environ.items() if key not in AGENT_ENV}


def isolated_env(home: Path, offline: bool = True) -> dict[str, str]:
    """The caller's environment for a benchmark's subprocesses, cut off from its W&B setup.

    None of the caller's ``WANDB_*`` or ``NBSWEEP_STORE`` settings; ``HOME`` is ``home`` (a
    fresh IPython profile, no wandb settings or netrc); this interpreter's bin folder first
    on ``PATH``; wandb silent (and ``WANDB_MODE=offline`` with ``offline``), with no error
    reports, git or code saving, system metrics or machine probes (they would ask cloud
    metadata URLs): no account, no network.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("WANDB_") and key != "NBSWEEP_STORE"
    }
    env.update(
        HOME=str(home),
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        PYTHONUNBUFFERED="1",
        WANDB_SILENT="true",
        WANDB_ERROR_REPORTING="false",
        WANDB_DISABLE_GIT="true",
        WANDB_DISABLE_CODE="true",
        WANDB__DISABLE_STATS="true",
        WANDB__DISABLE_MACHINE_INFO="true",
    )
    if offline:
        env["WANDB_MODE"] = "offline"
    return env


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (``statistics.quantiles``' inclusive);
    None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def kill_tree(process: subprocess.Popen[Any]) -> None:
    """Kill a process we started and everything under it, by pid, and wait for it."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    process.kill()
    process.wait()


def aligned(rows: Sequence[Sequence[str]]) -> str:
    """``rows`` as a text table: the first row is the header, underlined with dashes; the
    first column left-aligned, the others right-aligned, two spaces between columns."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """This machine, for a JSON report: Python version, platform and CPU count."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def versions(packages: Iterable[str]) -> dict[str, str]:
    """Each package's installed version, or ``"not installed"``."""
    found: dict[str, str] = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` as indented JSON, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
