"""Which sweep and run a trial belongs to, and the environment that tells a notebook's
wandb so: neutral ground for the W&B protocol (``sweeping.wandb.service``), the SDK side
(``sweeping.wandb.runs``) and local sweeps, none of which needs the others for it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nbsweep.errors import UsageError


@dataclass(frozen=True)
class SweepPath:
    """``id``, ``project/id`` or ``entity/project/id``, as ``wandb agent`` accepts."""

    sweep: str
    project: str | None = None
    entity: str | None = None

    @classmethod
    def parse(cls, text: str, environ: Mapping[str, str] = os.environ) -> SweepPath:
        parts = text.strip().strip("/").split("/")
        if not all(parts) or len(parts) > 3:
            raise UsageError(f"sweep id {text!r} is not ID, PROJECT/ID or ENTITY/PROJECT/ID")
        sweep = parts[-1]
        project = parts[-2] if len(parts) >= 2 else environ.get("WANDB_PROJECT")
        entity = parts[-3] if len(parts) == 3 else environ.get("WANDB_ENTITY")
        return cls(sweep, project or None, entity or None)

    def __str__(self) -> str:
        return "/".join(part for part in (self.entity, self.project, self.sweep) if part)


PER_RUN_VARIABLES = frozenset({"WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH"})
"""The variables of ``run_environment`` that differ from run to run."""


def run_environment(path: SweepPath, run_id: str, param_file: Path) -> dict[str, str]:
    """What the kernel needs so that a notebook's own ``wandb.init()`` joins the run."""
    env = {
        "WANDB_SWEEP_ID": path.sweep,
        "WANDB_RUN_ID": run_id,
        "WANDB_SWEEP_PARAM_PATH": str(param_file),
    }
    if path.project:
        env["WANDB_PROJECT"] = path.project
    if path.entity:
        env["WANDB_ENTITY"] = path.entity
    return env


def agent_sweep_path(environ: Mapping[str, str]) -> SweepPath | None:
    """The sweep ``wandb agent`` set in the environment, if any."""
    sweep = environ.get("WANDB_SWEEP_ID")
    if not (sweep and environ.get("WANDB_RUN_ID")):
        return None
    return SweepPath(sweep, environ.get("WANDB_PROJECT"), environ.get("WANDB_ENTITY"))
