"""nbsweep: run a Jupyter notebook as a W&B sweep program.

Inside a notebook, ``nbsweep.log({"val_loss": 0.3})`` reports metrics to the runner. From
Python, ``nbsweep.run_notebook(path, {"lr": 0.1})`` runs one trial (``nbsweep run``),
``nbsweep.sweep(config)`` creates a sweep and ``nbsweep.agent(sweep_id)`` runs its trials;
``nbsweep.dashboard()`` serves a live page of a store's local sweeps (``nbsweep[dashboard]``).
"""

from typing import Any

from nbsweep import errors
from nbsweep.errors import NbsweepError, TrialFailed, TrialStopped
from nbsweep.kernel.api import log

__all__ = [
    "AgentOptions",
    "ExecutionOptions",
    "NbsweepError",
    "StoreOptions",
    "TrialFailed",
    "TrialSettings",
    "TrialStopped",
    "__version__",
    "agent",
    "dashboard",
    "errors",
    "log",
    "run_notebook",
    "sweep",
]
__version__ = "0.1.0"

_API = (
    "run_notebook",
    "sweep",
    "agent",
    "dashboard",
    "AgentOptions",
    "ExecutionOptions",
    "StoreOptions",
    "TrialSettings",
)


def __getattr__(name: str) -> Any:
    # Lazily: a notebook's `import nbsweep` (every trial) needs only `log`, and the facade
    # imports every room (tests/test_architecture.py checks that it stays so).
    if name in _API:
        from nbsweep import api

        return getattr(api, name)
    raise AttributeError(f"module 'nbsweep' has no attribute {name!r}")
