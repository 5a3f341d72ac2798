"""Why a trial failed or was stopped, said everywhere: in one line of the agent's output, in
the local store (and so in `nbsweep status` and `status --json`), and in the W&B run's
summary; secrets redacted in each."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import CliRun, run_cmd, write_notebook
from wandb_server import DUMMY_API_KEY

from nbsweep.kernel.executor import CellFailure
from nbsweep.local.store import SCHEMA_VERSION, AgentIdentity, RunState, Store
from nbsweep.trial.metrics import Metrics
from nbsweep.trial.result import ERROR_LENGTH, TrialResult

SECRET = "s3cr3t" + "k" * 20
# The 3rd cell (nbsweep numbers cells from 0, as the user's notebook has them) raises.
FAILING = [
    ("lr = 0.1", ["parameters"]),
    "import os",
    "raise ValueError(f'bad lr {lr} key=' + os.environ['WANDB_API_KEY'])",
    "print('never')",
]
SAID = "cell 2: ValueError: bad lr 0.5 key=***"


def result(status: str, reason: str, failure: CellFailure | None = None, **more) -> TrialResult:
    return TrialResult(status, reason, Path("out.ipynb"), None, Metrics(), 1.0, failure, 3, **more)


def test_a_cell_error_is_the_cell_the_exception_and_the_first_line_of_its_message():
    failure = CellFailure(4, "ValueError", "bad lr\nsecond line", ("...",))
    assert result("failed", "cell-error", failure).error == "cell 3: ValueError: bad lr"
    bare = CellFailure(4, "KeyError", "", ())
    assert result("failed", "cell-error", bare).error == "cell 3: KeyError"
    injected = TrialResult("failed", "cell-error", Path("o"), None, Metrics(), 1.0, bare, None)
    assert injected.error == "the injected parameters cell: KeyError"
    long = result("failed", "cell-error", CellFailure(4, "E", "x" * 1000, ())).error
    assert long is not None and len(long) == ERROR_LENGTH and long.endswith("...")


def test_a_timeout_or_a_stop_says_what_ended_the_trial_not_its_keyboardinterrupt():
    interrupted = CellFailure(2, "KeyboardInterrupt", "", ())
    said = {
        ("failed", "trial-timeout"): "cell 3: running when --trial-timeout ran out",
        ("failed", "cell-timeout"): "cell 3: running when its --timeout ran out",
        ("stopped", "stopped"): "cell 3: running when the sweep stopped it",
        ("stopped", "interrupted"): "cell 3: running when interrupted",
    }
    for (status, reason), expected in said.items():
        assert result(status, reason, interrupted).error == expected


def test_other_endings():
    assert result("finished", "finished").error is None
    assert result("failed", "error").error is None  # nothing known beyond the reason
    assert result("failed", "cannot-save", save_error="disk full").error == (
        "notebook not saved: disk full"
    )
    refused = result("failed", "could-not-start", start_error="unknown parameter 'lrr'")
    assert refused.error == "unknown parameter 'lrr'"


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "sweeps.db")
    return request.getfixturevalue("postgres_url")


def test_the_store_keeps_why(location):
    me = AgentIdentity.current()
    with Store.open(location) as store:
        sweep_id = store.create_sweep({"method": "grid"})
        run = store.hand_out(sweep_id, me, lambda runs: {"x": len(runs)})
        assert store.finish(run.run_id, me, RunState.failed, {}, None, SAID)
        [stored] = store.runs(sweep_id)
    assert stored.error == SAID


def test_a_version_2_store_is_upgraded_in_place(location):
    """The version 2 -> 3 upgrade (runs.error) on either database, run by the next open."""
    me = AgentIdentity.current()
    with Store.open(location) as store:
        sweep_id = store.create_sweep({"method": "grid"})
        old = store.hand_out(sweep_id, me, lambda runs: {"x": len(runs)})
    _execute(
        location,
        "ALTER TABLE runs DROP COLUMN error",
        "UPDATE meta SET value = '2' WHERE key = 'schema_version'",
    )
    with Store.open(location) as store:
        assert store.runs(sweep_id)[0].error is None
        assert store.finish(old.run_id, me, RunState.failed, {}, None, SAID)
        assert store.runs(sweep_id)[0].error == SAID
    [(version,)] = _execute(location, "SELECT value FROM meta")
    assert version == str(SCHEMA_VERSION) == "3"


def _execute(location: str, *statements: str) -> list:
    """Run ``statements`` on the store's database directly; the last one's rows."""
    if location.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(location, autocommit=True) as connection:
            for statement in statements:
                cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description else []
    with sqlite3.connect(location) as connection:
        for statement in statements:
            cursor = connection.execute(statement)
        rows = cursor.fetchall()
    connection.close()
    return rows


# Through the real CLI: agents, kernels, the store, `nbsweep status`.


@pytest.mark.kernel
def test_a_local_sweep_says_why_its_trial_failed_everywhere(on_either_store):
    local = on_either_store
    grid = "method: grid\nmetric: {name: loss, goal: minimize}\nparameters:\n"
    sweep_id = local.sweep(grid + "  lr: {values: [0.5]}\n", FAILING)
    agent = local("agent", f"local:{sweep_id}", "--no-wandb", WANDB_API_KEY=SECRET)
    assert agent.returncode == 0, agent.stderr[-3000:]
    [line] = [line for line in agent.stderr.splitlines() if line.startswith("failed (")]
    assert line.startswith("failed (cell-error) in ") and f"s: {SAID}: nbsweep-runs/" in line

    table = local("status", f"local:{sweep_id}")
    assert table.returncode == 0, table.stderr
    [run] = local.status(sweep_id)["runs"]
    assert run["state"] == "failed" and run["error"] == SAID
    assert f"run {run['run_id']} failed: {SAID}" in table.stdout.splitlines()
    for said in (agent.stdout, agent.stderr, table.stdout, str(run)):
        assert SECRET not in said


@pytest.mark.kernel
def test_nbsweep_run_words_it_the_same(tmp_path):
    write_notebook(tmp_path / "nb.ipynb", FAILING)
    cli = CliRun(tmp_path)
    try:
        ran = cli("run", "nb.ipynb", "--lr=0.5", "-o", "out.ipynb", WANDB_API_KEY=SECRET)
    finally:
        cli.finish()
    assert ran.returncode == 1
    assert "failed (cell-error) in " in ran.stderr and f"s: {SAID}: out.ipynb" in ran.stderr
    assert "Error: cell 2 failed: ValueError: bad lr 0.5 key=***" in ran.stderr
    assert SECRET not in ran.stdout + ran.stderr


@pytest.mark.kernel
@pytest.mark.e2e
def test_the_wandb_runs_summary_says_why(agent, server, tmp_path):
    # The agent's W&B key is the secret here: the notebook puts it in its message.
    said = SAID.replace("bad lr 0.5", "bad lr 0.3")
    write_notebook(tmp_path / "train.ipynb", FAILING)
    sweep = agent.sweep("train.ipynb", [run_cmd("r1", lr=0.3), {"type": "exit"}])
    ran = agent.run(sweep)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert f"s: {said}: nbsweep-runs/" in ran.stderr
    run = server.runs["r1"]
    assert run.exitcode == 1 and run.summary["nbsweep/status"] == "failed"
    assert run.summary["nbsweep/error"] == said
    assert DUMMY_API_KEY not in str(run.summary) + ran.stderr
