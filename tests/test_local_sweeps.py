"""Local sweeps end to end: real `nbsweep agent` processes on a real SQLite store, real kernels,
W&B's own engine. Skipped where the engine (`nbsweep[local]`) is not installed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, SLEEPS_THE_FIRST_TIME, wait_for_file, write_notebook

import nbsweep

pytest.importorskip("sweeps", reason="local sweeps need the engine: pip install 'nbsweep[local]'")

pytestmark = pytest.mark.kernel

TRIVIAL = [
    ("x = 0\ny = 0", ["parameters"]),
    "import nbsweep\nnbsweep.log({'score': x * 10 + y})",
]


def grid(xs: int, ys: int) -> str:
    return (
        "method: grid\nmetric: {name: score, goal: maximize}\nparameters:\n"
        f"  x: {{values: {list(range(xs))}}}\n  y: {{values: {list(range(ys))}}}\n"
    )


@pytest.mark.parametrize("xs,ys,agents", [(3, 4, 3), (6, 8, 8)], ids=["12-by-3", "48-by-8"])
def test_a_grid_is_run_exactly_once_by_parallel_agents(local, xs, ys, agents):
    sweep_id = local.sweep(grid(xs, ys), TRIVIAL)
    result = local("agent", f"local:{sweep_id}", "--workers", agents, "--no-wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    status = local.status(sweep_id)
    points = [(run["values"]["x"], run["values"]["y"]) for run in status["runs"]]
    assert len(points) == xs * ys and len(set(points)) == xs * ys
    assert status["totals"]["finished"] == xs * ys
    assert status["best"]["metric"] == (xs - 1) * 10 + ys - 1


def test_bayes_with_run_cap_and_three_agents(local):
    sweep_id = local.sweep(
        "method: bayes\nmetric: {name: score, goal: minimize}\nrun_cap: 30\nparameters:\n"
        "  x: {min: 0.0, max: 1.0}\n  y: {min: 0.0, max: 1.0}\n",
        TRIVIAL,
    )
    result = local("agent", f"local:{sweep_id}", "--workers", 3, "--no-wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(local.status(sweep_id)["runs"]) == 30


def test_metric_target_ends_the_sweep(on_either_store):
    local = on_either_store
    sweep_id = local.sweep(
        "method: random\nmetric: {name: score, goal: maximize, target: 5}\nrun_cap: 40\n"
        "parameters:\n  x: {value: 1}\n  y: {values: [0, 1]}\n",
        TRIVIAL,
    )
    result = local("agent", f"local:{sweep_id}", "--no-wandb")
    assert result.returncode == 0, result.stderr
    status = local.status(sweep_id)
    assert len(status["runs"]) == 1, "the first run reached the target"
    assert status["state"] == "finished"


def _kill_agent_mid_trial(local, sweep_id: str) -> None:
    victim = local.start("agent", f"local:{sweep_id}", "--no-wandb")
    wait_for_file(local.cwd / "started.flag", victim)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()


def test_an_agent_killed_mid_trial_leaves_a_crashed_run(local):
    sweep_id = local.sweep(
        "method: grid\nparameters:\n  seconds: {values: [60, 0]}\n", SLEEPS_THE_FIRST_TIME
    )
    _kill_agent_mid_trial(local, sweep_id)
    runs = local.status(sweep_id)["runs"]
    assert [run["state"] for run in runs] == ["crashed"], "status reaps the dead agent's run"
    result = local("agent", f"local:{sweep_id}", "--no-wandb")
    assert result.returncode == 0, result.stderr
    runs = local.status(sweep_id)["runs"]
    assert sorted(run["state"] for run in runs) == ["crashed", "finished"], "the sweep goes on"
    assert next(r for r in runs if r["state"] == "finished")["values"] == {"seconds": 0}


def test_requeue_crashed_runs_a_dead_agents_run_again(local):
    sweep_id = local.sweep(
        "method: grid\nparameters:\n  seconds: {values: [60]}\n", SLEEPS_THE_FIRST_TIME
    )
    _kill_agent_mid_trial(local, sweep_id)
    result = local("agent", f"local:{sweep_id}", "--no-wandb", "--requeue-crashed")
    assert result.returncode == 0, result.stderr
    (run,) = local.status(sweep_id)["runs"]
    assert run["state"] == "finished" and run["values"] == {"seconds": 60}


EPOCHS = [
    ("quality = 1.0", ["parameters"]),
    "import nbsweep, time\nfor epoch in range(24):\n"
    "    nbsweep.log({'loss': quality * (1.0 / (epoch + 1))})\n    time.sleep(0.2)",
]


def test_hyperband_stops_a_poor_run(on_either_store):
    local = on_either_store
    sweep_id = local.sweep(
        "method: grid\nmetric: {name: loss, goal: minimize}\n"
        "early_terminate: {type: hyperband, min_iter: 3, eta: 2}\n"
        "parameters:\n  quality: {values: [1.0, 50.0, 60.0]}\n",
        EPOCHS,
    )
    result = local("agent", f"local:{sweep_id}", "--no-wandb", "--stop-grace", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {run["values"]["quality"]: run for run in local.status(sweep_id)["runs"]}
    assert runs[1.0]["state"] == "finished"
    stopped = [run for quality, run in runs.items() if run["state"] == "stopped"]
    assert stopped, {q: r["state"] for q, r in runs.items()}
    notebook = json.loads(Path(local.cwd / stopped[0]["notebook"]).read_text())
    assert notebook["metadata"]["nbsweep"]["status"] == "stopped"


def test_local_runs_are_offline_wandb_runs(local):
    sweep_id = local.sweep(grid(1, 2), TRIVIAL)
    result = local("agent", f"local:{sweep_id}")
    assert result.returncode == 0, result.stderr
    offline = sorted((local.cwd / "wandb").glob("offline-run-*"))
    assert len(offline) == 2
    assert all((run / "files" / "nb.ipynb").exists() for run in offline)
    assert any(run.name.endswith(local.status(sweep_id)["runs"][0]["run_id"]) for run in offline)
    # What wandb would have listed itself: the environment's packages, as name==version.
    requirements = [(run / "files" / "requirements.txt").read_text() for run in offline]
    assert all(f"nbsweep=={nbsweep.__version__}\n" in text for text in requirements)
    assert all(text.lower().count("\nwandb==") == 1 for text in requirements)


def test_status_table_watch_and_plots(local):
    sweep_id = local.sweep(grid(2, 1), TRIVIAL)
    assert local("agent", f"local:{sweep_id}", "--no-wandb").returncode == 0
    table = local("status", "--watch", "0.5")  # nothing running: returns at once
    assert table.returncode == 0, table.stderr
    assert "2 runs: 2 finished" in table.stdout and f"sweep {sweep_id}" in table.stdout
    html = local("status", sweep_id, "--plot", "sweep.html")
    assert html.returncode == 0 and "<svg" in (local.cwd / "sweep.html").read_text()


def test_store_errors_are_one_line(local):
    (local.cwd / "store.db").write_bytes(b"this is not a database, just bytes" * 100)
    result = local("status")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "store.db" in result.stderr
    (local.cwd / "store.db").unlink()
    missing = local("agent", "local:abc")
    assert missing.returncode == 2 and "nbsweep sweep --local" in missing.stderr


def test_a_locked_store_is_a_clear_error(local):
    sweep_id = local.sweep(grid(1, 1), TRIVIAL)
    holder = sqlite3.connect(local.store, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = local("status", sweep_id, timeout=120, NBSWEEP_STORE_BUSY_TIMEOUT="1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode != 0
    assert "locked" in result.stderr and "Traceback" not in result.stderr
    bad = local("status", sweep_id, NBSWEEP_STORE_BUSY_TIMEOUT="soon")
    assert bad.returncode == 2 and "NBSWEEP_STORE_BUSY_TIMEOUT='soon'" in bad.stderr


def test_without_the_engine_local_commands_say_how_to_install_it(local, tmp_path):
    fake = tmp_path / "no-engine"
    fake.mkdir()
    (fake / "sweeps.py").write_text("raise ImportError('not installed')\n")
    write_notebook(local.cwd / "nb.ipynb", TRIVIAL)
    (local.cwd / "sweep.yaml").write_text("program: nb.ipynb\n" + grid(1, 1))
    local.env["PYTHONPATH"] = str(fake)
    result = local("sweep", "--local", "sweep.yaml")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: local sweeps need W&B's sweep engine: pip install 'nbsweep[local]'"
    )


def test_the_readme_demo_runs(tmp_path):
    """The README's main job, as make demo runs it (the venv's nbsweep first on PATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(WANDB_SILENT="true", WANDB_ERROR_REPORTING="false", WANDB__DISABLE_STATS="true")
    demo = tmp_path / "repo"
    for part in ("examples/demo.sh", "sweeps/digits-demo.yaml", "notebooks/digits.ipynb"):
        (demo / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / part, demo / part)
    result = subprocess.run(
        ["sh", "examples/demo.sh"], cwd=demo, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "12 runs: " in result.stdout
    last = result.stdout.rstrip().splitlines()[-1]
    assert last.startswith("best: "), "the best run ends the output, failure reasons above"
    best = last.split("notebook: ")[-1].strip()
    assert (demo / best).exists(), best
