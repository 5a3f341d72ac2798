"""W&B's own open-source sweep engine (the ``sweeps`` package, the one inside the W&B backend)
for local sweeps, so the same YAML means the same thing with and without a W&B server.

The package is stateless: it derives the next run, and which runs to stop, from the list of
runs it is given. It pins numpy < 2, so it is the ``nbsweep[local]`` extra, imported lazily.
What it leaves to its caller is enforced here: ``metric.target`` ends the sweep (``run_cap`` is
the store's, which counts runs under its lock)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol

from nbsweep.errors import UsageError
from nbsweep.local.store import RunState

INSTALL_HINT = "local sweeps need W&B's sweep engine: pip install 'nbsweep[local]'"


class Run(Protocol):
    run_id: str
    state: Any
    values: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]


def load_engine() -> ModuleType:
    """Import ``sweeps`` (and the scikit-learn it imports on first use) or say how to get it."""
    try:
        with warnings.catch_warnings():
            # pydantic v2 warns about the package's v1-style config; not ours to fix.
            warnings.simplefilter("ignore")
            import sweeps.bayes_search

            import sweeps
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return sweeps


class Engine:
    """One sweep's config and the engine's decisions about it."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.sweeps = load_engine()

    def problems(self) -> list[str]:
        """What the engine's own schema refuses in the config."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(self.sweeps.schema_violations_from_proposed_config(self.config))

    def propose(self, runs: Sequence[Run]) -> dict[str, Any] | None:
        """The next run's parameter values, or None when the sweep has nothing left to try
        (a grid is exhausted, or ``metric.target`` was reached)."""
        if self.target_reached(runs):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proposal = self.sweeps.next_run(self.config, [self._to_engine(r) for r in runs])
        if proposal is None:
            return None
        return {name: entry["value"] for name, entry in proposal.config.items()}

    @property
    def terminates_early(self) -> bool:
        """The sweep has an early-termination rule (hyperband) to apply as metrics arrive."""
        return bool(self.config.get("early_terminate"))

    def runs_to_stop(self, runs: Sequence[Run]) -> set[str]:
        """Runs the early-termination rule (hyperband) would stop now."""
        if not self.terminates_early:
            return set()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stopped = self.sweeps.stop_runs(self.config, [self._to_engine(r) for r in runs])
        return {run.name for run in stopped}

    def target_reached(self, runs: Sequence[Run]) -> bool:
        metric = self.config.get("metric") or {}
        target, name = metric.get("target"), metric.get("name")
        if target is None or name is None:
            return False
        maximize = metric.get("goal", "minimize") == "maximize"
        values = [run.summary.get(name) for run in runs]
        numbers = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
        return any((v >= target) if maximize else (v <= target) for v in numbers)

    def _to_engine(self, run: Run) -> Any:
        state = RunState(getattr(run.state, "value", run.state))
        return self.sweeps.SweepRun(
            name=run.run_id,
            state=self.sweeps.RunState(state.sweeps_name),
            config={name: {"value": value} for name, value in run.values.items()},
            summary_metrics=dict(run.summary),
            history=list(run.history),
        )
