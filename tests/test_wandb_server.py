"""The real wandb client against the W&B test server: runs, ``wandb sweep``, ``wandb agent``.

Each client runs in a subprocess whose environment points only at the server on
127.0.0.1. The agent tests are slow by nature: ``wandb agent`` polls every 5 s.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from wandb_server import WandbTestServer, stop_after_rows, wandb_env

PROJECT = "p"

TRAIN = """\
import sys
import wandb

print("ARGS", sys.argv[1:], flush=True)
run = wandb.init(config={"lr": 0.5, "layers": 1})
wandb.log({"loss": run.config["lr"] * 2})
wandb.log({"loss": run.config["lr"]})
wandb.finish()
"""

SWEEP_YAML = """\
program: train.py
method: grid
parameters:
  lr:
    values: [0.1, 0.2]
command: ["${env}", "${interpreter}", "${program}", "${args}"]
"""


# Real wandb client code against a real server process on 127.0.0.1.
pytestmark = pytest.mark.e2e


@pytest.fixture
def env(server: WandbTestServer, tmp_path: Path) -> dict[str, str]:
    return wandb_env(server, tmp_path, project=PROJECT)


def run_client(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60):
    """Run a wandb client to the end; on timeout kill it with its trials (own process groups)."""
    process = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def run_python(source: str, env: dict[str, str], cwd: Path, timeout: float = 60):
    script = cwd / "client.py"
    script.write_text(textwrap.dedent(source))
    return run_client([sys.executable, str(script)], env, cwd, timeout)


def agent_sweep(server: WandbTestServer, tmp_path: Path, program: str = TRAIN) -> str:
    (tmp_path / "train.py").write_text(textwrap.dedent(program))
    return server.add_sweep(SWEEP_YAML, project=PROJECT)


def start_agent(server: WandbTestServer, sweep_id: str, env: dict[str, str], cwd: Path):
    return run_client(["wandb", "agent", f"{server.entity}/{PROJECT}/{sweep_id}"], env, cwd)


# --------------------------------------------------------------------------- wandb.init


@pytest.mark.parametrize("exit_code", [0, 1])
def test_run_reports_config_history_summary_and_files(server, env, tmp_path, exit_code):
    result = run_python(
        f"""
        import wandb
        run = wandb.init(project="p", config={{"lr": 0.1}})
        print("RUN", run.id, flush=True)
        wandb.log({{"loss": 1.0}})
        wandb.log({{"loss": 0.5}})
        with open("x.txt", "w") as f:
            f.write("hello")
        wandb.save("x.txt", policy="now")
        wandb.finish(exit_code={exit_code})
        """,
        env,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr

    run_id = result.stdout.split("RUN ")[1].split()[0]
    run = server.runs[run_id]
    assert (run.entity, run.project, run.sweep) == (server.entity, "p", None)
    assert run.user_config == {"lr": 0.1}
    assert [row["loss"] for row in run.history] == [1.0, 0.5]
    assert run.summary["loss"] == 0.5
    assert (run.exitcode, run.complete) == (exit_code, True)
    assert run.state == ("finished" if exit_code == 0 else "failed")
    assert run.files["x.txt"] == b"hello"
    assert f"RUN {run_id}\n" in run.output  # console output is streamed too
    assert set(server.operations) >= {"UpsertBucket", "CreateRunFiles"}


def test_run_survives_server_errors(server, env, tmp_path):
    server.fail_next("UpsertBucket", status=500, times=1)
    server.fail_next("/files/", status=503, times=2)
    result = run_python(
        """
        import wandb
        wandb.init(config={"lr": 0.1})
        wandb.log({"loss": 1.0})
        wandb.finish()
        """,
        env,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    [run] = server.runs.values()
    assert run.history[0]["loss"] == 1.0
    assert (run.exitcode, run.complete) == (0, True)
    statuses = [(r.operation or r.path.split("/")[-1], r.status) for r in server.requests]
    assert statuses.count(("UpsertBucket", 500)) == 1
    assert statuses.count(("file_stream", 503)) == 2


# --------------------------------------------------------------------------- wandb sweep


def test_sweep_cli_creates_a_sweep(server, env, tmp_path):
    (tmp_path / "sweep.yaml").write_text(SWEEP_YAML)
    env.pop("WANDB_SILENT")  # so that the CLI prints the sweep id
    result = run_client(["wandb", "sweep", "sweep.yaml"], env, tmp_path)
    assert result.returncode == 0, result.stderr

    [sweep] = server.sweeps.values()
    assert (sweep.entity, sweep.project) == (server.entity, PROJECT)
    assert sweep.config["parameters"] == {"lr": {"values": [0.1, 0.2]}}
    assert sweep.config["program"] == "train.py"
    assert f"wandb agent {server.entity}/{PROJECT}/{sweep.id}" in result.stderr
    [upsert] = server.requests_for("UpsertSweep")
    assert upsert.variables["entityName"] == server.entity
    assert upsert.variables["projectName"] == PROJECT


def test_nbsweep_pauses_resumes_and_cancels_a_wandb_sweep(server, env, tmp_path):
    sweep_id = server.add_sweep(SWEEP_YAML, project=PROJECT)
    path = f"{server.entity}/{PROJECT}/{sweep_id}"
    for action, state in (("pause", "PAUSED"), ("resume", "RUNNING"), ("cancel", "CANCELED")):
        command = [sys.executable, "-m", "nbsweep", "sweep", f"--{action}", path]
        result = run_client(command, env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert server.sweeps[sweep_id].state == state
        assert f"sweep {path}: {state.lower()}" in result.stdout
    [*_, last] = server.requests_for("UpsertSweep")
    assert last.variables["id"] == sweep_id and last.variables["state"] == "CANCELED"
    again = run_client([sys.executable, "-m", "nbsweep", "sweep", "--resume", path], env, tmp_path)
    assert again.returncode == 2 and "canceled: it cannot be resumed" in again.stderr
    assert again.stderr.strip().count("\n") == 0


# --------------------------------------------------------------------------- wandb agent


@pytest.mark.slow  # the real `wandb agent` polls every 5 s
def test_agent_cli_runs_scripted_trials(server, env, tmp_path):
    sweep_id = agent_sweep(server, tmp_path)
    server.script(
        sweep_id,
        [
            {"type": "run", "run_id": "r1", "args": {"lr": {"value": 0.1}}},
            {"type": "run", "run_id": "r2", "args": {"lr": {"value": 0.2}}},
            {"type": "exit"},
        ],
    )
    started = time.monotonic()
    result = start_agent(server, sweep_id, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 45

    assert "ARGS ['--lr=0.1']" in result.stdout
    assert "ARGS ['--lr=0.2']" in result.stdout
    for run_id, lr in (("r1", 0.1), ("r2", 0.2)):
        run = server.runs[run_id]
        assert run.sweep == sweep_id
        assert run.upserts[0]["sweep"] == sweep_id
        assert run.user_config == {"lr": lr, "layers": 1}  # the sweep value wins
        assert [row["loss"] for row in run.history] == [lr * 2, lr]
        assert (run.exitcode, run.complete) == (0, True)

    [agent] = server.agents.values()
    assert (agent.sweep, agent.entity, agent.project) == (sweep_id, server.entity, PROJECT)
    assert [c["type"] for hb in agent.heartbeats for c in hb.commands] == ["run", "run", "exit"]
    assert server.operations[:3] == ["Viewer", "SweepWithRuns", "CreateAgent"]
    [lookup] = server.requests_for("SweepWithRuns")
    assert lookup.variables == {
        "entity": server.entity,
        "project": PROJECT,
        "sweep": sweep_id,
        "specs": "{}",
    }


@pytest.mark.slow  # the real `wandb agent` polls every 5 s
def test_agent_cli_survives_failed_heartbeats(server, env, tmp_path):
    sweep_id = agent_sweep(server, tmp_path)
    server.script(
        sweep_id,
        [{"type": "run", "run_id": "r1", "args": {"lr": {"value": 0.1}}}, {"type": "exit"}],
    )
    # wandb_env allows 2 retries: the 1st heartbeat fails for good, the 2nd gets through.
    server.fail_next("Heartbeat", status=500, times=3)
    result = start_agent(server, sweep_id, env, tmp_path)
    assert result.returncode == 0, result.stderr

    statuses = [r.status for r in server.requests_for("Heartbeat")]
    assert statuses[:4] == [500, 500, 500, 200]
    assert set(statuses[4:]) == {200}
    first, second = server.requests_for("Heartbeat")[2:4]
    assert second.time - first.time > 3  # the agent's next poll, not a retry
    assert [c["type"] for hb in server.heartbeats for c in hb.commands] == ["run", "exit"]
    assert server.runs["r1"].complete


@pytest.mark.slow  # the real `wandb agent` polls every 5 s
def test_agent_cli_stops_a_trial_midway(server, env, tmp_path):
    sweep_id = agent_sweep(
        server,
        tmp_path,
        """\
        import time
        import wandb

        wandb.init()
        for step in range(600):
            wandb.log({"step": step})
            time.sleep(0.1)
        """,
    )
    server.script(
        sweep_id,
        [
            {"type": "run", "run_id": "r1", "args": {"lr": {"value": 0.1}}},
            stop_after_rows("r1", 3),
            {"type": "exit"},
        ],
    )
    result = start_agent(server, sweep_id, env, tmp_path)
    assert result.returncode == 0, result.stderr

    run = server.runs["r1"]
    assert 3 <= len(run.history) < 600
    stop = next(hb for hb in server.heartbeats if hb.commands == [{"type": "stop", "run_id": "r1"}])
    assert stop.live_runs == ["r1"]
    # SIGTERM kills the trial before wandb can finish its run: W&B never hears an exit code.
    assert (run.complete, run.exitcode, run.state) == (False, None, "running")


# --------------------------------------------------------------------------- the server alone


def post(server: WandbTestServer, path: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.url + path, data=json.dumps(payload).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"{}")


def graphql(server: WandbTestServer, query: str, **variables) -> tuple[int, dict]:
    return post(server, "/graphql", {"query": query, "variables": variables})


HEARTBEAT = "mutation Heartbeat($id: ID!) { agentHeartbeat(input: {id: $id}) { commands } }"
CREATE_AGENT = (
    "mutation CreateAgent($sweep: String!) { createAgent(input: {sweep: $sweep}) { agent {id} } }"
)


def heartbeat(server: WandbTestServer, agent_id: str, **run_state: bool) -> list[dict]:
    status, reply = graphql(server, HEARTBEAT, id=agent_id, runState=json.dumps(run_state))
    assert status == 200, reply
    return json.loads(reply["data"]["agentHeartbeat"]["commands"])


def test_script_waits_for_an_idle_agent_and_asks_hooks(server):
    sweep_id = server.add_sweep({"program": "train.py"})
    calls = []

    def hook(srv, hb):
        calls.append(hb.live_runs)
        return [{"type": "stop", "run_id": "r1"}] if len(calls) == 2 else None

    server.script(sweep_id, [{"type": "run", "run_id": "r1"}, hook, {"type": "exit"}])
    _, reply = graphql(server, CREATE_AGENT, sweep=sweep_id)
    agent_id = reply["data"]["createAgent"]["agent"]["id"]

    assert heartbeat(server, agent_id) == [
        {"type": "run", "run_id": "r1", "args": {}, "program": "train.py"}
    ]
    assert heartbeat(server, agent_id, r1=True) == []
    assert heartbeat(server, agent_id, r1=True) == [{"type": "stop", "run_id": "r1"}]
    assert heartbeat(server, agent_id, r1=True) == []  # exit waits for r1 to end
    assert heartbeat(server, agent_id, r1=False) == [{"type": "exit"}]
    assert heartbeat(server, agent_id) == []
    assert calls == [["r1"], ["r1"]]
    assert len(server.heartbeats) == 6


def test_failures_unknown_operations_and_telemetry(server):
    server.fail_next("/files/", status=500, times=1)
    assert post(server, "/files/e/p/r/file_stream", {})[0] == 500
    assert post(server, "/files/e/p/r/file_stream", {})[0] == 404  # no such run

    assert graphql(server, "query SomethingNew { somethingNew { id } }") == (200, {"data": {}})
    assert post(server, "/sdk/otel/v1/metrics", {})[0] == 404
    assert graphql(server, CREATE_AGENT, sweep="missing")[0] == 404

    sweep_id = server.add_sweep({"program": "train.py"}, state="FINISHED")
    status, reply = graphql(server, CREATE_AGENT, sweep=sweep_id)
    assert status == 400
    assert "not running" in reply["errors"][0]["message"]
    assert server.operations == ["SomethingNew", "CreateAgent", "CreateAgent"]
    assert server.unknown_operations == ["SomethingNew"]
