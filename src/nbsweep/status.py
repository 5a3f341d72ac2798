"""One vocabulary for how trials and runs end, and for the numbers JSON cannot hold.

``TrialStatus``: how a trial ended (``TrialResult.status``), with the exit code W&B records.
``EndReason``: why it ended so. ``SweepState`` and ``SweepAction``: a sweep's state and what
moves it (the same for local sweeps and W&B's, whose API spells states in capitals).
``RunState``: a run's state in a local sweep's store (a trial's status, or pending, running,
crashed). ``ExitPlan``: how a used kernel is stopped. nan and the infinities travel as the
strings JSON writers use ("NaN", "Infinity", "-Infinity"): ``to_json_number`` and
``from_json_number``. Imports only the standard library: the kernel imports it too.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any


class _Named(str, Enum):
    """A value that is its name as stored and printed: ``str()`` and f-strings give the
    value, where a plain str enum gives ``Class.MEMBER``."""

    value: str

    def __str__(self) -> str:
        return self.value


class TrialStatus(_Named):
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def wandb_exit_code(self) -> int:
        """What W&B records for it; a stopped trial exits like a process stopped by Ctrl-C."""
        return {"finished": 0, "failed": 1, "stopped": 130}[self.value]


class EndReason(_Named):
    """Why a trial ended: stored, printed and compared as these strings."""

    FINISHED = "finished"
    CELL_ERROR = "cell-error"
    KERNEL_DIED = "kernel-died"
    CELL_TIMEOUT = "cell-timeout"
    TRIAL_TIMEOUT = "trial-timeout"
    STOPPED = "stopped"
    """The sweep stopped it (hyperband, ``--stop-run``, a cancel)."""
    INTERRUPTED = "interrupted"
    """Ctrl-C."""
    TERMINATED = "terminated"
    """SIGTERM."""
    CANNOT_SAVE = "cannot-save"
    COULD_NOT_START = "could-not-start"
    ERROR = "error"
    """nbsweep itself failed while the cells ran."""
    EXITED = "exited"
    """A cell called ``sys.exit(0)`` (or raised a bare ``SystemExit``): a finished trial."""

    @property
    def is_timeout(self) -> bool:
        return self in (EndReason.CELL_TIMEOUT, EndReason.TRIAL_TIMEOUT)


class SweepState(_Named):
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELED = "canceled"

    @property
    def wandb_name(self) -> str:
        """As W&B's API spells it: RUNNING, PAUSED, FINISHED, CANCELED."""
        return self.value.upper()

    @property
    def ended(self) -> bool:
        return self in (SweepState.FINISHED, SweepState.CANCELED)


class SweepAction(_Named):
    """What ``nbsweep sweep --pause`` and its siblings ask for; ``state`` is where it leads."""

    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    """Running trials finish; nothing new starts."""
    CANCEL = "cancel"
    """Running trials stop too."""

    @property
    def state(self) -> SweepState:
        return _ACTION_STATES[self]


_ACTION_STATES = {
    SweepAction.PAUSE: SweepState.PAUSED,
    SweepAction.RESUME: SweepState.RUNNING,
    SweepAction.STOP: SweepState.FINISHED,
    SweepAction.CANCEL: SweepState.CANCELED,
}


class RunState(_Named):
    """In the order ``nbsweep status`` totals them."""

    finished = "finished"
    running = "running"
    pending = "pending"
    failed = "failed"
    crashed = "crashed"
    stopped = "stopped"  # ended by a stop request

    @classmethod
    def of(cls, status: TrialStatus | str) -> RunState:
        """The state a trial's status leaves its run in (anything unknown: failed)."""
        try:
            return cls(TrialStatus(status).value)
        except ValueError:
            return cls.failed

    @property
    def sweeps_name(self) -> str:
        """The name W&B and its ``sweeps`` engine use: they call a stopped run ``killed``."""
        return "killed" if self is RunState.stopped else self.value


ENDED_STATES = frozenset({RunState.finished, RunState.failed, RunState.crashed, RunState.stopped})


class ExitPlan(Enum):
    """How a kernel whose trial is over is stopped."""

    KILL = "kill"
    """It has nothing to do at exit that the fresh kernel had not: kill it."""
    POLITE_NO_TEARDOWN = "polite, no teardown"
    """Run its exit handlers, then end without the interpreter's teardown."""
    POLITE = "polite"
    """A whole polite shutdown (a file open for writing is flushed)."""


_FROM_JSON = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def to_json_number(value: float) -> float | str:
    """A float as strict JSON holds it: itself, or "NaN", "Infinity", "-Infinity"."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def from_json_number(value: Any) -> Any:
    """``to_json_number`` undone: those three strings as floats; anything else unchanged."""
    return _FROM_JSON.get(value, value) if isinstance(value, str) else value
