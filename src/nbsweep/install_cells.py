"""Install lines (``!pip install``, ``%pip install``, ``%conda install`` ...) do not run in a
trial: re-installing per trial wastes it, and on an offline cluster it hangs until pip times
out. W&B's tutorials start with one. The line stays visible in the saved notebook as a
comment; the rest of its cell runs. Pure: no kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nbformat import NotebookNode

SKIPPED = "# nbsweep skipped:"
# `!pip install`, `%pip install`, `!python -m pip install`, `!pip3 install`, conda, mamba,
# uv pip, with anything before `install` that is an option (`!pip -q install x`).
_INSTALL = re.compile(
    r"""^(?P<indent>\s*)(?P<line>
        [!%]\s*(?:(?:\S*python[\d.]*|\S*py)\s+-m\s+)?
        (?:pip[\d.]*|conda|mamba|micromamba|uv\s+pip)
        (?:\s+-\S+)*\s+install\b.*)$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class SkippedLine:
    cell_index: int
    line: str


def skip_install_lines(nb: NotebookNode) -> list[SkippedLine]:
    """Turn every install line of ``nb``'s code cells into a comment, in place; what was
    skipped. Safe to run twice: a skipped line is a comment, which matches nothing."""
    skipped: list[SkippedLine] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "install" not in cell.source:
            continue
        lines = cell.source.split("\n")
        changed = False
        number = 0
        while number < len(lines):
            match = _INSTALL.match(lines[number])
            if match is None:
                number += 1
                continue
            end = number
            while lines[end].rstrip().endswith("\\") and end + 1 < len(lines):
                end += 1  # a continued command is one command
            parts = lines[number : end + 1]
            command = " ".join(line.strip().rstrip("\\").strip() for line in parts)
            indent = match.group("indent")
            # `pass` keeps an indented block (`if not installed:`) valid Python.
            statement = "pass  " if indent else ""
            lines[number : end + 1] = [
                f"{indent}{statement}{SKIPPED} {command} (--run-install-cells runs it)"
            ]
            skipped.append(SkippedLine(index, command))
            changed = True
            number += 1
        if changed:
            cell.source = "\n".join(lines)
    return skipped


def describe(skipped: list[SkippedLine], cell_number: list[int | None]) -> str:
    """One line for the user; ``cell_number`` maps the trial's cells to the user's."""
    first = skipped[0]
    where = cell_number[first.cell_index] if first.cell_index < len(cell_number) else None
    more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
    count = f"{len(skipped)} install line{'s' if len(skipped) > 1 else ''}"
    return (
        f"skipped {count} (cell {where if where is not None else first.cell_index}: "
        f"{first.line}{more}); --run-install-cells runs them"
    )
