"""`nbsweep sweep`: validate a sweep YAML against W&B's rules and its notebook, then create it
on the W&B-protocol test server."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import write_notebook
from wandb_server import WandbTestServer, wandb_env

NOTEBOOK = [("lr = 0.1\nepochs = 3\nopt = {'beta1': 0.9}", ["parameters"]), "print(lr)"]


def nbsweep(tmp_path, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "nbsweep", *map(str, args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def server():
    with WandbTestServer() as running:
        yield running


def test_creates_the_sweep_with_the_nbsweep_command(server, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "sweep.yaml").write_text(
        "program: nb.ipynb\nmethod: random\nmetric: {name: loss, goal: minimize}\n"
        "parameters:\n  lr: {distribution: log_uniform_values, min: 1e-5, max: 1e-1}\n"
        "  opt.beta1: {values: [0.8, 0.9]}\n"
    )
    result = nbsweep(tmp_path, "sweep", "sweep.yaml", env=wandb_env(server, tmp_path, project="p"))
    assert result.returncode == 0, result.stderr
    (sweep,) = server.sweeps.values()
    assert result.stdout.splitlines() == [
        f"created sweep {server.entity}/p/{sweep.id}",
        f"run it with: nbsweep agent {server.entity}/p/{sweep.id}",
    ]
    assert sweep.config["command"] == ["nbsweep", "run", "${program}", "${args}"]
    assert sweep.config["parameters"]["lr"]["min"] == 1e-5, "a number, not the string '1e-5'"
    assert "parameters.lr.min: '1e-5' read as 1e-05" in result.stderr


def test_a_users_command_is_kept_and_dry_run_creates_nothing(server, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "sweep.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\ncommand: [nbsweep, run, '${program}', '${args_json}']\n"
        "parameters:\n  epochs: {values: [1, 2]}\n"
    )
    env = wandb_env(server, tmp_path, project="p")
    dry = nbsweep(tmp_path, "sweep", "sweep.yaml", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "${args_json}" in dry.stdout and not server.sweeps
    assert nbsweep(tmp_path, "sweep", "sweep.yaml", env=env).returncode == 0
    (sweep,) = server.sweeps.values()
    assert sweep.config["command"][-1] == "${args_json}"


def test_every_problem_at_once(tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "bad.yaml").write_text(
        "program: nb.ipynb\nmethod: bayesian\nmetric: {name: loss, goal: up}\n"
        "parameters:\n  lrr: {min: 0.1, max: 0.01}\n  epochs: {values: []}\n"
        "  opt.beta: {value: 1}\n"
    )
    result = nbsweep(tmp_path, "sweep", "bad.yaml", "--dry-run")
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 6, result.stderr
    assert "Error: sweep config has 6 problems:" in result.stderr
    assert "'opt.beta' (did you mean 'opt.beta1'?)" in result.stderr
    assert "'bayesian' is not a W&B search method" in result.stderr
    assert "did you mean 'lr'?" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "program,message",
    [
        ("train.py", "is not a notebook"),
        ("missing.ipynb", "cannot read notebook"),
    ],
)
def test_the_program_must_be_a_readable_notebook(tmp_path, program, message):
    (tmp_path / "s.yaml").write_text(
        f"program: {program}\nmethod: grid\nparameters: {{lr: {{value: 1}}}}\n"
    )
    result = nbsweep(tmp_path, "sweep", "s.yaml", "--dry-run")
    assert result.returncode == 2 and message in result.stderr


def test_yaml_errors_are_one_line(tmp_path):
    (tmp_path / "s.yaml").write_text("program: nb.ipynb\ncommand: [nbsweep, ${args}]\n")
    result = nbsweep(tmp_path, "sweep", "s.yaml", "--dry-run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: sweep file 's.yaml' is not valid YAML (line 2, column 21): expected ',' or ']', "
        "but got '{'; quote values that hold ${...} or :"
    ]


def test_repository_sweeps_are_valid(tmp_path):
    from pathlib import Path

    root = Path(__file__).parent.parent
    for path in sorted((root / "sweeps").glob("*.yaml")):
        result = nbsweep(root, "sweep", path, "--dry-run")
        assert result.returncode == 0, (path, result.stderr)
