"""Sweeps: check a sweep config, create it (locally or on W&B), pause, resume, stop or
cancel it, and read a local one's runs (``nbsweep status``)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbsweep.errors import UsageError
from nbsweep.local import leaderboard
from nbsweep.local.plots import plot as write_plot
from nbsweep.local.server import control_sweep as control_local_sweep
from nbsweep.local.server import local_sweep_id, open_store, shown
from nbsweep.local.store import RunRecord, Store, SweepRecord
from nbsweep.options import DEFAULT_CONFIG_VAR, StoreOptions
from nbsweep.status import RunState, SweepAction, SweepState
from nbsweep.sweeping.configs.checking import CheckedSweep, check_sweep
from nbsweep.sweeping.configs.loading import yaml_text
from nbsweep.sweeping.path import SweepPath
from nbsweep.sweeping.wandb.service import Credentials, SweepService

__all__ = ["CheckedSweep", "check_sweep", "yaml_text"]


def sweep(
    config: Mapping[str, Any] | str | os.PathLike[str],
    *,
    local: bool = True,
    store: str | os.PathLike[str] | StoreOptions | None = None,
    project: str | None = None,
    entity: str | None = None,
    config_var: str = DEFAULT_CONFIG_VAR,
    name: str | None = None,
) -> str:
    """Validate a sweep config (a dict, a sweep YAML, or a notebook that calls
    ``wandb.sweep`` itself) as ``nbsweep sweep`` does, create it, and return the ID to give
    ``agent``: ``local:ID`` in the local store (``local=True``, the default: no W&B server),
    else ``ENTITY/PROJECT/ID`` on W&B. Raises ``SweepConfigError`` listing every problem.
    ``store``: an SQLite file or a ``postgresql://`` URL, or a whole ``StoreOptions``."""
    source = config if isinstance(config, Mapping) else Path(config)
    checked = check_sweep(source, project=project, config_var=config_var, local=local)
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if local:
        default_name = name or ("sweep" if isinstance(config, Mapping) else Path(config).stem)
        return "local:" + create_local_sweep(checked.config, default_name, store_options(store))
    return create_wandb_sweep(checked.config, entity)


def store_options(store: str | os.PathLike[str] | StoreOptions | None) -> StoreOptions:
    """The store a Python caller named: its options as given, or a location with the rest
    from the environment (as the CLI's --store)."""
    return store if isinstance(store, StoreOptions) else StoreOptions.from_environment(store)


def create_wandb_sweep(
    config: Mapping[str, Any],
    entity: str | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> str:
    """Create a checked sweep config on W&B; its ``ENTITY/PROJECT/ID``."""
    service = SweepService(
        Credentials.from_environment(os.environ), on_retry=on_retry or (lambda message: None)
    )
    created = service.create_sweep(
        yaml_text(config),
        entity or config.get("entity") or os.environ.get("WANDB_ENTITY"),
        config.get("project") or os.environ.get("WANDB_PROJECT"),
    )
    return str(created)


def create_local_sweep(config: Mapping[str, Any], name: str, store: StoreOptions) -> str:
    """Create a checked sweep config in the local store; its ID (without ``local:``)."""
    with Store.open(store.location, store) as opened:
        return str(opened.create_sweep(dict(config), name=name))


def shown_store(store: StoreOptions) -> str:
    """Where the store is, as nbsweep prints it: a URL without its password."""
    return shown(store.location)


def control_sweep(
    sweep_id: str,
    action: SweepAction | None,
    store: StoreOptions,
    *,
    run_id: str | None = None,
) -> str:
    """Pause, resume, stop or cancel a sweep (a local one: ``local:ID`` or ``ID``; a W&B
    one: ``[ENTITY/]PROJECT/ID``), or with ``action`` None stop a local sweep's run
    ``run_id``; a line saying what was done."""
    if local_sweep_id(sweep_id) is None and "/" in sweep_id:
        if action is None:
            raise UsageError("--stop-run is for local sweeps; stop a W&B run from its page")
        service = SweepService(Credentials.from_environment(os.environ))
        state = service.set_sweep_state(SweepPath.parse(sweep_id), action.value)
        return f"sweep {sweep_id}: {state.lower()} (its agents hear it from W&B)"
    return control_local_sweep(sweep_id, action, store, run_id=run_id)


@dataclass(frozen=True)
class SweepStatus:
    """A local sweep as ``nbsweep status`` shows it: the sweep and its runs."""

    sweep: SweepRecord
    runs: Sequence[RunRecord]

    @property
    def active(self) -> bool:
        """Something is running or pending, or no agent has started the sweep yet (a sweep
        nobody started has all its work ahead of it)."""
        busy = any(run.state in (RunState.pending, RunState.running) for run in self.runs)
        waiting = not self.runs and self.sweep.state in (SweepState.RUNNING, SweepState.PAUSED)
        return busy or waiting

    def table(self, width: int) -> str:
        """The leaderboard: runs best first, totals per state, the best run's notebook."""
        return leaderboard.table(self.sweep, list(self.runs), width=width)

    def json(self) -> str:
        return json.dumps(leaderboard.as_json(self.sweep, list(self.runs)), indent=2)


def sweep_status(
    sweep_id: str | None,
    store: StoreOptions,
    *,
    plot: Path | None = None,
    watch: float | None = None,
) -> Iterator[SweepStatus]:
    """The local sweep ``sweep_id`` (``local:ID`` or ``ID``; None: the store's newest), its
    dead agents' runs reaped first; with ``watch``, again every ``watch`` seconds while it
    is ``active``. ``plot``: each time, also written to that .png or .html file."""
    with open_store(store, read=True) as opened:
        chosen = (local_sweep_id(sweep_id) or sweep_id) if sweep_id else _newest(opened)
        while True:
            opened.reap(chosen)
            # With history: a run that never finished (its agent was killed) shows what it
            # recorded, its metric included.
            record = opened.sweep(chosen)
            runs = [_as_written(run) for run in opened.runs(chosen, with_history=True)]
            status = SweepStatus(record, runs)
            if plot is not None:
                write_plot(status.sweep, runs, plot)
            yield status
            if not watch or not status.active:
                return
            time.sleep(watch)


def _as_written(run: RunRecord) -> RunRecord:
    """``run`` without the notebook path it names where no notebook is there (a trial that
    never started, or whose notebook could not be saved)."""
    if run.notebook and not Path(run.notebook).is_file():  # ".": a trial that never began
        return dataclasses.replace(run, notebook=None)
    return run


def _newest(store: Store) -> str:
    sweeps = store.sweeps()
    if not sweeps:
        raise UsageError("the store has no sweeps: create one with nbsweep sweep --local")
    return max(sweeps, key=lambda sweep: sweep.created_at).sweep_id
