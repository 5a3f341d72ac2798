"""What a notebook calls: ``nbsweep.log({...})``. Runs inside the kernel; imports nothing heavy.

Under an nbsweep trial (``NBSWEEP_TRIAL`` is set in the kernel's environment) each call
emits one display message with a custom MIME type that the runner captures live, in order,
and, when the notebook opened a wandb run itself, logs to that run too.
Anywhere else it prints the metrics, so the notebook still runs in plain Jupyter.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

METRICS_MIME = "application/vnd.nbsweep.metrics+json"
TRIAL_ENV = "NBSWEEP_TRIAL"

_steps = itertools.count()


def log(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Report ``metrics`` (name -> number) for this trial, at ``step`` or the next one."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"nbsweep.log expects a dict of metrics, not {type(metrics).__name__}")
    step = next(_steps) if step is None else int(step)
    clean = {str(name): _plain(value) for name, value in metrics.items()}
    summary = ", ".join(f"{name}={_short(value)}" for name, value in clean.items())
    if not os.environ.get(TRIAL_ENV):
        print(f"nbsweep.log step {step}: {summary}")
        return
    from IPython.display import display

    payload = {"step": step, "metrics": clean}
    bundle = {METRICS_MIME: payload, "text/plain": f"step {step}: {summary}"}
    display(bundle, raw=True)
    # A notebook that opened its own wandb run reports there too (the runner cannot).
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.log(dict(metrics))


def _plain(value: Any) -> Any:
    """Numbers from numpy, torch and friends as Python numbers; nan and inf as the strings
    JSON writers use ("NaN", "Infinity"), since Jupyter messages must be strict JSON."""
    if hasattr(value, "item") and callable(value.item):
        with contextlib.suppress(TypeError, ValueError):
            value = value.item()
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return repr(value)
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return str(value)
