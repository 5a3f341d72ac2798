"""What one trial came to: its status, why, where its notebook is, what it measured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nbsweep.kernel.executor import CellFailure
from nbsweep.status import TrialStatus
from nbsweep.trial.metrics import Metrics


@dataclass
class TrialResult:
    status: TrialStatus
    """finished, failed or stopped (a plain string is made one)."""
    reason: str
    output: Path
    html: Path | None
    metrics: Metrics
    duration: float
    failure: CellFailure | None = None
    source_cell_index: int | None = None
    """The failing cell's index in the notebook as the user wrote it (None: injected cell)."""
    warnings: tuple[str, ...] = ()
    kernel_lost: bool = False
    """The kernel died or was killed before the trial ended: nothing in it could clean up."""
    save_error: str | None = None
    """Why the executed notebook could not be saved (a full disk, a read-only folder)."""

    def __post_init__(self) -> None:
        self.status = TrialStatus(self.status)
