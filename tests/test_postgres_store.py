"""Local sweeps on a PostgreSQL store, through the CLI, with real agent processes and a real
server (the pgserver wheel, on a Unix socket). The store's own semantics are tested against
both back ends in test_local_store.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from helpers import ROOT, SLEEPS_THE_FIRST_TIME, Local, PrivateServer, wait_for_file

from nbsweep.errors import StoreUnreachable
from nbsweep.local.database import (
    _WRITE_LOCK,
    Postgres,
    StoreLocked,
    _scrubbed,
    without_password,
)
from nbsweep.local.store import AgentIdentity, LoggedRow, RunState, Store

pytest.importorskip("sweeps", reason="local sweeps need the engine: pip install 'nbsweep[local]'")

pytestmark = pytest.mark.kernel

TRIVIAL = [("x = 0", ["parameters"]), "import nbsweep\nnbsweep.log({'score': x})"]


@pytest.fixture
def on_postgres(postgres_url: str, local: Local) -> Local:
    """``local`` on a fresh database of the session's PostgreSQL server (``.url``)."""
    local.env["NBSWEEP_STORE"] = postgres_url
    local.url = postgres_url
    return local


def test_agents_share_a_sweep_through_postgresql(on_postgres):
    local = on_postgres
    grid = "method: grid\nmetric: {name: score, goal: maximize}\nparameters:\n"
    sweep_id = local.sweep(grid + "  x: {values: [0, 1, 2, 3, 4, 5]}\n", TRIVIAL)
    assert not (local.cwd / ".nbsweep").exists(), "nothing went to an SQLite file"
    result = local("agent", f"local:{sweep_id}", "--workers", "3", "--no-wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    status = local.status(sweep_id)
    assert sorted(run["values"]["x"] for run in status["runs"]) == [0, 1, 2, 3, 4, 5]
    assert status["totals"]["finished"] == 6 and status["best"]["metric"] == 5
    cancel = local("sweep", "--cancel", sweep_id)
    assert cancel.returncode == 0 and local.status(sweep_id)["state"] == "canceled"


def test_the_store_url_is_shown_without_its_password(on_postgres):
    local = on_postgres
    url = local.url.replace("postgres:@", "postgres:hunter2@", 1)
    wrong_db = url.replace("/t_", "/missing_t_", 1)
    result = local("status", NBSWEEP_STORE=wrong_db)
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr and "hunter2" not in result.stderr
    assert "postgres:***@" in result.stderr and result.stderr.count("\n") == 1
    no_server = "postgresql://nbsweep:hunter2@/db?host=/nonexistent-socket-dir"
    result = local("status", NBSWEEP_STORE=no_server)
    assert result.returncode == 2 and "hunter2" not in result.stderr
    assert "cannot connect to sweep store" in result.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:hunter2@h:5432/db", "postgresql://u:***@h:5432/db"),
        # Unencoded characters a URL parser reads as the end of the host part.
        ("postgresql://u:hun#ter2@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:hu/n?t@er2@h/db", "postgresql://u:***@h/db"),
        (
            "postgres://h/db?sslmode=require&password=hunter2",
            "postgres://h/db?sslmode=require&password=***",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_passwords_are_never_shown(url, shown):
    assert without_password(url) == shown
    secret = "hu/n?t@er2" if "hu/n" in url else "hunter2"
    assert secret not in _scrubbed(f'connection to "{url}" failed', url)


def test_a_lock_timeout_leaves_the_connection_usable(postgres_url):
    import psycopg

    me = AgentIdentity.current()
    with (
        Store.open(postgres_url, busy_timeout=0.3) as store,
        psycopg.connect(postgres_url, autocommit=True) as other,
    ):
        sweep_id = store.create_sweep({"method": "random"})
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))  # a stuck agent
        with pytest.raises(StoreLocked, match="stayed locked"):
            store.hand_out(sweep_id, me, lambda runs: {"x": 1})
        other.execute("ROLLBACK")
        assert store.hand_out(sweep_id, me, lambda runs: {"x": 1}).values == {"x": 1}


# Faults. Each test has a server of its own (private_postgres) to cut, stop and restart.


def test_a_cut_connection_is_reopened_and_the_call_retried(private_postgres):
    said, me = [], AgentIdentity.current()
    with Store.open(private_postgres.url) as store:
        store.on_retry = said.append
        sweep_id = store.create_sweep({"method": "random"})
        run = store.hand_out(sweep_id, me, lambda runs: {"x": len(runs)})
        assert private_postgres.terminate_sessions() == 1
        assert store.log_metrics(run.run_id, me, [LoggedRow(0, 0, time.time(), {"loss": 1.0})])
        assert store.finish(run.run_id, me, RunState.finished, {"loss": 1.0}, None)
        [stored] = store.runs(sweep_id, with_history=True)
    assert stored.state is RunState.finished and len(stored.history) == 1
    assert len(said) == 2 and "lost the connection" in said[0] and "is back" in said[1]


def test_a_hand_out_whose_commit_was_not_acknowledged_is_taken_back(private_postgres, monkeypatch):
    real_commit, cut = Postgres.commit, []

    def commit_then_lose_the_connection(self):
        real_commit(self)
        if not cut:  # the commit landed; its reply never arrives
            cut.append(private_postgres.terminate_sessions())
            self.execute("SELECT 1")

    me = AgentIdentity.current()
    with Store.open(private_postgres.url) as store:
        sweep_id = store.create_sweep({"method": "random"})
        monkeypatch.setattr(Postgres, "commit", commit_then_lose_the_connection)
        run = store.hand_out(sweep_id, me, lambda runs: {"x": len(runs)})
        monkeypatch.undo()
        assert cut == [1]
        assert [r.run_id for r in store.runs(sweep_id)] == [run.run_id]  # not a second run
        assert run.values == {"x": 0} and run.agent == me


def test_a_server_that_stays_away_is_unreachable_in_one_line(private_postgres):
    with Store.open(private_postgres.url) as store:
        store.reconnect_timeout = 1.0
        sweep_id = store.create_sweep({"method": "random"})
        private_postgres.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnreachable, match=r"unreachable for over 1s .*start the agent"):
            store.runs(sweep_id)
        assert time.monotonic() - started < 5
        private_postgres.start()
        assert store.runs(sweep_id) == []  # and usable again once it is back


STEPS = [
    ("steps = 6", ["parameters"]),
    "import pathlib, time, nbsweep\npathlib.Path('started.flag').touch()\n"
    "for step in range(steps):\n    nbsweep.log({'loss': 1 / (step + 1)})\n    time.sleep(0.4)",
]


@pytest.fixture
def own(private_postgres: PrivateServer, local: Local) -> Local:
    """``local`` on a PostgreSQL server of this test's own (``.server``), to cut, stop and
    restart; its agents are finished before that server goes."""
    local.env["NBSWEEP_STORE"] = private_postgres.url
    local.server = private_postgres
    return local


def _history(url: str, sweep_id: str) -> dict[int, list[float]]:
    with Store.open(url) as store:
        runs = store.runs(sweep_id, with_history=True)
    assert {run.state for run in runs} == {RunState.finished}, [run.state for run in runs]
    return {run.values["steps"]: [row["loss"] for row in run.history] for run in runs}


def _losses(steps: int) -> list[float]:
    return [1 / (step + 1) for step in range(steps)]


def test_a_connection_cut_mid_trial_is_reopened_and_the_trial_recorded(own):
    sweep_id = own.sweep("method: grid\nparameters:\n  steps: {values: [6, 2]}\n", STEPS)
    agent = own.start("agent", f"local:{sweep_id}", "--no-wandb")
    wait_for_file(own.cwd / "started.flag", agent)
    time.sleep(1.2)  # scenario: mid-trial, a heartbeat or two has written history
    assert own.server.terminate_sessions() == 1  # the agent's one connection
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 0, err[-3000:]
    assert "lost the connection to sweep store" in err and "reconnecting" in err, err
    assert "is back" in err
    assert _history(own.server.url, sweep_id) == {6: _losses(6), 2: _losses(2)}  # each row once


def test_the_server_restarted_mid_sweep_loses_nothing(own):
    sweep_id = own.sweep("method: grid\nparameters:\n  steps: {values: [6, 2, 1]}\n", STEPS)
    agent = own.start("agent", f"local:{sweep_id}", "--no-wandb")
    wait_for_file(own.cwd / "started.flag", agent)
    time.sleep(0.8)  # scenario: mid-trial, with history written
    own.server.stop()
    time.sleep(2.5)  # scenario: the server stays away; heartbeats fail, the trial goes on
    assert agent.poll() is None
    own.server.start()
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 0, err[-3000:]
    assert "reconnecting" in err and "is back" in err, err
    assert _history(own.server.url, sweep_id) == {s: _losses(s) for s in (6, 2, 1)}


def test_a_store_that_stays_away_ends_the_agent_in_one_line_after_the_trial(own):
    sweep_id = own.sweep("method: grid\nparameters:\n  steps: {values: [6, 2]}\n", STEPS)
    agent = own.start(
        "agent", f"local:{sweep_id}", "--no-wandb", NBSWEEP_STORE_RECONNECT_TIMEOUT="2"
    )
    wait_for_file(own.cwd / "started.flag", agent)
    own.server.stop()
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "unreachable for over 2s" in last and "was not recorded" in last, err
    assert "Traceback" not in err
    notebook = last.split("its notebook is ")[1].split("'")[1]
    saved = nbformat.read(own.cwd / notebook, as_version=4)  # the trial was saved locally
    assert saved.cells[-1].source.startswith("import pathlib")
    own.server.start()


def test_sigterm_while_the_store_is_away_stops_the_agent_at_once(own):
    sweep_id = own.sweep(
        "method: grid\nparameters:\n  seconds: {values: [60]}\n", SLEEPS_THE_FIRST_TIME
    )
    agent = own.start("agent", f"local:{sweep_id}", "--no-wandb", "--stop-grace", "1")
    wait_for_file(own.cwd / "started.flag", agent)
    own.server.stop()
    time.sleep(1.5)  # scenario: a heartbeat now waits for the server (for up to 120 s)
    signalled = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=60)
    assert time.monotonic() - signalled < 15, "it did not wait out the reconnect timeout"
    last = err.strip().splitlines()[-1]
    assert agent.returncode == 1 and "stopped waiting for it" in last, err[-3000:]
    notebook = last.split("its notebook is ")[1].split("'")[1]
    saved = nbformat.read(own.cwd / notebook, as_version=4)  # the partial notebook is kept
    assert saved.metadata["nbsweep"]["status"] == "stopped"
    assert own.leftovers() == [], "no kernel survives"
    own.server.start()


def test_a_killed_agents_run_is_reaped_after_its_heartbeat_timeout_and_requeued(own):
    sweep_id = own.sweep(
        "method: grid\nparameters:\n  seconds: {values: [60, 0]}\n", SLEEPS_THE_FIRST_TIME
    )
    victim = own.start("agent", f"local:{sweep_id}", "--no-wandb", NBSWEEP_AGENT_NAME="node-b")
    wait_for_file(own.cwd / "started.flag", victim)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.communicate()
    assert own.leftovers() == [], "the killed agent's kernel died with it"
    [held] = own.status(sweep_id)["runs"]
    # Seen from this machine (not named node-b), node-b's PID says nothing: only its
    # heartbeat, stopped 0 s ago, can tell.
    assert held["state"] == "running"
    too_short = own("agent", f"local:{sweep_id}", "--heartbeat-timeout", "2")
    assert too_short.returncode == 2 and "too short" in too_short.stderr
    assert too_short.stderr.count("\n") == 1, too_short.stderr
    # scenario: the killed agent's heartbeat lapses (the timeout below is 4 s)
    time.sleep(max(0.0, killed_at + 4.5 - time.monotonic()))
    result = own(
        "agent",
        f"local:{sweep_id}",
        "--no-wandb",
        "--requeue-crashed",
        "--heartbeat-timeout",
        "4",
        "--agent-name",
        "node-a",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = own.status(sweep_id)["runs"]
    assert [run["state"] for run in runs] == ["finished", "finished"]
    assert runs[0]["run_id"] == held["run_id"] and runs[0]["values"] == {"seconds": 60}  # requeued
    with Store.open(own.server.url) as store:
        assert {run.agent.host for run in store.runs(sweep_id)} == {"node-a"}


def test_bayes_run_cap_is_exact_while_status_reads(on_postgres):
    local = on_postgres
    sweep_id = local.sweep(
        "method: bayes\nmetric: {name: score, goal: minimize}\nrun_cap: 12\nparameters:\n"
        "  x: {min: 0.0, max: 1.0}\n",
        TRIVIAL,
    )
    agents = local.start("agent", f"local:{sweep_id}", "--workers", "3", "--no-wandb")
    seen = []
    while agents.poll() is None:
        status = local.status(sweep_id)  # exits 0 with consistent totals, or fails here
        assert sum(status["totals"].values()) == len(status["runs"]) <= 12
        seen.append(status["totals"].get("finished", 0))
        time.sleep(0.2)  # scenario: status reads again and again while the agents run
    _, err = agents.communicate()
    assert agents.returncode == 0, err[-3000:]
    assert len(seen) >= 2 and seen == sorted(seen), seen  # read while they wrote
    status = local.status(sweep_id)
    assert len(status["runs"]) == 12 and status["totals"]["finished"] == 12
    assert len({run["values"]["x"] for run in status["runs"]}) == 12


def test_the_slurm_example_runs_an_agent_on_the_postgresql_store(on_postgres):
    local = on_postgres
    sweep_id = local.sweep("method: grid\nparameters:\n  x: {values: [3, 4]}\n", TRIVIAL)
    script = str(ROOT / "examples" / "slurm_array.sh")
    env = {
        **local.env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{local.env.get('PATH', '')}",
        "SLURM_SUBMIT_DIR": str(local.cwd),
        "SLURM_ARRAY_TASK_ID": "3",
        "COUNT": "2",
        "SWEEP": f"local:{sweep_id}",
    }
    task = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=240)
    assert task.returncode == 0, task.stderr[-3000:]
    with Store.open(local.url) as store:
        runs = store.runs(sweep_id)
    assert sorted(run.values["x"] for run in runs) == [3, 4]
    assert {run.agent.host for run in runs} == {f"{socket.gethostname()}-3"}
    on_sqlite = {**env, "NBSWEEP_STORE": str(local.cwd / "s.db")}
    refused = subprocess.run(["bash", script], env=on_sqlite, capture_output=True, text=True)
    assert refused.returncode == 2 and "every node shares it" in refused.stderr


def test_a_wrong_password_and_a_malformed_url_are_one_line_each(own):
    import psycopg

    server = own.server
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute("CREATE ROLE alice LOGIN PASSWORD 'right-one'")
        hba = connection.execute("SHOW hba_file").fetchone()[0]
    rules = Path(hba).read_text()
    Path(hba).write_text(f"local all alice scram-sha-256\n{rules}")  # alice needs her password
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute("SELECT pg_reload_conf()")
    wrong = server.url.replace("postgres:@", "alice:wrong-one@", 1)
    result = own("status", NBSWEEP_STORE=wrong)
    assert result.returncode == 2, result.stderr
    assert "password authentication failed" in result.stderr, result.stderr
    assert "wrong-one" not in result.stderr and result.stderr.count("\n") == 1
    right = own("status", NBSWEEP_STORE=wrong.replace("wrong-one", "right-one"))
    assert "authentication" not in right.stderr, right.stderr  # she gets in (then may lack rights)
    malformed = own("status", NBSWEEP_STORE="postgresql://nbsweep:pw@host:notaport/db")
    assert malformed.returncode == 2 and malformed.stderr.count("\n") == 1, malformed.stderr
    assert "pw@" not in malformed.stderr and "Traceback" not in malformed.stderr
