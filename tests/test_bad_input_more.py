"""Deep values, sweep values that would be options, names below scalars, and bad arguments to
status and agent: one line and exit 2, or a failed trial the agent moves past (issue 20)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from helpers import CliRun, one_line_usage_error, write_notebook

import nbsweep
from nbsweep.errors import SweepConfigError, UsageError

NOTEBOOK = [
    ("x = 0\nlr = 0.1\noutput = 'unset'\ntimeout = 1", ["parameters"]),
    "import nbsweep\nnbsweep.log({'score': 1})",
]


def _nested(depth: int, inner: object = 1) -> object:
    value = inner
    for _ in range(depth):
        value = [value]
    return value


def _brackets(depth: int) -> str:
    return "[" * depth + "]" * depth


def _local_sweep(cli, tmp_path: Path, yaml_text: str) -> str:
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "sweep.yaml").write_text("program: nb.ipynb\n" + yaml_text)
    result = cli("sweep", "--local", "sweep.yaml", "--store", "store.db")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[3]


def _status(cli, sweep_id: str) -> dict:
    result = cli("status", f"local:{sweep_id}", "--store", "store.db", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# 4: deep nesting


@pytest.mark.kernel  # `nbsweep run` starts its kernel while it checks the rest of its input
def test_deep_values_are_refused_in_one_line_wherever_they_enter(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    deep_json = '{"x": ' + _brackets(30_000) + "}"
    one_line_usage_error(cli("run", "nb.ipynb", "--args-json", deep_json), "nests more than 100")
    (tmp_path / "deep.yaml").write_text("x: " + _brackets(3_000) + "\n")
    one_line_usage_error(
        cli("run", "nb.ipynb", "-f", "deep.yaml"), "'deep.yaml' nests more than 100 levels deep"
    )
    one_line_usage_error(
        cli("run", "nb.ipynb", f"--x={_brackets(150)}"), "parameter 'x' nests more than 100"
    )
    (tmp_path / "sweep.yaml").write_text(
        f"program: nb.ipynb\nmethod: grid\nparameters:\n  x: {{values: [{_brackets(196)}, 2]}}\n"
    )
    one_line_usage_error(
        cli("sweep", "--local", "sweep.yaml", "--store", "store.db"), "nests more than 100"
    )
    assert not (tmp_path / "store.db").exists()


def test_a_deep_sweep_config_from_python_is_refused_without_recursing(tmp_path):
    config = {
        "program": str(tmp_path / "nb.ipynb"),
        "method": "grid",
        "parameters": {"x": {"values": [_nested(30_000), 2]}},
    }
    with pytest.raises(SweepConfigError, match=r"parameters\.x\.values: nests more than 100"):
        nbsweep.sweep(config, store=tmp_path / "store.db")
    assert not (tmp_path / "store.db").exists()


@pytest.mark.kernel
def test_a_value_100_levels_deep_arrives(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    result = cli("run", "nb.ipynb", "-o", "out.ipynb", "-p", "x", _brackets(100))
    assert result.returncode == 0, result.stderr
    injected = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[1].source
    assert f"x = {_brackets(100)}" in injected


@pytest.mark.kernel
def test_an_agent_fails_a_too_deep_trial_and_goes_on(cli, tmp_path):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    sweep_id = _local_sweep(cli, tmp_path, "method: grid\nparameters:\n  x: {values: [1, 2]}\n")
    # A sweep stored before nbsweep refused deep configs: the grid holds a value 196 deep.
    with sqlite3.connect(tmp_path / "store.db") as db:
        (text,) = db.execute("SELECT config FROM sweeps").fetchone()
        config = json.loads(text)
        config["parameters"]["x"]["values"] = [_nested(196), 2]
        db.execute("UPDATE sweeps SET config = ?", (json.dumps(config),))
    db.close()
    result = cli("agent", f"local:{sweep_id}", "--store", "store.db", "--no-wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    runs = {run["state"]: run for run in _status(cli, sweep_id)["runs"]}
    assert set(runs) == {"failed", "finished"}
    assert "parameter 'x' nests more than 100 levels deep" in runs["failed"]["error"]
    # 12: the failed trial never wrote its notebook, so status names none.
    assert runs["failed"]["notebook"] is None
    assert (tmp_path / runs["finished"]["notebook"]).is_file()


@pytest.mark.kernel
@pytest.mark.e2e
def test_an_online_agent_fails_a_too_deep_trial_and_goes_on(tmp_path):
    from wandb_server import WandbTestServer, wandb_env

    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    with WandbTestServer() as server:
        sweep = server.add_sweep({"program": "nb.ipynb", "method": "grid"}, project="p")
        run = [{"type": "run", "run_id": f"r{n}", "args": {"x": {"value": value}}}
               for n, value in enumerate([_nested(500), 2])]  # fmt: skip
        server.script(sweep, [*run, {"type": "exit"}])
        agent = CliRun(tmp_path, env=wandb_env(server, tmp_path, project="p"))
        try:
            result = agent("agent", f"{server.entity}/p/{sweep}", "--poll", "0.2")
        finally:
            agent.finish(timeout=10)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert "parameter 'x' nests more than 100 levels deep" in result.stderr
        assert server.runs["r1"].summary["nbsweep/status"] == "finished"


# 6: sweep values that are nbsweep run's options


@pytest.mark.kernel
def test_the_default_command_passes_option_named_values_as_parameters(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "sweep.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\nparameters:\n"
        "  output: {value: x.ipynb}\n  timeout: {value: 3}\n"
    )
    shown = cli("sweep", "sweep.yaml", "--print-yaml")
    assert shown.returncode == 0, shown.stderr
    command = yaml.safe_load(shown.stdout)["command"]
    assert command[:2] == ["nbsweep", "run"]
    # As `wandb agent` expands it: ${args} is --name=value for each parameter.
    argv = []
    for item in command[2:]:
        if item == "${program}":
            argv.append("nb.ipynb")
        elif item == "${args}":
            argv += ["--output=x.ipynb", "--timeout=3"]
        else:
            argv.append(item)
    result = cli("run", *argv)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "x.ipynb").exists(), "the sweep chose where the notebook went"
    (saved,) = (tmp_path / "nbsweep-runs").rglob("nb.ipynb")
    injected = nbformat.read(saved, as_version=4).cells[1].source
    assert "output = 'x.ipynb'" in injected and "timeout = 3" in injected


def test_a_parameter_named_like_a_run_option_under_bare_args_is_reported(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "sweep.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\n"
        "command: [nbsweep, run, '${program}', '${args}']\n"
        "parameters:\n  timeout: {values: [1, 2]}\n  lr: {value: 0.5}\n"
    )
    result = cli("sweep", "sweep.yaml", "--dry-run")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "sweep config has 1 problem" in result.stderr
    assert "parameters.timeout: `nbsweep run` would take ${args}'s --timeout=VALUE" in result.stderr
    # With the separator (the default command's form) the same parameter is fine.
    text = (tmp_path / "sweep.yaml").read_text()
    (tmp_path / "sweep.yaml").write_text(text.replace("'${args}'", "'--', '${args}'"))
    assert cli("sweep", "sweep.yaml", "--dry-run").returncode == 0


def test_run_options_lists_every_option_of_nbsweep_run():
    import click

    from nbsweep.cli.run import run
    from nbsweep.sweeping.configs.validation import RUN_OPTIONS

    params = run.get_params(click.Context(run))
    options = {opt[2:] for param in params for opt in param.opts if opt.startswith("--")}
    assert options == set(RUN_OPTIONS)


# 7: a dotted name below a scalar


@pytest.mark.kernel  # `nbsweep run` starts its kernel while it checks the rest of its input
def test_a_dotted_name_below_a_scalar_is_unknown(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    one_line_usage_error(
        cli("run", "nb.ipynb", "--lr.x=2"), "unknown parameter 'lr.x' (did you mean 'lr'?)"
    )


# 12: bad input to status, agent and seconds options


def test_a_folder_as_the_store_is_one_line(cli, tmp_path):
    (tmp_path / "folder").mkdir()
    for args in (["status"], ["agent", "local:abc"]):
        one_line_usage_error(cli(*args, "--store", "folder"), "'folder' is a folder")


@pytest.mark.parametrize("sweep_id", [None, 123, "", "local:"])
def test_agent_refuses_what_is_not_a_sweep_id(sweep_id, tmp_path):
    with pytest.raises(UsageError, match=r"sweep_id must be text|'local:' names no sweep"):
        nbsweep.agent(sweep_id, store=tmp_path / "store.db", progress=False)


@pytest.mark.parametrize("option", ["--timeout", "--stop-grace", "--trial-timeout"])
def test_nan_seconds_are_refused(cli, tmp_path, option):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    result = cli("run", "nb.ipynb", option, "nan")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Invalid value for '{option}': 'nan' is not a number of seconds" in result.stderr


@pytest.mark.kernel
def test_status_watch_waits_for_a_sweep_no_agent_has_started(cli, tmp_path):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    sweep_id = _local_sweep(cli, tmp_path, "method: grid\nparameters:\n  x: {values: [1]}\n")
    watch = cli.start("status", f"local:{sweep_id}", "--store", "store.db", "--watch", "0.2")
    time.sleep(2)  # scenario: ten of its 0.2 s polls with no agent, through which it waits
    assert watch.poll() is None, watch.communicate()
    result = cli("agent", f"local:{sweep_id}", "--store", "store.db", "--no-wandb")
    assert result.returncode == 0, result.stderr
    out, err = watch.communicate(timeout=30)
    assert watch.returncode == 0, err
    assert "1 run: 1 finished" in out
