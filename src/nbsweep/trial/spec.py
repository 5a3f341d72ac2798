"""What a trial is given (``TrialSpec``), and where its files go: the executed notebook's
default folder (``default_output``) and its HTML copy (``html_path``)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from nbsweep.notebook import files
from nbsweep.options import TrialSettings

RUNS_FOLDER = "nbsweep-runs"


@dataclass(frozen=True)
class TrialSpec:
    """One trial: what to run, with which values, where its results go."""

    notebook: Path
    values: Sequence[tuple[str, Any]] = ()
    """(name, value) pairs, lowest precedence first; dotted names address nested keys."""
    output: Path | None = None
    """Where the executed notebook goes; None: a new folder under ``nbsweep-runs/``."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Added to this process's environment for the kernel."""
    sweep_id: str | None = None
    """The sweep this trial belongs to: what the notebook's ``wandb.sweep`` returns."""
    sweep_config: Mapping[str, Any] | None = None
    """The running sweep's config, compared with the one the notebook passes to wandb.sweep."""
    settings: TrialSettings = field(default_factory=TrialSettings)


def default_output(notebook: Path, environ: Mapping[str, str]) -> Path:
    """``nbsweep-runs/<sweep>/<run>/`` under ``wandb agent``, else a fresh timestamped folder.
    UsageError if those ids (from the environment) would leave ``nbsweep-runs/``."""
    sweep, run = environ.get("WANDB_SWEEP_ID"), environ.get("WANDB_RUN_ID")
    if sweep and run:
        folder = Path(RUNS_FOLDER) / files.safe_id(sweep, "sweep id") / files.safe_id(run, "run id")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = Path(RUNS_FOLDER) / notebook.stem / f"{stamp}-{secrets.token_hex(3)}"
    return folder / notebook.name


def html_path(output: Path) -> Path:
    """Where the HTML copy of the executed notebook ``output`` goes (``--html``)."""
    return output.with_suffix(".html")
