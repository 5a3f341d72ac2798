"""What one trial came to: its status, why, where its notebook is, what it measured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbsweep.kernel.executor import CellFailure
from nbsweep.status import EndReason, TrialStatus
from nbsweep.trial.metrics import Metrics

ERROR_LENGTH = 200
"""The most characters ``TrialResult.error`` has: it goes on one line, in a store, in W&B."""
# What ended a trial that no error of its own ended, as "cell 3: running when ...".
_ENDED_BY = {
    EndReason.TRIAL_TIMEOUT: "--trial-timeout ran out",
    EndReason.CELL_TIMEOUT: "its --timeout ran out",
    EndReason.STOPPED: "the sweep stopped it",
}


@dataclass
class TrialResult:
    status: TrialStatus
    """finished, failed or stopped (a plain string is made one)."""
    reason: EndReason
    """Why it ended so (a plain string is made one)."""
    output: Path
    html: Path | None
    metrics: Metrics
    duration: float
    failure: CellFailure | None = None
    """Secrets already redacted (the trial runner does it)."""
    source_cell_index: int | None = None
    """The failing cell's index in the notebook as the user wrote it (None: injected cell)."""
    warnings: tuple[str, ...] = ()
    kernel_lost: bool = False
    """The kernel died or was killed before the trial ended: nothing in it could clean up."""
    save_error: str | None = None
    """Why the executed notebook could not be saved (a full disk, a read-only folder)."""
    start_error: str | None = None
    """Why the trial never ran (values the notebook refuses, a kernel that would not start),
    secrets redacted."""
    late_stop: EndReason | None = None
    """Set ("interrupted", "terminated") by a Ctrl-C or SIGTERM that came after the last cell,
    while the trial was saved. Its status stands; the command that ran it exits as told."""

    def __post_init__(self) -> None:
        self.status = TrialStatus(self.status)
        self.reason = EndReason(self.reason)

    @property
    def failed_cell(self) -> str:
        """The cell ``failure`` happened in, as the user numbers the notebook's cells."""
        index = self.source_cell_index
        return "the injected parameters cell" if index is None else f"cell {index}"

    @property
    def exception(self) -> str:
        """``ValueError: bad lr``: the failing cell's exception and its whole message (or
        its name alone, if it has none); empty if no cell failed."""
        if self.failure is None:
            return ""
        message = self.failure.evalue.strip()
        return f"{self.failure.ename}: {message}" if message else self.failure.ename

    @property
    def error(self) -> str | None:
        """Why the trial did not finish, in one line of at most ``ERROR_LENGTH`` characters:
        ``cell 4: ValueError: bad lr`` (the first line of the message); None if it finished
        or nothing more is known than its reason."""
        if self.status is TrialStatus.FINISHED:
            return None
        if self.save_error is not None:
            said = f"notebook not saved: {self.save_error}"
        elif self.start_error is not None:
            said = self.start_error
        elif self.failure is None:
            return None
        elif self.reason in _ENDED_BY or self.status is TrialStatus.STOPPED:
            # The cell's own error here is the KeyboardInterrupt the stop caused: say who.
            said = f"{self.failed_cell}: running when {_ENDED_BY.get(self.reason, self.reason)}"
        else:
            said = f"{self.failed_cell}: {self.exception}"
        said = " ".join(said.split("\n", 1)[0].split())
        return said if len(said) <= ERROR_LENGTH else said[: ERROR_LENGTH - 3] + "..."
