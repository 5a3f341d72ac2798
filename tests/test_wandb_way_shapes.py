"""The shapes real W&B sweep notebooks take, copied from the ones that failed when we tried
them: the sweep function imported from a module, an unrelated top-level ``config`` dict beside
the notebook's own sweep, a baseline ``wandb.agent`` call before the real one, an exploratory
run before the sweep, ``!wandb login`` and prompts in shell lines, a typo in the sweep cell.
Real kernels, local sweeps on W&B's engine with offline wandb runs, the real CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import nbformat
import pytest
from helpers import executed, make_notebook, run_cmd, user_history, write_notebook

from nbsweep.notebook.injection import parameterize
from nbsweep.notebook.wandb_way import analyse

GRID = (
    "sweep_config = {\n"
    "    'method': 'grid',\n"
    "    'metric': {'name': 'score', 'goal': 'maximize'},\n"
    "    'parameters': {'lr': {'values': [0.1, 0.2]}},\n"
    "}"
)
SWEEP = "sweep_id = wandb.sweep(sweep_config, project='shapes')"


def run_own_sweep(local, cells: list, *options: str) -> tuple[str, dict, str]:
    """``nbsweep sweep --local nb.ipynb --run``: the sweep the notebook itself declares."""
    write_notebook(local.cwd / "nb.ipynb", cells)
    result = local("sweep", "--local", "nb.ipynb", "--run", *options)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    sweep_id = result.stdout.split()[3]
    return sweep_id, local.status(sweep_id), result.stdout + result.stderr


def scores(status: dict) -> list[float]:
    return sorted(run["summary"]["score"] for run in status["runs"])


def saved_outputs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(
        output.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


# --- the sweep function lives in a module -----------------------------------------------

TRAINER = """\
import wandb


def train():
    with wandb.init():
        wandb.log({"score": wandb.config.lr * 10})
"""


@pytest.mark.kernel
def test_an_imported_sweep_function_runs_and_what_was_not_checked_is_one_note(local):
    (local.cwd / "trainer.py").write_text(TRAINER)
    cells = ["import wandb\nimport trainer", GRID, SWEEP, "wandb.agent(sweep_id, trainer.train)"]
    _, status, output = run_own_sweep(local, cells)
    assert status["totals"]["finished"] == 2
    assert scores(status) == pytest.approx([1.0, 2.0]), "each trial got its own lr"
    notes = [line for line in output.splitlines() if "not checked" in line]
    assert len(notes) == 1 and "trainer.train" in notes[0], output
    inspected = local("inspect", "nb.ipynb")
    assert inspected.returncode == 0, inspected.stderr
    assert "wandb.agent calls trainer.train" in inspected.stdout


def test_a_lambda_or_partial_sweep_function_is_read_as_such():
    nb = make_notebook(
        [
            "import functools, wandb",
            GRID,
            SWEEP,
            "wandb.agent(sweep_id, functools.partial(train, epochs=2), count=3)",
            "wandb.agent(sweep_id, lambda: train(1))",
        ]
    )
    shape = analyse(nb)
    calls = [(call.function, call.runtime_name, call.count) for call in shape.agent_calls]
    assert calls == [("partial(train)", "train", 3), ("lambda", "<lambda>", None)]
    assert shape.chosen == 1, "the last call is the one trials run"
    assert analyse(nb, "train").chosen == 0


# --- which parameters apply: every combination ----------------------------------------

PARAMETERS_CELL = ("lr = 0.01", ["parameters"])
CONFIG_DICT = "config = {'data_dir': 'data', 'lr': 0.01}"
OWN_SWEEP = [GRID, SWEEP, "def train():\n    wandb.init()\n", "wandb.agent(sweep_id, train)"]
READS_WANDB_CONFIG = "def train():\n    wandb.init()\n    print(wandb.config.lr)\n"


@pytest.mark.parametrize(
    "cells,expected",
    [
        ([PARAMETERS_CELL, *OWN_SWEEP], "parameters-cell"),
        ([CONFIG_DICT, *OWN_SWEEP], "wandb.config"),
        ([PARAMETERS_CELL, CONFIG_DICT, *OWN_SWEEP], "parameters-cell"),
        ([CONFIG_DICT, "print(config['lr'])"], "config-dict"),
        ([PARAMETERS_CELL, CONFIG_DICT], "parameters-cell"),
        (["import wandb", READS_WANDB_CONFIG], "wandb.config"),
    ],
    ids=["cell+sweep", "dict+sweep", "cell+dict+sweep", "dict", "cell+dict", "wandb.config"],
)
def test_which_parameters_apply(cells, expected):
    injection = parameterize(make_notebook(["import wandb", *cells]), {"lr": 0.1})
    found = injection.parameters
    where = found.style if found is not None else "wandb.config"
    assert where == expected
    injected = [cell.source for cell in injection.notebook.cells if "injected" in str(cell)]
    assert bool(injected) == (expected != "wandb.config")


UNRELATED_CONFIG = [
    "import wandb",
    "config = {'data_dir': 'data', 'seed': 0}  # the notebook's own settings, not swept",
    GRID,
    SWEEP,
    "def train():\n"
    "    with wandb.init(config=config):\n"
    "        assert wandb.config.data_dir == 'data'\n"
    "        wandb.log({'score': wandb.config.lr})",
    "wandb.agent(sweep_id, train, count=2)",
]


@pytest.mark.kernel
def test_a_config_dict_with_other_keys_does_not_shadow_the_notebooks_sweep(local):
    _, status, _ = run_own_sweep(local, UNRELATED_CONFIG)
    assert scores(status) == pytest.approx([0.1, 0.2])
    inspected = local("inspect", "nb.ipynb")
    assert "config (cell 1) is left as it is" in inspected.stdout, inspected.stdout


# --- several wandb.agent calls -----------------------------------------------------------

TWO_AGENTS = [
    "import wandb",
    GRID,
    SWEEP,
    "def baseline():\n"
    "    with wandb.init():\n"
    "        for step in range(3):\n"
    "            wandb.log({'score': -1.0})",
    "wandb.agent(sweep_id, baseline, count=1)",
    "def train():\n    with wandb.init():\n        wandb.log({'score': wandb.config.lr})",
    "wandb.agent(sweep_id, train, count=4)",
]


@pytest.mark.kernel
def test_several_agent_calls_run_one_function_per_trial(local):
    _, status, _ = run_own_sweep(local, TWO_AGENTS)
    assert scores(status) == pytest.approx([0.1, 0.2]), "trials ran train, not the baseline"
    with sqlite3.connect(local.store) as store:
        for run in status["runs"]:
            rows = store.execute(
                "SELECT step, metrics FROM history WHERE run_id = ? ORDER BY n", (run["run_id"],)
            ).fetchall()
            logged = [(step, json.loads(metrics)["score"]) for step, metrics in rows]
            assert logged == [(0, run["summary"]["score"])], "one run's history, train's only"
    notebook = Path(local.cwd) / status["runs"][0]["notebook"]
    assert "wandb.agent(baseline) skipped" in saved_outputs(notebook)

    inspected = local("inspect", "nb.ipynb")
    lines = [line for line in inspected.stdout.splitlines() if "wandb.agent calls" in line]
    assert len(lines) == 2, inspected.stdout
    assert "baseline" in lines[0] and "skipped in trials" in lines[0]
    assert "train" in lines[1] and "once per trial" in lines[1]

    picked = local(
        "run", "nb.ipynb", "--lr=0.2", "--sweep-function", "baseline", "--metrics-json", "m.json",
        WANDB_MODE="offline",
    )  # fmt: skip
    assert picked.returncode == 0, picked.stderr[-3000:]
    metrics = json.loads((local.cwd / "m.json").read_text())
    assert [row["score"] for row in metrics["history"]] == [-1.0, -1.0, -1.0]
    wrong = local("run", "nb.ipynb", "--lr=0.2", "--sweep-function", "nope")
    assert wrong.returncode == 2 and "baseline, train" in wrong.stderr
    assert "Traceback" not in wrong.stderr


# --- an exploratory run before the sweep -------------------------------------------------

EXPLORATORY = [
    "import wandb",
    "run = wandb.init(project='shapes', config={'lr': 0.5})\n"
    "wandb.log({'score': 99.0})\n"
    "wandb.finish()",
    GRID,
    SWEEP,
    "def train():\n    wandb.init()\n    wandb.log({'score': wandb.config.lr})",
    "wandb.agent(sweep_id, train, count=2)",
]


@pytest.mark.kernel
def test_an_exploratory_run_is_not_the_trials_run(local):
    _, status, _ = run_own_sweep(local, EXPLORATORY)
    assert scores(status) == pytest.approx([0.1, 0.2]), "the baseline's 99 is not the trial's"
    folders = [path.name for path in (local.cwd / "wandb").glob("offline-run-*")]
    run_ids = sorted(run["run_id"] for run in status["runs"])
    assert sorted(name.rsplit("-", 1)[1] for name in folders) == run_ids, folders
    notebook = Path(local.cwd) / status["runs"][0]["notebook"]
    assert "wandb.init outside the sweep function runs disabled" in saved_outputs(notebook)


# --- shell lines -----------------------------------------------------------------------

SHELL_LINES = [
    "!wandb login",
    "import wandb",
    GRID,
    SWEEP,
    "!wandb agent me/shapes/abc123",
    "!python3 -c \"import sys; print('read', repr(sys.stdin.readline()))\"",
    "!python3 -c \"import getpass; getpass.getpass('API key: ')\" || echo prompt-ended",
    "def train():\n    with wandb.init():\n        wandb.log({'score': wandb.config.lr})",
    "wandb.agent(sweep_id, train)",
]


@pytest.mark.kernel
def test_shell_lines_never_log_in_start_agents_or_wait_on_a_prompt(local, tmp_path):
    bin_folder = tmp_path / "fake-bin"
    bin_folder.mkdir()
    ran = tmp_path / "wandb-cli-ran"
    fake = bin_folder / "wandb"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {ran}\nread answer\n')
    fake.chmod(0o755)
    local.env["PATH"] = f"{bin_folder}{os.pathsep}{local.env['PATH']}"
    started = time.monotonic()
    _, status, output = run_own_sweep(local, SHELL_LINES, "--count", "1")
    assert time.monotonic() - started < 90
    assert status["totals"]["finished"] == 1
    assert not ran.exists(), ran.read_text()
    assert output.count("skipped 2 W&B CLI lines") == 1, output
    outputs = saved_outputs(Path(local.cwd) / status["runs"][0]["notebook"])
    assert "read ''" in outputs and "prompt-ended" in outputs


# --- a typo in the sweep cell ------------------------------------------------------------

TYPO = [
    "import wandb",
    "sweep_config = {\n    'method': 'grid'\n    'parameters': {'lr': {'values': [0.1]}},\n}",
    SWEEP,
    "def train():\n    with wandb.init():\n        pass",
    "wandb.agent(sweep_id, train)",
]


def test_a_syntax_error_in_the_sweep_cell_is_an_error_naming_it(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", TYPO)
    for command in (["inspect", "nb.ipynb"], ["sweep", "--local", "nb.ipynb", "--dry-run"]):
        result = cli(*command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "cell 1 line 3" in result.stderr and "Traceback" not in result.stderr, command
    (tmp_path / "sweep.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\nparameters:\n  lr: {values: [0.1]}\n"
    )
    from_yaml = cli("sweep", "--local", "sweep.yaml", "--dry-run")
    assert from_yaml.returncode == 2 and "cell 1 line 3" in from_yaml.stderr


def test_ipython_lines_are_not_syntax_errors():
    nb = make_notebook(
        [
            "%%capture\n!pip install wandb -qU",
            "%matplotlib inline\nfiles = !ls\nimport wandb\nwandb.init?",
            "%%bash\nif [ -f x ]; then echo; fi",
            GRID,
            SWEEP,
        ]
    )
    shape = analyse(nb)
    assert shape.syntax_errors == () and shape.config is not None


# --- a sweep function that leaves its run open ------------------------------------------

UNCLOSED = [
    "import wandb",
    "def train():\n"
    "    wandb.init(config={'depth': 1})\n"
    "    wandb.log({'score': wandb.config.depth})\n"
    "    if wandb.config.depth > 2:\n"
    "        raise ValueError('too deep')",
    "wandb.agent('ignored', train, count=3)",
    "print('open after the agent:', wandb.run is not None)",
]


@pytest.mark.kernel
@pytest.mark.e2e
def test_the_sweep_functions_run_is_finished_when_it_returns_or_raises(agent, server, tmp_path):

    write_notebook(tmp_path / "nb.ipynb", UNCLOSED)
    sweep = agent.sweep(
        "nb.ipynb", [run_cmd("r1", depth=2), run_cmd("r2", depth=3), {"type": "exit"}]
    )
    result = agent.run(sweep, "--max-consecutive-failures", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = server.runs["r1"], server.runs["r2"]
    assert first.exitcode == 0 and [row["score"] for row in user_history(first)] == [2]
    assert second.exitcode == 1
    saved = executed(tmp_path, sweep, "r1", "nb.ipynb")
    assert "open after the agent: False" in "".join(
        output.get("text", "") for output in saved.cells[3].outputs
    ), "the run was finished when train returned"


# --- W&B's PyTorch sweep tutorial, with synthetic data where it downloads MNIST ----------

PYTORCH_TUTORIAL = [
    "!pip install wandb -Uq",
    "import wandb\nwandb.login()",
    "sweep_config = {\n    'method': 'random'\n    }",
    "metric = {\n    'name': 'loss',\n    'goal': 'minimize'\n    }\n\n"
    "sweep_config['metric'] = metric",
    "parameters_dict = {\n"
    "    'optimizer': {\n        'values': ['adam', 'sgd']\n        },\n"
    "    'fc_layer_size': {\n        'values': [16, 32, 64]\n        },\n"
    "    'dropout': {\n          'values': [0.3, 0.4, 0.5]\n        },\n"
    "    }\n\nsweep_config['parameters'] = parameters_dict",
    "parameters_dict.update({\n    'epochs': {\n        'value': 1}\n    })",
    "import math\n\nparameters_dict.update({\n"
    "    'learning_rate': {\n        'distribution': 'uniform',\n"
    "        'min': 0,\n        'max': 0.1\n      },\n"
    "    'batch_size': {\n        'distribution': 'q_log_uniform_values',\n"
    "        'q': 8,\n        'min': 32,\n        'max': 256,\n      }\n    })",
    "import pprint\n\npprint.pprint(sweep_config)",
    'sweep_id = wandb.sweep(sweep_config, project="pytorch-sweeps-demo")',
    "import torch\nimport torch.optim as optim\nimport torch.nn.functional as F\n"
    "import torch.nn as nn\n\n"
    'device = torch.device("cuda" if torch.cuda.is_available() else "cpu")\n\n'
    "def train(config=None):\n"
    "    # Initialize a new wandb run\n"
    "    with wandb.init(config=config):\n"
    "        config = wandb.config\n\n"
    "        loader = build_dataset(config.batch_size)\n"
    "        network = build_network(config.fc_layer_size, config.dropout)\n"
    "        optimizer = build_optimizer(network, config.optimizer, config.learning_rate)\n\n"
    "        for epoch in range(config.epochs):\n"
    "            avg_loss = train_epoch(network, loader, optimizer)\n"
    '            wandb.log({"loss": avg_loss, "epoch": epoch})',
    "def build_dataset(batch_size):\n"
    "    # MNIST's shape, made up here: the tutorial downloads it\n"
    "    generator = torch.Generator().manual_seed(0)\n"
    "    images = torch.rand(512, 1, 28, 28, generator=generator)\n"
    "    labels = torch.randint(0, 10, (512,), generator=generator)\n"
    "    dataset = torch.utils.data.TensorDataset(images, labels)\n"
    "    return torch.utils.data.DataLoader(dataset, batch_size=batch_size)\n\n\n"
    "def build_network(fc_layer_size, dropout):\n"
    "    network = nn.Sequential(  # fully-connected, single hidden layer\n"
    "        nn.Flatten(),\n"
    "        nn.Linear(784, fc_layer_size), nn.ReLU(),\n"
    "        nn.Dropout(dropout),\n"
    "        nn.Linear(fc_layer_size, 10),\n"
    "        nn.LogSoftmax(dim=1))\n\n"
    "    return network.to(device)\n\n\n"
    "def build_optimizer(network, optimizer, learning_rate):\n"
    '    if optimizer == "sgd":\n'
    "        optimizer = optim.SGD(network.parameters(),\n"
    "                              lr=learning_rate, momentum=0.9)\n"
    '    elif optimizer == "adam":\n'
    "        optimizer = optim.Adam(network.parameters(),\n"
    "                               lr=learning_rate)\n"
    "    return optimizer\n\n\n"
    "def train_epoch(network, loader, optimizer):\n"
    "    cumu_loss = 0\n"
    "    for _, (data, target) in enumerate(loader):\n"
    "        data, target = data.to(device), target.to(device)\n"
    "        optimizer.zero_grad()\n\n"
    "        # ➡ Forward pass\n"
    "        loss = F.nll_loss(network(data), target)\n"
    "        cumu_loss += loss.item()\n\n"
    "        # ⬅ Backward pass + weight update\n"
    "        loss.backward()\n"
    "        optimizer.step()\n\n"
    '        wandb.log({"batch loss": loss.item()})\n\n'
    "    return cumu_loss / len(loader)",
    "wandb.agent(sweep_id, train, count=5)",
]


@pytest.mark.kernel
def test_wandb_pytorch_tutorial_runs_unchanged(local):
    pytest.importorskip(
        "torch", reason="the PyTorch tutorial needs torch (CI installs the CPU build)"
    )
    _, status, output = run_own_sweep(local, PYTORCH_TUTORIAL, "--count", "2")
    assert status["totals"]["finished"] == 2, output[-3000:]
    for run in status["runs"]:
        batch_size = run["values"]["batch_size"]
        assert type(batch_size) is int and batch_size % 8 == 0 and 32 <= batch_size <= 256
        assert run["summary"]["loss"] > 0 and run["summary"]["epoch"] == 0
    assert "skipped 1 install line" in output


def test_a_comment_ending_in_a_question_mark_is_still_python():
    nb = make_notebook(
        [
            "import wandb",
            "sweep_config = {'method': 'grid', 'parameters': {\n"
            "    'lr': {'values': [0.1, 0.2]},  # too high?\n"
            "    'wd': {'values': [0.0]},\n"
            "}}",
            SWEEP,
        ]
    )
    assert analyse(nb).parameter_names() == ["lr", "wd"]


TWO_INITS = [
    "import wandb",
    "wandb.init(project='shapes')\nwandb.log({'score': 1.0})\nwandb.finish()",
    "wandb.init(project='shapes')\nwandb.log({'score': 99.0})\nwandb.finish()",
]


@pytest.mark.kernel
def test_without_wandb_agent_the_first_run_is_the_trials(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", TWO_INITS)
    result = cli(
        "run", "nb.ipynb", "--metrics-json", "m.json", "-o", "out/nb.ipynb", WANDB_MODE="offline"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert [row["score"] for row in metrics["history"]] == [1.0]
    assert "wandb.init again runs disabled" in saved_outputs(tmp_path / "out" / "nb.ipynb")
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1
