"""A notebook's setup run once in the fork template: what is asked of it (``SetupWork``),
what came of it (``SetupOutcome``), and how its outputs go into each trial's notebook.

The setup is the cells before the first cell a trial's values reach (``notebook/setup.py``).
The template runs them (``kernel/launcher.py``, ``kernel/setup_shell.py``), checks that it
can still fork, and every trial's kernel starts from that state; each trial's saved
notebook holds the setup's outputs, marked as run once, then its own.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # nbformat is not loaded before `nbsweep run` starts its kernel
    from nbformat import NotebookNode

SETUP_MODULES = {
    name: str(Path(__file__).with_name(f"setup_{name}.py")) for name in ("shell", "seeds", "checks")
}
"""The files the template loads the setup's shell, seed tracker and checks from."""


@dataclass(frozen=True)
class SetupWork:
    """The setup cells a template runs before its first fork."""

    fork_index: int
    """The first cell a trial runs itself (index in the notebook as a trial runs it)."""
    cells: tuple[int, ...]
    """The code cells before it that the template runs."""
    sources: tuple[str, ...]
    file_cells: tuple[int, ...]
    """The numbers ``cells`` have in the notebook file (what messages say)."""
    fork_point: str
    """Where the values enter, in words (for messages)."""
    env: Mapping[str, str] = field(hash=False)
    """What the setup runs with on top of the kernels' environment (not the trials')."""
    cell_timeout: float | None = None
    stream_limit: int = 1 << 20
    per_trial: tuple[str, ...] = ()
    """Variables each trial sets to its own value (a setup that reads one is not shared)."""

    def describe(self) -> str:
        """Which cells are the setup, for messages ("cells 0-3")."""
        cells = self.file_cells
        if len(cells) == 1:
            return f"cell {cells[0]}"
        if cells == tuple(range(cells[0], cells[-1] + 1)):
            return f"cells {cells[0]}-{cells[-1]}"
        return "cells " + ", ".join(map(str, cells))


@dataclass
class SetupOutcome:
    """What the template's setup came to."""

    work: SetupWork
    outputs: list[list[dict[str, Any]]] = field(default_factory=list)
    """Per setup cell, its outputs as nbformat output dicts."""
    execution_counts: list[int | None] = field(default_factory=list)
    shared: bool = False
    """The template kept the setup's state: trials fork from it and run from the fork point."""
    why_not: str | None = None
    """Where not shared: why, naming the cell."""
    warning: str | None = None
    """Something each trial inherits that fresh kernels would not (said once)."""
    at: str = ""
    host: str = ""
    pid: int = 0

    def fill(self, nb: NotebookNode) -> None:
        """Put the setup's outputs into a trial's notebook (``nb`` as the trial runs it),
        each cell marked as run once, with when, where and by which process."""
        from nbformat import from_dict

        mark = {"ran_once": True, "at": self.at, "host": self.host, "template_pid": self.pid}
        for index, outputs, count in zip(
            self.work.cells, self.outputs, self.execution_counts, strict=False
        ):
            cell = nb.cells[index]
            cell.outputs = [from_dict(copy.deepcopy(output)) for output in outputs]
            cell.execution_count = count
            cell.metadata.setdefault("nbsweep", {})["setup"] = dict(mark)

    def matches(self, nb: NotebookNode) -> bool:
        """Whether ``nb``'s cells before the fork point are the ones the template ran."""
        work = self.work
        if len(nb.cells) <= max(work.cells, default=-1):
            return False
        pairs = zip(work.cells, work.sources, strict=True)
        return all(nb.cells[index].source == source for index, source in pairs)
