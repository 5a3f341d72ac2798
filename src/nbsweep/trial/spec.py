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
        return run_output(notebook, sweep, run)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(RUNS_FOLDER) / notebook.stem / f"{stamp}-{secrets.token_hex(3)}" / notebook.name


def run_output(notebook: Path, sweep_id: str, run_id: str) -> Path:
    """``nbsweep-runs/<sweep>/<run>/<notebook>``: where a sweep's run saves its notebook.
    The ids come from a server, a store or the environment: UsageError for one that would
    lead outside ``nbsweep-runs/``."""
    folder = Path(RUNS_FOLDER) / files.safe_id(sweep_id, "sweep id")
    return folder / files.safe_id(run_id, "run id") / notebook.name


def html_path(output: Path) -> Path:
    """Where the HTML copy of the executed notebook ``output`` goes (``--html``)."""
    return output.with_suffix(".html")
