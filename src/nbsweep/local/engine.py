"""W&B's own open-source sweep engine (the ``sweeps`` package, the one inside the W&B backend)
for local sweeps, so the same YAML means the same thing with and without a W&B server.

The package is stateless: it derives the next run, and which runs to stop, from the list of
runs it is given. It pins numpy < 2, so it is the ``nbsweep[local]`` extra, imported lazily.
What it leaves to its caller is enforced here: ``metric.target`` ends the sweep (``run_cap`` is
the store's, which counts runs under its lock)."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
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
    """Import ``sweeps`` or say how to get it. Its searches are imported by ``load_search``:
    the package's own ``next_run`` imports all three, scikit-learn with the bayes one."""
    try:
        with warnings.catch_warnings():
            # pydantic v2 warns about the package's v1-style config; not ours to fix.
            warnings.simplefilter("ignore")
            _defer_import("scipy.stats")
            import sweeps.params

            import sweeps
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return sweeps


SEARCHES = {
    "grid": "sweeps.grid_search",
    "random": "sweeps.random_search",
    "bayes": "sweeps.bayes_search",
}


class _DeferredModule(ModuleType):
    """Stands in for a module until one of its attributes is read. The engine imports
    ``scipy.stats`` when it loads but uses it only to sample and score distributions: a
    grid sweep, and checking a config, never do; importing it is most of the engine's start.
    Import statements read only ``__spec__``, which is set here, so they do not load it."""

    def __init__(self, name: str, spec: ModuleSpec) -> None:
        super().__init__(name)
        self.__spec__ = spec
        self._loaded: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._load(), attribute)

    def _load(self) -> ModuleType:
        with _DEFERRED_LOCK:
            if self._loaded is None:
                if sys.modules.get(self.__name__) is self:
                    del sys.modules[self.__name__]
                self._loaded = importlib.import_module(self.__name__)
            return self._loaded


_DEFERRED_LOCK = threading.Lock()


def _defer_import(name: str) -> None:
    """Put a ``_DeferredModule`` for ``name`` in ``sys.modules`` unless it is imported."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is not None:
        sys.modules[name] = _DeferredModule(name, spec)


def _loaded(module: ModuleType) -> None:
    """Load a deferred module now (no-op for a real one)."""
    if isinstance(module, _DeferredModule):
        module._load()


class Engine:
    """One sweep's config and the engine's decisions about it."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.sweeps = load_engine()
        self._search: ModuleType | None = None

    def load_search(self) -> ModuleType:
        """Import the sweep's search, and what it samples with (``scipy.stats``: not a
        grid's), so that no hand-out waits on an import while it holds the store's lock."""
        if self._search is None:
            method = self.config.get("method")
            if method not in SEARCHES:
                raise UsageError(f"unknown sweep method {method!r}: use grid, random or bayes")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._search = importlib.import_module(SEARCHES[method])
                if method != "grid":
                    _loaded(self.sweeps.params.stats)
        return self._search

    def problems(self) -> list[str]:
        """What the engine's own schema refuses in the config, less its deprecation notes:
        W&B still runs the natural-log ``log_uniform`` family (with a warning, which
        ``sweeping.configs`` gives too), so a local sweep runs them as well."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = self.sweeps.schema_violations_from_proposed_config(self.config)
        deprecated = tuple(self.sweeps.params.PARAM_DEPRECATION_MAP.values())
        return [problem for problem in found if not problem.endswith(deprecated)]

    def propose(self, runs: Sequence[Run]) -> dict[str, Any] | None:
        """The next run's parameter values, or None when the sweep has nothing left to try
        (a grid is exhausted, or ``metric.target`` was reached)."""
        if self.target_reached(runs):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proposal = self._next_run([self._to_engine(r) for r in runs])
        if proposal is None:
            return None
        values = {name: entry["value"] for name, entry in proposal.config.items()}
        return _as_specified(values, self.config.get("parameters") or {})

    def _next_run(self, runs: list[Any]) -> Any:
        """What the engine's ``next_run`` does, without importing the searches not used."""
        search = self.load_search()
        method = self.config["method"]
        if method == "grid":
            return search.grid_search_next_runs(runs, self.config, n=1)[0]
        if method == "random":
            return search.random_search_next_runs(self.config, n=1)[0]
        return search.bayes_search_next_runs(runs, self.config, n=1)[0]

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


def _as_specified(values: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's values as plain Python, each number of the type its spec implies, nested
    ``parameters:`` groups too. The engine samples with numpy: its scalars are no JSON (the
    store's) and no literal a user expects (``batch_size`` an ``int64``)."""
    typed: dict[str, Any] = {}
    for name, value in values.items():
        spec = parameters.get(name)
        spec = spec if isinstance(spec, Mapping) else {}
        inner = spec.get("parameters")
        if isinstance(inner, Mapping) and isinstance(value, Mapping):
            typed[name] = _as_specified(value, inner)
        else:
            typed[name] = _quantized(_plain(value), spec)
    return typed


def _plain(value: Any) -> Any:
    """numpy scalars and arrays, also inside lists and dicts, as Python's own values."""
    import numpy  # here, not at the top: it comes with the engine (nbsweep[local])

    if isinstance(value, (numpy.generic, numpy.ndarray)):
        return value.tolist()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# The keys that make a quantized (q_*) value whole: an integer q and integer bounds or mu/sigma.
_WHOLE_KEYS = ("q", "min", "max", "mu", "sigma")


def _quantized(value: Any, spec: Mapping[str, Any]) -> Any:
    """A ``q_*`` value as an int when its spec is all integers, else a float. The engine has
    no one rule: random search gives an int whenever ``q`` is one (``min: 0.0, q: 2`` too),
    grid search (``numpy.arange``) a float whenever any of ``min``, ``max``, ``q`` is."""
    distribution = spec.get("distribution")
    if not (isinstance(distribution, str) and distribution.startswith("q_")):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    whole = "q" in spec and all(_is_int(spec[key]) for key in _WHOLE_KEYS if key in spec)
    return round(value) if whole and math.isfinite(value) else float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
