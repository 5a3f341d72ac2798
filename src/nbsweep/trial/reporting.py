"""What a trial shows while it runs: progress (one updating line on a terminal, plain lines
otherwise), the kernel's output with --log-output, metrics as they arrive, and warnings."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from nbsweep.formatting import format_value
from nbsweep.trial.metrics import MetricRecord

if TYPE_CHECKING:
    from nbsweep.trial.result import TrialResult

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Reporter:
    """Prints to ``stream`` (stderr by default); the kernel's output goes to stdout/stderr."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        log_output: bool = False,
        tty: bool | None = None,
        prefix: str = "",
    ) -> None:
        self.out = stream or sys.stderr
        self.log_output = log_output
        self.tty = self.out.isatty() if tty is None else tty
        self.prefix = prefix
        self._started = time.monotonic()
        self._said: set[str] = set()
        self._status_shown = False

    def line(self, text: str) -> None:
        """A line of its own (agents: which run, which values)."""
        self._line(text)

    def _line(self, text: str) -> None:
        self._clear_status()
        print(f"{self.prefix}{text}", file=self.out, flush=True)

    def _status(self, text: str) -> None:
        if self.tty:
            self.out.write(f"\r\x1b[2K{self.prefix}{text}")
            self.out.flush()
            self._status_shown = True
        else:
            self._line(text)

    def _clear_status(self) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[2K")
            self._status_shown = False

    def elapsed(self) -> str:
        return f"{time.monotonic() - self._started:.1f}s"

    def warn(self, message: str) -> None:
        self._line(f"warning: {message}")

    def warn_once(self, message: str) -> None:
        """``warn``, unless this reporter said it already (an agent reports many trials)."""
        if message not in self._said:
            self._said.add(message)
            self.warn(message)

    def trial_started(self, notebook: Path, output: Path) -> None:
        self._started = time.monotonic()
        self._line(f"running {notebook} -> {output}")

    def cell_started(self, index: int | None, number: int, total: int) -> None:
        """``index``: the cell in the notebook as the user wrote it, as errors name it (None:
        the injected parameters); ``number`` of ``total``: its place among the code cells."""
        which = "the injected parameters" if index is None else f"cell {index}"
        self._status(f"{which} started ({number}/{total}) [{self.elapsed()}]")

    def cell_finished(self, index: int, seconds: float) -> None:
        if self.tty:
            self._status(f"cell done in {seconds:.2f}s [{self.elapsed()}]")

    def stream(self, name: str, text: str) -> None:
        if not self.log_output:
            return
        self._clear_status()
        target = sys.stderr if name == "stderr" else sys.stdout
        target.write(text)
        target.flush()

    def metric(self, record: MetricRecord) -> None:
        shown = (f"{k}={format_value(v, 6, quote=False)}" for k, v in record.values.items())
        values = ", ".join(shown)
        self._line(f"step {record.step}: {values}")

    def trial_finished(self, result: TrialResult) -> None:
        self._clear_status()
        why = f"{result.error}: " if result.error else ""
        self._line(
            f"{result.status} ({result.reason}) in {result.duration:.1f}s: {why}{result.output}"
        )


def failure_message(result: TrialResult) -> str:
    """Which cell failed and how, the end of its traceback, and where the notebook is."""
    failure = result.failure
    if result.save_error is not None:
        return f"trial ran, but its notebook was not saved: {result.save_error}"
    if failure is None:
        return f"trial failed ({result.reason}); notebook saved: {result.output}"
    # Worded as the one-line ``result.error`` the agent and the store show, whole.
    headline = f"{result.failed_cell} failed: {result.exception}"
    if failure.ename == "StdinNotImplementedError":
        headline += " (input() is not available in a trial: make the value a parameter)"
    body = "".join(f"\n    {line}" for line in _traceback_excerpt(failure.traceback))
    return f"{headline}{body}\n  notebook saved: {result.output}"


def _traceback_excerpt(traceback: tuple[str, ...], frame_lines: int = 5) -> list[str]:
    """The notebook's own last frame (where in the cell it failed) and the error line."""
    entries = [_ANSI.sub("", entry).strip("\n") for entry in traceback]
    if not entries:
        return []
    in_cell = [entry for entry in entries if entry.lstrip().startswith("Cell In[")]
    frame = in_cell[-1].splitlines()[:frame_lines] if in_cell else []
    error = entries[-1].splitlines()[-1:] if len(entries) > 1 or not in_cell else []
    lines = frame + error if frame else "\n".join(entries).splitlines()[-frame_lines - 1 :]
    return [line for line in lines if line.strip()]
