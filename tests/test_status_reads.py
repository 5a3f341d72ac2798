"""`nbsweep status` shows what was recorded: a killed agent's run with its history and
metric, and a finished sweep on a read-only file system."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
from helpers import wait_for_file

pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
pytestmark = pytest.mark.kernel

LOGS_THEN_HANGS = [
    ("x = 1", ["parameters"]),
    "import nbsweep, pathlib, time\nfor step in range(3):\n    nbsweep.log({'score': x + step})\n"
    "pathlib.Path('started.flag').touch()\ntime.sleep(60)",
]


def test_a_killed_agents_run_shows_what_it_recorded(local, tmp_path):
    sweep = local.sweep("method: grid\nmetric: {name: score, goal: maximize}\n"
                        "parameters:\n  x: {values: [5]}\n", LOGS_THEN_HANGS)  # fmt: skip
    victim = local.start("agent", f"local:{sweep}", "--no-wandb")
    wait_for_file(tmp_path / "started.flag", victim)
    # scenario: the rows logged before the flag reach the store (the agent reads the trial's
    # channel every 50 ms); polling `nbsweep status` for them would take longer than this.
    time.sleep(0.3)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    (run,) = local.status(sweep)["runs"]
    assert run["state"] == "crashed"
    assert [row["score"] for row in run["history"]] == [5, 6, 7]
    assert run["metric"] == 7
    table = local("status", f"local:{sweep}").stdout
    assert "crashed" in table and " 7 " in table, table


def test_status_reads_a_read_only_store(local, tmp_path):
    sweep = local.sweep("method: grid\nmetric: {name: score, goal: maximize}\n"
                        "parameters:\n  x: {values: [1, 2]}\n",
                        [("x = 1", ["parameters"]), "import nbsweep\nnbsweep.log({'score': x})"],
                        )  # fmt: skip
    result = local("agent", f"local:{sweep}", "--no-wandb")
    assert result.returncode == 0, result.stderr
    share = tmp_path / "share"
    share.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(share)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        for path in tmp_path.glob("store.db*"):
            shutil.copy(path, share / path.name)
        subprocess.run(["mount", "-o", "remount,ro", str(share)], check=True)
        shown = local("status", f"local:{sweep}", "--json", NBSWEEP_STORE=str(share / "store.db"))
        assert shown.returncode == 0, shown.stderr
        import json

        runs = json.loads(shown.stdout)["runs"]
        assert [run["metric"] for run in runs] == [2, 1]
    finally:
        subprocess.run(["umount", "-l", str(share)], check=False)


def test_100000_records_reach_the_store_through_the_agent(local, tmp_path):
    sweep = local.sweep(
        "method: grid\nmetric: {name: loss, goal: minimize}\n"
        "parameters:\n  n: {values: [100000]}\n",
        [("n = 1", ["parameters"]),
         "import nbsweep\nfor i in range(n):\n    nbsweep.log({'loss': 1.0 / (i + 1), 'i': i})"],
    )  # fmt: skip
    result = local("agent", f"local:{sweep}", "--no-wandb")
    assert result.returncode == 0, result.stderr[-2000:]
    import sqlite3

    db = sqlite3.connect(tmp_path / "store.db")
    count, last = db.execute("SELECT count(*), max(step) FROM history").fetchone()
    assert (count, last) == (100_000, 99_999)
    (run,) = local.status(sweep)["runs"]
    assert run["metric"] == 1.0 / 100_000 and run["summary"]["i"] == 99_999
