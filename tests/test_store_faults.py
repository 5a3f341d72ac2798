"""A store that breaks under running agents, and agents whose clocks disagree: real agents
through the CLI, real kernels, an SQLite file or a real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from helpers import Local, wait_for_file

from nbsweep.local.store import Store

pytest.importorskip("sweeps", reason="local sweeps need the engine: pip install 'nbsweep[local]'")

pytestmark = pytest.mark.kernel

# Each trial marks that it started, then sleeps ``seconds``.
SLEEPS = [
    ("seconds = 0", ["parameters"]),
    "import pathlib, time\npathlib.Path(f'started-{seconds}.flag').touch()\ntime.sleep(seconds)",
]


def _delete(store: Path) -> None:
    store.unlink()


def _replace(store: Path) -> None:
    # A copy put in its place (a backup restored, a sync tool's atomic rename).
    copy = store.with_name("copy.db")
    shutil.copyfile(store, copy)
    os.replace(copy, store)


def _corrupt(store: Path) -> None:
    size = store.stat().st_size
    with open(store, "r+b") as file:  # in place: the agent's open file sees it
        file.write(b"garbage!" * (size // 8))


def _truncate(store: Path) -> None:
    os.truncate(store, 0)


def _break_mid_trial(local: Local, fault: Callable[[], None]) -> str:
    """Start an agent, have ``fault()`` break its store while the first trial runs: the
    agent's last line, once checked that it is the only one about the store."""
    sweep_id = local.sweep("method: grid\nparameters:\n  seconds: {values: [3, 4, 5]}\n", SLEEPS)
    agent = local.start("agent", f"local:{sweep_id}", "--no-wandb")
    wait_for_file(local.cwd / "started-3.flag", agent)
    fault()
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 1 and "Traceback" not in err, err[-3000:]
    # The agent's lines go to stderr too: the fault is the last, and the only one about it.
    last = err.strip().splitlines()[-1]
    assert [line for line in err.splitlines() if "store" in line] == [last], err[-3000:]
    # The trial that was running when it broke ran to its end, and its notebook is saved.
    notebook = last.split("its notebook is ")[1].split("'")[1]
    saved = nbformat.read(local.cwd / notebook, as_version=4)
    assert saved.metadata["nbsweep"]["status"] == "finished"
    assert not (local.cwd / "started-4.flag").exists(), "no trial started after it broke"
    return last


@pytest.mark.parametrize(
    "fault, said",
    [
        (_delete, "was deleted"),
        (_replace, "was replaced"),
        (_corrupt, "damaged"),
        (_truncate, "emptied"),
    ],
    ids=["deleted", "replaced", "corrupted", "truncated"],
)
def test_a_store_that_breaks_mid_sweep_stops_the_agent_in_one_line(local, fault, said):
    last = _break_mid_trial(local, lambda: fault(local.store))
    assert repr(str(local.store)) in last and said in last, last


def test_a_database_that_breaks_mid_sweep_is_a_failure_not_a_usage_error(local, postgres_url):
    import psycopg

    local.env["NBSWEEP_STORE"] = postgres_url

    def drop_the_tables() -> None:
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute("DROP TABLE history, runs, sweeps, meta")

    last = _break_mid_trial(local, drop_the_tables)
    assert "failed while in use" in last and 'relation "runs" does not exist' in last, last


def test_a_store_that_was_never_one_is_a_usage_error(local):
    local.store.write_bytes(b"not a database" * 100)
    result = local("agent", "local:abcdefgh", "--no-wandb")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "not a readable sweep store" in result.stderr


def test_checking_the_file_keeps_the_processes_locks_on_it(tmp_path):
    """Closing any descriptor of a file drops every POSIX lock the process holds on it: a
    check that open()ed the store would let the next process to close it delete the WAL
    under the agent, whose writes then went nowhere anyone could read."""
    path = tmp_path / "store.db"
    count = (
        f"import sqlite3; c = sqlite3.connect({str(path)!r});"
        "print(c.execute('SELECT count(*) FROM sweeps').fetchone()[0]); c.close()"
    )
    with Store.open(path) as store:
        store.create_sweep({"method": "grid"})  # checked before its transaction
        seen = subprocess.run([sys.executable, "-c", count], capture_output=True, text=True)
        assert seen.stdout == "1\n", seen.stderr
        store.create_sweep({"method": "grid"})
        seen = subprocess.run([sys.executable, "-c", count], capture_output=True, text=True)
        assert seen.stdout == "2\n", seen.stderr


FAKETIME = shutil.which("faketime")
# Every clock 700 s ahead, for the agent and its kernels (-m: thread-safe). The monotonic
# clock moves too: left alone (--exclude-monotonic), the kernels hang under libfaketime 0.9.10.
SKEW = ["-m", "-f", "+700s"]


@pytest.mark.skipif(FAKETIME is None, reason="needs libfaketime: apt-get install faketime")
@pytest.mark.parametrize("where", ["sqlite", "postgres"])
def test_an_agent_whose_clock_is_ahead_takes_no_live_run(local, where, request):
    """An agent 700 s ahead (more than the 600 s heartbeat timeout) must not judge another
    agent's fresh heartbeat stale: on PostgreSQL the server's clock judges; on SQLite (one
    machine) a live agent of this machine holds its run, whatever the clocks say."""
    names: tuple[list[str], list[str]] = ([], [])
    if where == "postgres":
        local.env["NBSWEEP_STORE"] = request.getfixturevalue("postgres_url")
        names = (["--agent-name", "node-a"], ["--agent-name", "node-b"])  # two "machines"
    sweep_id = local.sweep("method: grid\nparameters:\n  seconds: {values: [12, 1, 2]}\n", SLEEPS)
    # --requeue-crashed: a run the skewed agent wrongly reaped, it would also take.
    options = ["--no-wandb", "--requeue-crashed"]
    punctual = local.start("agent", f"local:{sweep_id}", *options, *names[0])
    wait_for_file(local.cwd / "started-12.flag", punctual)
    local.started.append(
        ahead := subprocess.Popen(
            [FAKETIME, *SKEW, *local.command("agent", f"local:{sweep_id}", *options, *names[1])],
            cwd=local.cwd,
            env=local.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    errs = [agent.communicate(timeout=180)[1] for agent in (punctual, ahead)]
    for agent, err in zip((punctual, ahead), errs, strict=True):
        assert agent.returncode == 0 and "stop requested" not in err, err[-3000:]
    # Where each agent saved its trials' notebooks: no folder is written by both.
    folders = [
        {line.split(" -> ")[1] for line in err.splitlines() if " -> " in line} for err in errs
    ]
    assert folders[0] and folders[1] and not folders[0] & folders[1], folders
    runs = local.status(sweep_id)["runs"]
    assert sorted(run["values"]["seconds"] for run in runs) == [1, 2, 12]
    assert all(run["state"] == "finished" for run in runs), runs
