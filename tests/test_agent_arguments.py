"""An agent's settings rendered as `nbsweep agent` arguments (what worker processes get)
come back equal when the real command parses them; `nbsweep.agent(workers=2)` hands its
settings on to its workers."""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import pytest
from helpers import MARKER_ENV, wait_until_gone, write_notebook

import nbsweep
from nbsweep import api
from nbsweep.api import AgentOptions, ExecutionOptions, Preload, StoreOptions, TrialSettings
from nbsweep.cli.agent import agent as agent_command
from nbsweep.local.store import Store

# Settings no `nbsweep agent` option carries: a worker has them as this process has.
NOT_CARRIED = {
    "AgentOptions.wandb_dir",  # a worker runs in this process's working directory
    "ExecutionOptions.stream_limit",  # no option: every trial keeps the default
    "StoreOptions.location",  # --store, or the worker's environment (agents_on_store)
    "StoreOptions.busy_timeout",  # from the environment, which workers inherit
    "StoreOptions.reconnect_timeout",
}

EVERYTHING = AgentOptions(
    count=7,
    notebook=Path("nb.ipynb"),
    project="a-project",
    entity="an-entity",
    poll=0.5,
    heartbeat=0.25,
    max_consecutive_failures=9,
    trial=TrialSettings(
        config_var="params",
        sweep_function="train",
        allow_unknown=True,
        html=True,
        kernel_name="python3",
        cwd=Path("/tmp"),
        metric_variables=("loss", "-starts-with-a-dash"),
        execution=ExecutionOptions(cell_timeout=3.5, trial_timeout=60.0, stop_grace=0.1),
        run_install_cells=True,
    ),
    report_to_wandb=False,
    warm_kernels=False,
    preload=Preload("explicit", ("numpy", "os.path"), cuda=True),
    kernel_start="exec",
    setup_once=False,
    log_output=True,
)
STORE = StoreOptions(requeue_crashed=True, heartbeat_timeout=33.0, agent_name="-node-b")


def _nested_fields(value: object, prefix: str) -> dict[str, object]:
    """Every field of ``value`` and of the option objects inside it, by Class.field."""
    found: dict[str, object] = {}
    for field in dataclasses.fields(value):  # type: ignore[arg-type]
        inner = getattr(value, field.name)
        found[f"{prefix}.{field.name}"] = inner
        if dataclasses.is_dataclass(inner) and not isinstance(inner, (type, Preload)):
            found.update(_nested_fields(inner, type(inner).__name__))
    return found


def test_every_field_of_the_sample_is_not_its_default():
    ours = {**_nested_fields(EVERYTHING, "AgentOptions"), **_nested_fields(STORE, "StoreOptions")}
    defaults = {
        **_nested_fields(AgentOptions(), "AgentOptions"),
        **_nested_fields(StoreOptions(), "StoreOptions"),
    }
    assert set(ours) == set(defaults)
    left_default = {name for name in ours if ours[name] == defaults[name]}
    assert left_default == NOT_CARRIED


def parsed(arguments: list[str], monkeypatch) -> tuple[AgentOptions, StoreOptions]:
    """What the real `nbsweep agent` builds from ``arguments`` and hands the library."""
    for name in ("NBSWEEP_STORE", "NBSWEEP_AGENT_NAME", "NBSWEEP_HEARTBEAT_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    seen = []
    monkeypatch.setattr(api, "run_agent", lambda *args, **kwargs: seen.append(args) or 0)
    with pytest.raises(SystemExit) as exited:
        agent_command.main(["local:x", *arguments], standalone_mode=False)
    assert exited.value.code == 0
    [(sweep_id, options, store, _reporter)] = seen
    assert sweep_id == "local:x"
    return options, store


def test_rendered_arguments_parse_back_to_equal_options(monkeypatch):
    arguments = api.agent_arguments(EVERYTHING, STORE)
    options, store = parsed(arguments, monkeypatch)
    assert options == EVERYTHING
    assert dataclasses.replace(store, location=STORE.location) == STORE


def test_default_options_render_as_no_arguments(monkeypatch):
    assert api.agent_arguments(AgentOptions(), StoreOptions()) == []
    options, store = parsed([], monkeypatch)
    assert options == AgentOptions()
    assert dataclasses.replace(store, location=StoreOptions().location) == StoreOptions()


def test_a_setting_no_option_carries_is_refused():
    with pytest.raises(nbsweep.errors.UsageError, match="stream_limit"):
        api.agent_arguments(
            AgentOptions(trial=TrialSettings(execution=ExecutionOptions(stream_limit=10)))
        )


@pytest.mark.kernel
def test_workers_of_the_api_run_with_its_options(tmp_path, monkeypatch):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    marker = f"agent-arguments-{uuid.uuid4().hex}"
    monkeypatch.setenv(MARKER_ENV, marker)
    monkeypatch.chdir(tmp_path)
    # No parameters cell: only config_var="params" finds the values' place.
    write_notebook(tmp_path / "nb.ipynb", ["params = {'x': 0}", "seen = params['x']"])
    store = tmp_path / "store.db"
    sweep_id = nbsweep.sweep(
        {"program": "nb.ipynb", "method": "grid", "parameters": {"x": {"values": [1, 2]}}},
        store=store,
        config_var="params",
    )
    options = AgentOptions(
        trial=TrialSettings(config_var="params", metric_variables=("seen",)),
        report_to_wandb=False,
    )
    started = time.monotonic()
    code = nbsweep.agent(
        sweep_id,
        workers=2,
        store=store,
        options=options,
        project="the-project",
        requeue_crashed=True,
        progress=False,
    )
    assert code == 0, time.monotonic() - started
    with Store.open(store) as opened:
        runs = opened.runs(sweep_id.removeprefix("local:"))
    assert sorted((run.state.value, run.summary.get("seen")) for run in runs) == [
        ("finished", 1),
        ("finished", 2),
    ]
    assert wait_until_gone(marker, timeout=10) == []
