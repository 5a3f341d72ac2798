"""Sweep control for local sweeps, as `wandb sweep --pause|--resume|--stop|--cancel`: real
agents in real processes react within their poll or heartbeat; `status` shows the state."""

from __future__ import annotations

import time

import nbformat
import pytest
from helpers import wait_for_file, wait_until

pytest.importorskip("sweeps", reason="local sweeps need the engine: pip install 'nbsweep[local]'")

pytestmark = pytest.mark.kernel

# Each trial says it started (and leaves started-<x>.flag), then sleeps: long enough to be
# caught running.
SLOW = [
    ("x = 0\nseconds = 0.0", ["parameters"]),
    "import pathlib\nprint('started', x, flush=True)\npathlib.Path(f'started-{x}.flag').touch()",
    "import time\ntime.sleep(seconds)\nimport nbsweep\nnbsweep.log({'score': x})",
]

# Only the sweep's first trial sleeps (it leaves a mark in the shared working directory).
FIRST_IS_SLOW = [
    SLOW[0],
    SLOW[1],
    "import os, time\nif not os.path.exists('slow-done'):\n"
    "    open('slow-done', 'w').close()\n    time.sleep(seconds)\n"
    "import nbsweep\nnbsweep.log({'score': x})",
]


def _grid(xs: int, seconds: float) -> str:
    return (
        "method: grid\nparameters:\n"
        f"  x: {{values: {list(range(xs))}}}\n  seconds: {{value: {seconds}}}\n"
    )


def _states(local, sweep_id: str) -> list[str]:
    return [run["state"] for run in local.status(sweep_id)["runs"]]


def test_pause_holds_agents_and_resume_lets_them_go_on(local):
    sweep_id = local.sweep(_grid(2, 0.0), SLOW)
    paused = local("sweep", "--pause", sweep_id)
    assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
    assert local.status(sweep_id)["state"] == "paused"
    agent = local.start("agent", f"local:{sweep_id}", "--no-wandb", "--poll", "0.3")
    time.sleep(1.5)  # scenario: five of its 0.3 s polls, through which a paused sweep waits
    assert agent.poll() is None, "a paused sweep's agent waits, it does not exit"
    assert _states(local, sweep_id) == []
    assert "(paused)" in local("status", sweep_id).stdout
    assert local("sweep", "--resume", f"local:{sweep_id}").returncode == 0
    assert agent.wait(120) == 0
    assert sorted(_states(local, sweep_id)) == ["finished", "finished"]


def test_stop_lets_the_running_trial_finish_and_starts_no_more(local):
    sweep_id = local.sweep(_grid(3, 3.0), SLOW)
    agent = local.start("agent", f"local:{sweep_id}", "--no-wandb")
    wait_until(
        lambda: _states(local, sweep_id) == ["running"], interval=0.2, what="the first trial"
    )
    stopped = local("sweep", "--stop", sweep_id)
    assert stopped.returncode == 0, stopped.stderr
    assert agent.wait(120) == 0
    assert _states(local, sweep_id) == ["finished"], "the running trial finished; no more"
    assert local.status(sweep_id)["state"] == "finished"


def test_cancel_stops_running_trials_and_keeps_their_notebooks(local):
    sweep_id = local.sweep(_grid(3, 120.0), SLOW)
    agent = local.start("agent", f"local:{sweep_id}", "--no-wandb", "--stop-grace", "2")
    wait_for_file(local.cwd / "started-0.flag", agent)  # into its sleep
    started = time.monotonic()
    canceled = local("sweep", "--cancel", sweep_id)
    assert canceled.returncode == 0 and "stopping 1 running run" in canceled.stdout
    assert agent.wait(60) == 0
    assert time.monotonic() - started < 30, "stopped at its next heartbeat, not after 120 s"
    status = local.status(sweep_id)
    assert status["state"] == "canceled" and _states(local, sweep_id) == ["stopped"]
    notebook = nbformat.read(local.cwd / status["runs"][0]["notebook"], as_version=4)
    assert notebook.metadata["nbsweep"]["status"] == "stopped"
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "started 0" in printed, "the partial notebook keeps what ran"
    again = local("sweep", "--resume", sweep_id)
    assert again.returncode == 2 and "canceled: it cannot be resumed" in again.stderr
    assert again.stderr.count("\n") == 1


def test_stop_run_stops_one_run_and_the_sweep_goes_on(local):
    sweep_id = local.sweep(_grid(3, 60.0), FIRST_IS_SLOW)
    agent = local.start("agent", f"local:{sweep_id}", "--no-wandb", "--stop-grace", "2")
    wait_until(
        lambda: _states(local, sweep_id) == ["running"], interval=0.2, what="the first trial"
    )
    run_id = local.status(sweep_id)["runs"][0]["run_id"]
    result = local("sweep", sweep_id, "--stop-run", run_id)
    assert result.returncode == 0 and f"run {run_id}: stop requested" in result.stdout
    assert agent.wait(120) == 0
    runs = {run["run_id"]: run for run in local.status(sweep_id)["runs"]}
    assert runs.pop(run_id)["state"] == "stopped"
    assert [run["state"] for run in runs.values()] == ["finished"] * 2


@pytest.mark.parametrize(
    "args,message",
    [
        (("--pause", "nosuchid"), "no sweep"),
        (("--stop-run", "nosuchrun", "SWEEP"), "has no run 'nosuchrun'"),
        (("--pause", "entity/project/abc"), "no W&B API key"),
    ],
    ids=["unknown-sweep", "unknown-run", "wandb-sweep"],
)
def test_control_errors_are_one_line(local, args, message):
    sweep_id = local.sweep(_grid(1, 0.0), SLOW)
    args = tuple(sweep_id if arg == "SWEEP" else arg for arg in args)
    result = local("sweep", *args)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
