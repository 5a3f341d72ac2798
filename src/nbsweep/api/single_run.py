"""``nbsweep run`` as one call: its kernel starts booting first, and the rest of nbsweep
(notebooks, the executor, W&B's side) loads while it boots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nbsweep.api.arguments import ParameterSources
from nbsweep.kernel.prestart import EarlyKernel
from nbsweep.options import TrialSettings

if TYPE_CHECKING:
    from nbsweep.trial.result import TrialResult


@dataclass(frozen=True)
class RunCommand:
    """``nbsweep run``: one trial, its values from the command line and the environment."""

    notebook: Path
    parameters: ParameterSources = field(default_factory=ParameterSources)
    """Every source of values but ``WANDB_SWEEP_PARAM_PATH``, which ``run_command`` reads."""
    output: Path | None = None
    metrics_json: Path | None = None
    """Where the captured metrics (summary and history) are written as JSON."""
    settings: TrialSettings = field(default_factory=TrialSettings)
    log_output: bool = False
    """Stream the kernel's output while it runs."""


def run_command(command: RunCommand) -> TrialResult:
    """Run ``command``'s trial with Ctrl-C and SIGTERM stopping it; under ``wandb agent``
    (its variables set) the trial joins the agent's run. Raises ``TrialFailed`` or
    ``TrialStopped`` (with ``.result``, the metrics JSON written) as ``nbsweep run`` exits."""
    settings = command.settings
    early = EarlyKernel(command.notebook, settings.kernel_name, settings.cwd)
    try:
        # Imported once the kernel is booting: loading them takes about as long as its start.
        from nbsweep.api.trials import run_prestarted

        return run_prestarted(command, early)
    finally:
        early.close()
