"""What a notebook calls: ``nbsweep.log({...})``. Runs inside the kernel; imports nothing heavy.

Under an nbsweep trial each call appends one record to the trial's metrics channel (see
``kernel_hooks``: a file, so that no record is dropped however fast a notebook logs) and,
when the notebook opened a wandb run itself, logs to that run too.
Anywhere else it prints the metrics, so the notebook still runs in plain Jupyter.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping
from typing import Any

from nbsweep.formatting import format_value
from nbsweep.kernel import hooks as kernel_hooks

TRIAL_ENV = "NBSWEEP_TRIAL"

_steps = itertools.count()


def log(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Report ``metrics`` (name -> number) for this trial, at ``step`` or the next one."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"nbsweep.log expects a dict of metrics, not {type(metrics).__name__}")
    step = next(_steps) if step is None else int(step)
    clean = {str(name): kernel_hooks.plain(value) for name, value in metrics.items()}
    if not kernel_hooks.emit({"h": clean, "s": step, "o": "nbsweep"}):
        summary = ", ".join(
            f"{name}={format_value(value, 6, quote=False)}" for name, value in clean.items()
        )
        print(f"nbsweep.log step {step}: {summary}")
        return
    # A notebook that opened its own wandb run reports there too (the runner cannot).
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        kernel_hooks.forwarding = True
        try:
            wandb.run.log(dict(metrics))
        finally:
            kernel_hooks.forwarding = False
