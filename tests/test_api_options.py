"""The typed settings from Python: nbsweep.run_notebook takes a whole TrialSettings, sweep
and agent a whole StoreOptions, and a store's options never show its password."""

from __future__ import annotations

import uuid

import pytest
from helpers import MARKER_ENV, wait_until_gone, write_notebook

import nbsweep
from nbsweep import ExecutionOptions, StoreOptions, TrialSettings
from nbsweep.errors import UsageError
from nbsweep.local.store import Store

PARAMS_NOTEBOOK = [
    "params = {'lr': 0.1}",
    "import nbsweep\nnbsweep.log({'lr_seen': params['lr']})",
]


def test_settings_and_their_keyword_arguments_are_one_or_the_other(tmp_path):
    notebook = write_notebook(tmp_path / "nb.ipynb", PARAMS_NOTEBOOK)
    with pytest.raises(UsageError, match="not both"):
        nbsweep.run_notebook(notebook, settings=TrialSettings(), cell_timeout=5)


def test_a_stores_options_leave_its_password_out_of_their_repr():
    options = StoreOptions.from_environment("postgresql://nbsweep:hunter2-secret@127.0.0.1/db")
    assert "hunter2-secret" not in repr(options)
    assert options.location == "postgresql://nbsweep:hunter2-secret@127.0.0.1/db"


@pytest.mark.kernel
def test_run_notebook_takes_a_whole_trial_settings(tmp_path, monkeypatch):
    marker = f"api-options-{uuid.uuid4().hex}"
    monkeypatch.setenv(MARKER_ENV, marker)
    notebook = write_notebook(tmp_path / "nb.ipynb", PARAMS_NOTEBOOK)
    settings = TrialSettings(config_var="params", execution=ExecutionOptions(cell_timeout=60))
    result = nbsweep.run_notebook(
        notebook, {"lr": 0.5}, output=tmp_path / "out.ipynb", settings=settings
    )
    assert result.metrics.summary() == {"lr_seen": 0.5}  # found through config_var="params"
    assert wait_until_gone(marker, timeout=10) == []


@pytest.mark.kernel
def test_sweep_and_agent_take_a_whole_store_options(tmp_path, monkeypatch):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    marker = f"api-options-{uuid.uuid4().hex}"
    monkeypatch.setenv(MARKER_ENV, marker)
    monkeypatch.chdir(tmp_path)  # the agent's runs folder
    monkeypatch.setenv("NBSWEEP_STORE", str(tmp_path / "not-this.db"))
    write_notebook(tmp_path / "nb.ipynb", PARAMS_NOTEBOOK)
    store = StoreOptions(location=tmp_path / "chosen.db", agent_name="node-7")
    config = {
        "program": "nb.ipynb",
        "method": "grid",
        "metric": {"name": "lr_seen", "goal": "maximize"},
        "parameters": {"lr": {"values": [0.3]}},
    }
    sweep_id = nbsweep.sweep(config, store=store, config_var="params")
    options = nbsweep.AgentOptions(trial=TrialSettings(config_var="params"), report_to_wandb=False)
    assert nbsweep.agent(sweep_id, store=store, options=options, progress=False) == 0
    assert not (tmp_path / "not-this.db").exists()
    with Store.open(store.location, store) as opened:
        [run] = opened.runs(sweep_id.removeprefix("local:"))
    assert str(run.state) == "finished", run.error
    assert run.summary["lr_seen"] == 0.3  # the options reached the trial: params got lr
    assert run.agent is not None and run.agent.host == "node-7"
    assert wait_until_gone(marker, timeout=10) == []
