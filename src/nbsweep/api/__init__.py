"""nbsweep's library facade: the public Python API, and the one door the ``nbsweep`` command
comes in by (``nbsweep.cli`` imports nothing else of nbsweep but ``nbsweep.errors``).

For scripts and notebooks: ``run_notebook`` (``nbsweep run``), ``sweep`` (``nbsweep sweep``)
and ``agent`` (``nbsweep agent``), with the settings types they take (``AgentOptions``,
``TrialSettings``, ``ExecutionOptions``, ``StoreOptions``). Each works from a plain script,
from a thread, and from a running event loop (a Jupyter cell): the trial's or agent's loop
then runs on a thread of its own, and Ctrl-C (an interrupted cell) stops it as it stops the
CLI. No signal handlers are installed unless asked (``handle_signals=True``, main thread
only).

For the command line, one call per command: ``run_command`` (``nbsweep run``),
``inspect_notebook``, ``run_agent`` / ``run_agent_workers`` / ``run_command_workers``,
``check_sweep`` / ``create_local_sweep`` / ``create_wandb_sweep`` / ``control_sweep``,
``sweep_status``, and ``dashboard`` / ``dashboard_server`` (``nbsweep dashboard``).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from nbsweep import __version__
from nbsweep.notebook.redaction import Redactor

if TYPE_CHECKING:
    from nbsweep.api.agents import (
        agent,
        agent_arguments,
        agent_fleet,
        check_heartbeats,
        run_agent,
        run_agent_workers,
        run_command_workers,
    )
    from nbsweep.api.arguments import ParameterSources
    from nbsweep.api.dashboard import dashboard, dashboard_server, dashboard_warning
    from nbsweep.api.inspection import InspectForm, inspect_notebook
    from nbsweep.api.single_run import RunCommand, run_command
    from nbsweep.api.sweeps import (
        CheckedSweep,
        SweepStatus,
        check_sweep,
        control_sweep,
        create_local_sweep,
        create_wandb_sweep,
        shown_store,
        sweep,
        sweep_status,
        yaml_text,
    )
    from nbsweep.api.trials import raise_for_ending, run_notebook
    from nbsweep.kernel.preload import Preload
    from nbsweep.options import (
        DEFAULT_CONFIG_VAR,
        AgentOptions,
        DashboardOptions,
        ExecutionOptions,
        KernelStart,
        StoreOptions,
        TrialSettings,
        store_location,
    )
    from nbsweep.status import SweepAction, TrialStatus
    from nbsweep.sweeping.workers import Worker
    from nbsweep.trial.reporting import Reporter
    from nbsweep.trial.result import TrialResult

# Loaded on first use (PEP 562): `nbsweep --help` and a command's option parsing import
# only what they touch, not kernels, notebooks and W&B.
_WHERE = {
    "AgentOptions": "nbsweep.options",
    "CheckedSweep": "nbsweep.api.sweeps",
    "DEFAULT_CONFIG_VAR": "nbsweep.options",
    "DashboardOptions": "nbsweep.options",
    "ExecutionOptions": "nbsweep.options",
    "KernelStart": "nbsweep.options",
    "InspectForm": "nbsweep.api.inspection",
    "ParameterSources": "nbsweep.api.arguments",
    "Preload": "nbsweep.kernel.preload",
    "Reporter": "nbsweep.trial.reporting",
    "RunCommand": "nbsweep.api.single_run",
    "StoreOptions": "nbsweep.options",
    "SweepAction": "nbsweep.status",
    "SweepStatus": "nbsweep.api.sweeps",
    "TrialResult": "nbsweep.trial.result",
    "TrialSettings": "nbsweep.options",
    "TrialStatus": "nbsweep.status",
    "Worker": "nbsweep.sweeping.workers",
    "agent": "nbsweep.api.agents",
    "agent_arguments": "nbsweep.api.agents",
    "agent_fleet": "nbsweep.api.agents",
    "check_heartbeats": "nbsweep.api.agents",
    "check_sweep": "nbsweep.api.sweeps",
    "control_sweep": "nbsweep.api.sweeps",
    "create_local_sweep": "nbsweep.api.sweeps",
    "create_wandb_sweep": "nbsweep.api.sweeps",
    "dashboard": "nbsweep.api.dashboard",
    "dashboard_server": "nbsweep.api.dashboard",
    "dashboard_warning": "nbsweep.api.dashboard",
    "inspect_notebook": "nbsweep.api.inspection",
    "raise_for_ending": "nbsweep.api.trials",
    "run_agent": "nbsweep.api.agents",
    "run_agent_workers": "nbsweep.api.agents",
    "run_command": "nbsweep.api.single_run",
    "run_command_workers": "nbsweep.api.agents",
    "run_notebook": "nbsweep.api.trials",
    "shown_store": "nbsweep.api.sweeps",
    "store_location": "nbsweep.options",
    "sweep": "nbsweep.api.sweeps",
    "sweep_status": "nbsweep.api.sweeps",
    "yaml_text": "nbsweep.api.sweeps",
}


if not TYPE_CHECKING:  # so that mypy sees a name the facade lacks as an error

    def __getattr__(name: str) -> Any:
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module 'nbsweep.api' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


def redacted(text: str) -> str:
    """``text`` (an error's message: it quotes values, kernel output and URLs) with the
    secrets of this process's environment masked."""
    return Redactor.from_environ(os.environ).text(text)


__all__ = [
    "DEFAULT_CONFIG_VAR",
    "AgentOptions",
    "CheckedSweep",
    "DashboardOptions",
    "ExecutionOptions",
    "InspectForm",
    "KernelStart",
    "ParameterSources",
    "Preload",
    "Reporter",
    "RunCommand",
    "StoreOptions",
    "SweepAction",
    "SweepStatus",
    "TrialResult",
    "TrialSettings",
    "TrialStatus",
    "Worker",
    "__version__",
    "agent",
    "agent_arguments",
    "agent_fleet",
    "check_heartbeats",
    "check_sweep",
    "control_sweep",
    "create_local_sweep",
    "create_wandb_sweep",
    "dashboard",
    "dashboard_server",
    "dashboard_warning",
    "inspect_notebook",
    "raise_for_ending",
    "redacted",
    "run_agent",
    "run_agent_workers",
    "run_command",
    "run_command_workers",
    "run_notebook",
    "shown_store",
    "store_location",
    "sweep",
    "sweep_status",
    "yaml_text",
]
