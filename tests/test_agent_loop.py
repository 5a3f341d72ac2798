"""The agent loop against an in-process SweepServer test double: what it asks for, what it
does with each command, its failure guard and its count. No kernel starts: every trial here
is refused before one would (values the notebook does not have), or the loop never gets to
one. Kernels, real servers and the real `wandb agent` are the other test modules' business."""

from __future__ import annotations

import asyncio
import io
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from helpers import write_notebook

from nbsweep.options import AgentOptions
from nbsweep.sweeping.agent import Agent, AgentFailed
from nbsweep.sweeping.path import SweepPath
from nbsweep.trial.reporting import Reporter


class ScriptedServer:
    """A SweepServer that answers heartbeats from a script and records what it was told."""

    offline_runs = True

    def __init__(self, notebook: Path, script: list[list[dict[str, Any]]]) -> None:
        self.notebook = notebook
        self.script = deque(script)
        self.heartbeats: list[dict[str, bool]] = []
        self.finished: dict[str, Any] = {}

    def sweep(self, path: SweepPath) -> dict[str, Any]:
        return {"name": path.sweep, "state": "running", "config": {"program": str(self.notebook)}}

    def prepare(self) -> None:
        pass

    def create_agent(self, path: SweepPath, host: str) -> str:
        return "agent-1"

    def heartbeat(self, agent_id: str, running: dict[str, bool]) -> list[dict[str, Any]]:
        self.heartbeats.append(dict(running))
        return self.script.popleft() if self.script else [{"type": "exit"}]

    def run_environment(self, path: SweepPath, run_id: str, param_file: Path) -> dict:
        return {"WANDB_RUN_ID": run_id}

    def record_metric(self, run_id: str, record: Any) -> None:
        raise AssertionError("no trial here gets to log")

    def trial_finished(self, run_id: str, result: Any) -> None:
        self.finished[run_id] = result


def _run(value: str = "x") -> list[dict[str, Any]]:
    return [{"type": "run", "run_id": value, "args": {"unknown_name": {"value": 1}}}]


def _agent(tmp_path: Path, script, **options: Any) -> tuple[Agent, ScriptedServer, io.StringIO]:
    notebook = write_notebook(tmp_path / "nb.ipynb", [("x = 0", ["parameters"]), "print(x)"])
    server = ScriptedServer(notebook, script)
    out = io.StringIO()
    settings = AgentOptions(
        poll=0.01, warm_kernels=False, report_to_wandb=False, wandb_dir=tmp_path, **options
    )
    agent = Agent(
        server, SweepPath("s1", "p", None), settings, Reporter(out, tty=False), handle_signals=False
    )
    return agent, server, out


def test_exit_ends_the_loop_with_no_trial(tmp_path):
    agent, server, out = _agent(tmp_path, [[{"type": "exit"}]])
    assert asyncio.run(agent.run()) == 0
    assert server.finished == {} and "the sweep server says exit" in out.getvalue()


def test_an_empty_answer_is_asked_again_after_the_poll(tmp_path):
    agent, server, _ = _agent(tmp_path, [[], [], [{"type": "exit"}]])
    assert asyncio.run(agent.run()) == 0
    assert server.heartbeats == [{}, {}, {}]


def test_a_trial_that_cannot_start_is_failed_and_the_guard_stops_the_agent(tmp_path):
    agent, server, out = _agent(
        tmp_path, [_run("a"), _run("b"), _run("c"), _run("d")], max_consecutive_failures=3
    )
    with pytest.raises(AgentFailed, match="3 trials failed in a row"):
        asyncio.run(agent.run())
    assert list(server.finished) == ["a", "b", "c"]
    assert {r.status for r in server.finished.values()} == {"failed"}
    assert {r.reason for r in server.finished.values()} == {"could-not-start"}
    assert "unknown parameter 'unknown_name'" in out.getvalue()


def test_count_ends_the_loop(tmp_path):
    agent, server, _ = _agent(tmp_path, [_run("a"), _run("b"), _run("c")], count=2)
    assert asyncio.run(agent.run()) == 0
    assert list(server.finished) == ["a", "b"]


def test_a_stop_for_a_queued_run_drops_it(tmp_path):
    both = [*_run("a"), *_run("b"), {"type": "stop", "run_id": "a"}]
    agent, server, _ = _agent(tmp_path, [both, [{"type": "exit"}]])
    assert asyncio.run(agent.run()) == 0
    assert list(server.finished) == ["b"]


def test_interrupt_before_a_trial_takes_none(tmp_path):
    agent, server, _ = _agent(tmp_path, [_run("a")])
    agent.interrupt()
    assert asyncio.run(agent.run()) == 130
    assert server.finished == {}


# A secret in the environment (and so redacted wherever it is said).
TRIAL_SECRET = "s3cr3t" + "k" * 20


def test_a_trial_that_cannot_start_says_why_redacted(tmp_path, monkeypatch):
    # A secret in the message: the value the notebook refuses is the secret itself.
    monkeypatch.setenv("MY_TOKEN", TRIAL_SECRET)
    script = [[{"type": "run", "run_id": "a", "args": {TRIAL_SECRET: {"value": 1}}}]]
    agent, server, out = _agent(tmp_path, script, count=1)
    assert asyncio.run(agent.run()) == 0
    error = server.finished["a"].error
    assert error.startswith("unknown parameter '***'")
    assert f"warning: run a: {error}" in out.getvalue().splitlines()
