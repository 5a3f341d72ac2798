"""`nbsweep sweep --local X --run` takes every option of `nbsweep agent` on how trials run,
from the same definitions, and hands those given on to the agents it starts."""

from __future__ import annotations

import re
import time

import click
import pytest
from helpers import CliRun, Local, write_notebook

from nbsweep.cli.agent import agent
from nbsweep.cli.options import AgentOption, handed_on
from nbsweep.cli.sweep import sweep

SLEEPS = "import time\ntime.sleep(30)"
# The notebook to run is the sweep's program: SWEEP_FILE names it.
AGENT_ONLY = {"--notebook"}


def options(command: click.Command) -> dict[str, click.Option]:
    return {
        name: param
        for param in command.params
        if isinstance(param, click.Option)
        for name in param.opts
    }


def test_sweep_has_every_execution_option_of_agent_and_shows_it_in_its_help():
    ours, theirs = options(sweep), options(agent)
    assert set(theirs) - AGENT_ONLY - set(ours) == set()
    with click.Context(sweep, info_name="sweep") as ctx:
        shown = sweep.get_help(ctx)
    for name, param in theirs.items():
        if name in AGENT_ONLY:
            continue
        assert name in shown, name
        if isinstance(param, AgentOption):  # handed on: the agent's own, not a look-alike
            assert isinstance(ours[name], AgentOption) and ours[name].help == param.help, name


def test_the_options_given_are_handed_on_as_given():
    given = "s.yaml --local --run --trial-timeout 2 --metric a --metric=b --no-wandb"
    given += " --agent-name -n1 --kernel-start exec --workers 2"
    ctx = sweep.make_context("sweep", given.split())
    assert sorted(handed_on(ctx)) == [
        "--agent-name=-n1",
        "--kernel-start=exec",
        "--metric=a",
        "--metric=b",
        "--no-wandb",
        "--trial-timeout=2.0",
    ]
    parsed = agent.make_context("agent", ["local:x", *handed_on(ctx)]).params
    assert parsed["trial_timeout"] == 2.0 and parsed["agent_name"] == "-n1"
    assert parsed["metrics"] == ("a", "b") and parsed["no_wandb"]


def test_an_agents_option_without_run_is_a_usage_error(tmp_path):
    cli = CliRun(tmp_path)
    refused = cli("sweep", "s.yaml", "--local", "--trial-timeout", "2", "--count", "1")
    cli.finish()
    assert refused.returncode == 2
    assert "--trial-timeout and --count go with --run" in refused.stderr


@pytest.mark.kernel
def test_trial_timeout_bounds_a_trial_of_sweep_run(tmp_path, request):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    local = Local(tmp_path, f"sweep-run-{request.node.name}-{time.time_ns()}")
    try:
        (tmp_path / "s.yaml").write_text(
            "program: slow.ipynb\nmethod: grid\nparameters:\n  x: {values: [1, 2]}\n"
        )
        write_notebook(tmp_path / "slow.ipynb", [("x = 1", ["parameters"]), SLEEPS])
        started = time.monotonic()
        ran = local("sweep", "--local", "s.yaml", "--run", "--count", "1", "--trial-timeout", "2")
        took = time.monotonic() - started
    finally:
        local.finish(timeout=10)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert took < 25, f"the trial was not bounded: {took:.1f}s"
    [seconds] = re.findall(r"failed \(trial-timeout\) in ([0-9.]+)s", ran.stderr)
    assert float(seconds) < 10, "the trial ended at its timeout, not when its cell did"
    assert "1 run: 1 failed" in ran.stdout


def test_a_heartbeat_timeout_too_short_is_refused_before_the_sweep_is_made(tmp_path):
    """The agents of --run would each refuse it: it is refused once, with nothing created."""
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    (tmp_path / "s.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\nparameters:\n  x: {values: [1, 2]}\n"
    )
    write_notebook(tmp_path / "nb.ipynb", [("x = 1", ["parameters"]), "y = x"])
    cli = CliRun(tmp_path)
    refused = cli(
        "sweep", "s.yaml", "--local", "--store", "s.db", "--run", "--heartbeat-timeout", "2"
    )
    cli.finish()
    assert refused.returncode == 2, refused.stderr
    assert "--heartbeat-timeout 2 is too short" in refused.stderr
    assert not (tmp_path / "s.db").exists()
