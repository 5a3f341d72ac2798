"""`nbsweep sweep`: validate a sweep YAML against W&B's rules and its notebook, then create it
on the W&B-protocol test server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from helpers import fake_installers, write_notebook
from wandb_server import wandb_env

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


@pytest.mark.e2e
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
    assert sweep.config["command"] == ["nbsweep", "run", "${program}", "--", "${args}"]
    assert sweep.config["parameters"]["lr"]["min"] == 1e-5, "a number, not the string '1e-5'"
    assert "parameters.lr.min: '1e-5' read as 1e-05" in result.stderr


@pytest.mark.e2e
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


TUTORIAL_SHAPE = [
    "!pip install wandb -Uq",
    "import wandb\nwandb.login()",
    "sweep_config = {'method': 'random'}\nsweep_config['metric'] = {'name': 'loss', "
    "'goal': 'minimize'}",
    "parameters_dict = {'optimizer': {'values': ['adam', 'sgd']}}\n"
    "sweep_config['parameters'] = parameters_dict",
    "parameters_dict.update({'epochs': {'value': 1}})",
    "sweep_id = wandb.sweep(sweep_config, project='demo')",
    "def train(config=None):\n    with wandb.init(config=config):\n"
    "        wandb.log({'loss': 1.0 if wandb.config.optimizer == 'adam' else 0.5})",
    "wandb.agent(sweep_id, train, count=5)",
]


@pytest.mark.e2e
def test_a_sweep_from_the_notebook_itself(server, tmp_path):
    write_notebook(tmp_path / "tutorial.ipynb", TUTORIAL_SHAPE)
    env = wandb_env(server, tmp_path, WANDB_PROJECT=None)
    shown = nbsweep(tmp_path, "sweep", "tutorial.ipynb", "--print-yaml", env=env)
    assert shown.returncode == 0, shown.stderr
    config = yaml.safe_load(shown.stdout)
    assert config["program"] == "tutorial.ipynb" and config["project"] == "demo"
    assert config["command"] == ["nbsweep", "run", "${program}", "--", "${args}"]
    expected = {"optimizer": {"values": ["adam", "sgd"]}, "epochs": {"value": 1}}
    assert config["parameters"] == expected
    assert not server.sweeps, "--print-yaml creates nothing"
    created = nbsweep(tmp_path, "sweep", "tutorial.ipynb", env=env)
    assert created.returncode == 0, created.stderr
    (sweep,) = server.sweeps.values()
    assert sweep.project == "demo" and sweep.config["parameters"] == config["parameters"]
    # A YAML whose program is such a notebook validates against the notebook's own sweep.
    (tmp_path / "s.yaml").write_text(
        "program: tutorial.ipynb\nmethod: grid\nparameters:\n  optimizer: {values: [adam]}\n"
        "  optimiser: {value: 1}\n"
    )
    checked = nbsweep(tmp_path, "sweep", "s.yaml", "--dry-run", env=env)
    assert checked.returncode == 2
    assert "the notebook has no parameter 'optimiser' (did you mean 'optimizer'?)" in checked.stderr


@pytest.mark.parametrize(
    "cells,message",
    [
        (["import wandb", "def train():\n    wandb.init()"], "calls no wandb.sweep with a dict"),
        (
            ["import wandb, math", "cfg = {'parameters': {'lr': {'min': math.exp(-3)}}}",
             "wandb.sweep(cfg)"],
            "cell 1 line 1: math.exp(-3) is not a literal",
        ),
    ],
    ids=["no-sweep", "not-a-literal"],
)  # fmt: skip
def test_a_notebook_without_a_readable_sweep_is_one_line(tmp_path, cells, message):
    write_notebook(tmp_path / "nb.ipynb", cells)
    result = nbsweep(tmp_path, "sweep", "nb.ipynb", "--dry-run")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_needs_local(tmp_path):
    write_notebook(tmp_path / "nb.ipynb", TUTORIAL_SHAPE)
    result = nbsweep(tmp_path, "sweep", "nb.ipynb", "--run")
    assert result.returncode == 2 and "--run runs local sweeps: add --local" in result.stderr


@pytest.mark.kernel
def test_one_command_from_a_notebook_to_results(tmp_path):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    write_notebook(tmp_path / "tutorial.ipynb", TUTORIAL_SHAPE)
    folder, marker = fake_installers(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PATH=f"{folder}:{env['PATH']}", HOME=str(tmp_path), WANDB_SILENT="true")
    result = subprocess.run(
        [sys.executable, "-m", "nbsweep", "sweep", "--local", "tutorial.ipynb", "--store",
         "s.db", "--run", "--workers", "2", "--count", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("created local sweep")
    board = lines[lines.index("") + 1 :]
    assert board[0].endswith(": loss (minimize)")
    assert "4 runs: 4 finished" in result.stdout
    ranks = [line.split() for line in board[2:6]]
    assert [row[3] for row in ranks] == sorted(row[3] for row in ranks), "ranked by loss"
    assert {row[3] for row in ranks} <= {"0.5", "1"}
    assert not marker.exists()


@pytest.mark.kernel
def test_run_takes_a_yaml_too(tmp_path):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    write_notebook(
        tmp_path / "nb.ipynb", [("x = 0", ["parameters"]), "import nbsweep\nnbsweep.log({'s': x})"]
    )
    (tmp_path / "s.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\nmetric: {name: s, goal: maximize}\n"
        "parameters:\n  x: {values: [1, 3, 2]}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_SILENT="true", WANDB_MODE="offline")
    result = subprocess.run(
        [sys.executable, "-m", "nbsweep", "sweep", "--local", "s.yaml", "--store", "s.db", "--run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    board = result.stdout.split("\n\n", 1)[1].splitlines()
    assert [line.split()[3] for line in board[2:5]] == ["3", "2", "1"]
    assert "3 runs: 3 finished" in result.stdout
