"""Install lines (``!pip install``, ``%pip install``, ``!conda install``, ...) made inert
for trials: re-installing per trial wastes the trial, and on an offline cluster it hangs
until pip times out. The lines stay visible in the saved notebook as comments; the rest
of their cell still runs. Pure: no kernel, no IPython.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbformat import NotebookNode


OPTION = "--run-install-cells"
MARK = "# nbsweep skipped: "

_INSTALLER = r"(?:\S*/)?(?:pip[\d.]*|conda|mamba|micromamba)"
_PYTHON_M_PIP = r"(?:\S*/)?(?:python[\d.]*|\{sys\.executable\})\s+-m\s+pip"
# An escape (! or !! for the shell, % for the magic), the installer, options, then install.
_INSTALL = re.compile(
    rf"^(?:!!?\s*(?:{_PYTHON_M_PIP}|uv\s+pip|{_INSTALLER})|%(?:pip|conda|mamba|micromamba))"
    r"(?:\s+-\S+)*\s+install(?:\s|$)"
)
# W&B's CLI lines a trial must never run: a login waits on a prompt, and an agent or a
# sweep would start a second sweep inside the trial (the trial already is one of its runs).
_WANDB_CLI = re.compile(r"^!!?\s*(?:\S*/)?wandb\s+(?:login|agent|sweep|controller|launch)\b")
# Cell magics whose body is Python that runs once: their install lines are skipped too.
_PYTHON_CELL_MAGICS = frozenset({"capture", "time"})
_NEVER_RUN = "never run in a trial"
_SKIPPED = re.compile(
    rf"^(?P<indent>[ \t]*)(?:pass  )?{re.escape(MARK)}(?P<command>.*) "
    rf"\((?:{OPTION} runs it|{_NEVER_RUN})\)$"
)
_TRIPLE_QUOTE = re.compile(r'"""|\'\'\'')
_MESSAGE_EXAMPLES = 3


@dataclass(frozen=True)
class SkippedLine:
    cell_index: int
    """Index in the notebook given to ``skip_install_lines``."""
    line: str
    """The install command as the kernel would have run it (continuations joined)."""
    wandb_cli: bool = False
    """A ``!wandb login|agent|sweep`` line: skipped even with ``--run-install-cells``."""


def skip_install_lines(nb: NotebookNode, installs: bool = True) -> list[SkippedLine]:
    """Replace the install lines (with ``installs``) and W&B CLI lines of ``nb``'s code
    cells, in place, with comments; return what was skipped. Safe to run twice: lines an
    earlier run skipped (an executed notebook run again) are restored and skipped again,
    so they are reported again, same source."""
    skipped: list[SkippedLine] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        new_source, lines = _skip_in_source(_restored(_source(cell)), installs)
        if lines:
            cell.source = new_source
            skipped.extend(SkippedLine(index, line, wandb_cli) for line, wandb_cli in lines)
    return skipped


def restore_install_lines(nb: NotebookNode) -> None:
    """Undo an earlier ``skip_install_lines``, in place: ``--run-install-cells`` on an
    executed notebook runs what its trial skipped."""
    for cell in nb.cells:
        if cell.cell_type == "code" and MARK in _source(cell):
            cell.source = _restored(_source(cell))


def skip_as_trials_do(nb: NotebookNode, run_install_cells: bool) -> list[SkippedLine]:
    """``nb``'s code cells made what a trial runs, in place: W&B CLI lines skipped, and the
    install lines too unless ``run_install_cells`` (which brings back those an earlier run
    skipped: an executed notebook run again). Returns what was skipped."""
    if run_install_cells:
        restore_install_lines(nb)
    return skip_install_lines(nb, installs=not run_install_cells)


def _source(cell: NotebookNode) -> str:
    return "".join(cell.source) if isinstance(cell.source, list) else cell.source


def _restored(source: str) -> str:
    """The commands back in place of their comments; a continued command comes back as one
    line, its ``#`` lines kept (IPython joins the lines anyway; line numbers stay)."""
    if MARK not in source:
        return source
    return "\n".join(_SKIPPED.sub(r"\g<indent>\g<command>", line) for line in source.split("\n"))


def _skip_in_source(source: str, installs: bool) -> tuple[str, list[tuple[str, bool]]]:
    lines = source.split("\n")
    start = _body_start(lines)
    if start is None:
        return source, []
    skipped: list[tuple[str, bool]] = []
    open_quote: str | None = None
    row = start
    while row < len(lines):
        end = _logical_end(lines, row)
        command = _joined(lines[row : end + 1])
        wandb_cli = bool(_WANDB_CLI.match(command))
        if open_quote is None and (wandb_cli or (installs and _INSTALL.match(command))):
            lines[row : end + 1] = _replacement(lines[row : end + 1], command, wandb_cli)
            skipped.append((command, wandb_cli))
        else:
            for line in lines[row : end + 1]:
                open_quote = _quote_state(line, open_quote)
        row = end + 1
    return "\n".join(lines), skipped


def _body_start(lines: list[str]) -> int | None:
    """Where the Python starts: after a ``%%capture``-like first line; None for cells
    in another language (``%%bash``, ``%%writefile``), whose lines are not Python's."""
    first = lines[0].strip() if lines else ""
    if not first.startswith("%%"):
        return 0
    name = first[2:].split(maxsplit=1)[0] if first[2:].strip() else ""
    return 1 if name in _PYTHON_CELL_MAGICS else None


def _logical_end(lines: list[str], row: int) -> int:
    """The last physical line of the logical line starting at ``row`` (``\\`` continues)."""
    end = row
    while lines[end].endswith("\\") and end + 1 < len(lines):
        end += 1
    return end


def _joined(physical: list[str]) -> str:
    parts = [line.strip().removesuffix("\\").strip() for line in physical]
    return " ".join(part for part in parts if part)


def _replacement(physical: list[str], command: str, wandb_cli: bool) -> list[str]:
    """As many lines as were there (tracebacks keep their line numbers). An indented line
    is in a block, which a comment alone would leave empty: ``pass`` keeps it valid."""
    indent = physical[0][: len(physical[0]) - len(physical[0].lstrip())]
    statement = "pass  " if indent else ""
    why = _NEVER_RUN if wandb_cli else f"{OPTION} runs it"
    first = f"{indent}{statement}{MARK}{command} ({why})"
    return [first] + [f"{indent}#"] * (len(physical) - 1)


def _quote_state(line: str, open_quote: str | None) -> str | None:
    """Whether a triple-quoted string is open after ``line``: an install-looking line in
    one is text, not a command (IPython reads it so too). Triple quotes only: enough for
    lines that start with ``!`` or ``%``."""
    for match in _TRIPLE_QUOTE.finditer(line):
        quote = match.group()
        if open_quote is None:
            open_quote = quote
        elif quote == open_quote:
            open_quote = None
    return open_quote


def skipped_message(
    skipped: Sequence[SkippedLine], source_index: Callable[[int], int | None]
) -> str | None:
    """One line naming what was skipped, cells numbered as ``nbsweep inspect`` and failure
    messages number them (the user's notebook, markdown included); None if nothing was.
    ``source_index``: the trial's cell index -> the user's."""
    installs = [item for item in skipped if not item.wandb_cli]
    wandb_lines = [item for item in skipped if item.wandb_cli]
    parts = []
    if installs:
        parts.append(f"{_listed(installs, 'install', source_index)}; {OPTION} runs them")
    if wandb_lines:
        parts.append(f"{_listed(wandb_lines, 'W&B CLI', source_index)}; {_WANDB_CLI_WHY}")
    return " and ".join(parts) or None


_WANDB_CLI_WHY = "a trial is already a run of the sweep, logged in"


def _listed(
    skipped: Sequence[SkippedLine], what: str, source_index: Callable[[int], int | None]
) -> str:
    shown = [
        f"cell {_user_number(item.cell_index, source_index)}: {item.line}"
        for item in skipped[:_MESSAGE_EXAMPLES]
    ]
    if len(skipped) > _MESSAGE_EXAMPLES:
        shown.append(f"and {len(skipped) - _MESSAGE_EXAMPLES} more")
    count = len(skipped)
    noun = "line" if count == 1 else "lines"
    return f"skipped {count} {what} {noun} ({'; '.join(shown)})"


def is_skipped_message(message: str) -> bool:
    """Whether a trial warning is ``skipped_message``'s, the same for every trial of a
    notebook, so an agent says it once."""
    return message.startswith("skipped ") and message.endswith(
        (f"; {OPTION} runs them", f"; {_WANDB_CLI_WHY}")
    )


def _user_number(index: int, source_index: Callable[[int], int | None]) -> int:
    origin = source_index(index)
    return index if origin is None else origin
