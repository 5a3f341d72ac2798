"""Where a trial's values first enter a notebook (the fork point), and the cells before it:
the setup, which an agent can run once and fork every trial's kernel from.

The fork point is the injected parameters cell (after the ``parameters`` cell), the
``config`` dict's assignment, the chosen ``wandb.agent`` call, or, in a notebook whose values
go to ``wandb.config`` without one, the first ``wandb.init``; a cell tagged
``nbsweep-per-trial`` moves it earlier. Pure: no kernel, no wandb, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbformat import NotebookNode

from nbsweep.errors import NotebookError
from nbsweep.notebook.injection import clean, notebook_language
from nbsweep.notebook.install_cells import skip_as_trials_do
from nbsweep.notebook.parameters import DEFAULT_CONFIG_VAR, find_parameters_or_none
from nbsweep.notebook.wandb_way import (
    analyse,
    first_wandb_init_cell,
    parse_cell,
    values_go_to_wandb_config,
)

PER_TRIAL_TAG = "nbsweep-per-trial"
"""A cell tag: this cell and every cell after it run per trial (running a tagged cell later
than the setup around it would reorder its effects)."""


@dataclass(frozen=True)
class SetupPlan:
    """Which cells of a notebook are its setup, and where trials take over."""

    fork_index: int
    """Index, in the notebook as a trial runs it (``injection.clean``'s output; injection only
    ever inserts cells at or after this index), of the first cell a trial runs itself."""
    cells: tuple[int, ...]
    """Indices of the code cells before ``fork_index`` with a non-blank source: what the
    template runs."""
    sources: tuple[str, ...]
    """Their sources, exactly as a trial would run them (install lines skipped the same way)."""
    fork_point: str
    """How the fork point was found, for messages, cells numbered as in the notebook file:
    "the injected parameters after cell 3", "the wandb.agent call in cell 7" ..."""
    file_cells: tuple[int, ...]
    """The numbers ``cells`` have in the notebook file (as nbsweep's messages number cells)."""
    fork_cell: int
    """The number, in the notebook file, of the first cell trials run themselves (the number
    of cells in the file when they run only the injected parameters)."""


def plan_setup(
    nb: NotebookNode,
    *,
    config_var: str = DEFAULT_CONFIG_VAR,
    sweep_function: str | None = None,
    run_install_cells: bool = False,
) -> SetupPlan:
    """The setup of ``nb``, the notebook as read from its file: cleaned as ``parameterize``
    cleans it, its install lines skipped as ``trial.run.prepare`` skips them.

    Raises only what ``prepare`` raises for the same notebook with no values (a
    ``sweep_function`` that no ``wandb.agent`` call runs); a cell that does not parse moves
    the fork point to it."""
    trial_nb, origins = clean(nb)
    fork = _where_values_enter(trial_nb, origins, config_var, sweep_function)
    skip_as_trials_do(trial_nb, run_install_cells)
    fork_index, fork_point = _cut_at_per_trial_tag(
        trial_nb, origins, *_cut_at_unreadable(trial_nb, origins, *fork)
    )
    cells = tuple(
        index
        for index, cell in enumerate(trial_nb.cells[:fork_index])
        if cell.cell_type == "code" and cell.source.strip()
    )
    return SetupPlan(
        fork_index=fork_index,
        cells=cells,
        sources=tuple(trial_nb.cells[index].source for index in cells),
        fork_point=fork_point,
        file_cells=tuple(_file_number(origins, index) for index in cells),
        fork_cell=_file_number(origins, fork_index),
    )


def _where_values_enter(
    nb: NotebookNode, origins: list[int | None], config_var: str, sweep_function: str | None
) -> tuple[int, str]:
    """The first cell where a trial's values can enter, as ``parameterize`` places them."""
    language = notebook_language(nb)
    if language != "python":
        return 0, f"the first cell (nbsweep reads Python notebooks; this one is {language!r})"
    shape = analyse(nb, sweep_function)
    try:
        found = find_parameters_or_none(nb, config_var)
    except NotebookError as error:  # a trial given values stops at it too
        return 0, f"the first cell ({error})"
    if found is None or values_go_to_wandb_config(found, shape):
        if shape.agent_cell is not None:
            return shape.agent_cell, f"the wandb.agent call in cell {origins[shape.agent_cell]}"
        first_init = first_wandb_init_cell(nb)
        if first_init is not None:
            return first_init, f"the first wandb.init in cell {origins[first_init]}"
        return 0, "the first cell (nbsweep finds no cell where a trial's values enter)"
    where = origins[found.cell_index]
    if found.style == "config-dict":
        fork = found.cell_index, f"the {found.config_var} dict assignment in cell {where}"
    else:
        fork = found.cell_index + 1, f"the injected parameters after cell {where}"
    first_init = first_wandb_init_cell(nb) if shape.agent_cell is None else None
    if first_init is not None and first_init < fork[0]:
        # Without a wandb.agent call, the first wandb.init opens the trial's own run.
        return first_init, f"the first wandb.init in cell {origins[first_init]}"
    return fork


def _cut_at_unreadable(
    nb: NotebookNode, origins: list[int | None], fork_index: int, fork_point: str
) -> tuple[int, str]:
    """A setup cell that is not Python may hide where values enter: trials run it."""
    for index, cell in enumerate(nb.cells[:fork_index]):
        if cell.cell_type != "code":
            continue
        _, problem = parse_cell(cell.source)
        if problem is not None:
            return index, f"cell {origins[index]}, which is not Python nbsweep reads ({problem})"
    return fork_index, fork_point


def _cut_at_per_trial_tag(
    nb: NotebookNode, origins: list[int | None], fork_index: int, fork_point: str
) -> tuple[int, str]:
    for index, cell in enumerate(nb.cells[:fork_index]):
        if PER_TRIAL_TAG in cell.metadata.get("tags", []):
            return index, f"cell {origins[index]}, tagged {PER_TRIAL_TAG}"
    return fork_index, fork_point


def _file_number(origins: list[int | None], index: int) -> int:
    """The file's number for the cleaned notebook's cell ``index``; past the end, the number
    after the last cell kept. ``clean`` keeps only cells of the file, so each has one."""
    kept = [origin for origin in origins[: index + 1] if origin is not None]
    if index < len(origins):
        return kept[-1]
    return kept[-1] + 1 if kept else 0
