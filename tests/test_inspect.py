import json

import nbformat
import yaml
from helpers import write_notebook


def test_table_json_and_template(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            (
                "lr: float = 1e-3\nlayers: list[int] = [64]\nname: str | None = None\nseed = 0\n"
                "opt = {'beta1': 0.9}",
                ["parameters"],
            ),
            "import nbsweep\nnbsweep.log({'train_loss': 1, 'val_acc': 0.5})",
        ],
    )
    table = cli("inspect", nb)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["name", "default", "type", "source"]
    assert lines[1].split()[:3] == ["lr", "1e-3", "float"]
    assert "cell 0 line 1 (parameters cell)" in lines[1]
    assert lines[3].startswith("name ") and "str | None" in lines[3]
    assert lines[5].split()[:3] == ["opt.beta1", "0.9", "float"]

    data = json.loads(cli("inspect", nb, "--json").stdout)
    assert data["style"] == "parameters-cell"
    assert [p["name"] for p in data["parameters"]] == ["lr", "layers", "name", "seed", "opt.beta1"]
    assert data["parameters"][1] == {
        "name": "layers",
        "default": [64],
        "default_source": "[64]",
        "type": "list[int]",
        "cell_index": 0,
        "line": 2,
    }

    template = yaml.safe_load(cli("inspect", nb, "--sweep-template").stdout)
    assert template["program"] == str(nb)
    assert template["command"] == ["nbsweep", "run", "${program}", "--", "${args}"]
    assert template["metric"] == {"name": "val_acc", "goal": "maximize"}
    assert template["parameters"]["lr"] == {
        "distribution": "log_uniform_values",
        "min": 1e-4,
        "max": 1e-2,
    }
    assert template["parameters"]["seed"] == {"values": [0]}
    assert template["parameters"]["opt.beta1"]["distribution"] == "log_uniform_values"


def test_config_dict_and_config_var(cli, tmp_path):
    nb = write_notebook(tmp_path / "nb.ipynb", ["hp = dict(lr=0.1, opt=dict(beta1=0.9))"])
    missing = cli("inspect", nb)
    assert missing.returncode == 2
    assert "tag the cell that sets the defaults with 'parameters'" in missing.stderr
    data = json.loads(cli("inspect", nb, "--config-var", "hp", "--json").stdout)
    assert data["style"] == "config-dict" and data["config_var"] == "hp"
    assert [p["name"] for p in data["parameters"]] == ["lr", "opt.beta1"]


def test_version(cli):
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("nbsweep, version ")


def test_a_notebook_written_the_wandb_way(cli):
    from pathlib import Path

    tutorial = Path(__file__).parent.parent / "notebooks" / "wandb_tutorial.ipynb"
    table = cli("inspect", tutorial)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == (
        "wandb.sweep gets sweep_config (cell 8), method random, metric loss (minimize), "
        "project digits-sweeps-demo"
    )
    assert lines[1].split() == ["name", "distribution", "source"]
    assert lines[2].split()[:3] == ["optimizer", "values:", "adam,"]
    assert "log_uniform_values: min 0.0005, max 0.05" in lines[5]
    assert lines[-3].startswith("wandb.agent calls train (cell 11, count=5): nbsweep runs it")
    assert lines[-1] == (
        "setup (run once per agent, trials fork after it): cells 1-10 (10 code cells); "
        "trials start at the wandb.agent call in cell 11"
    )
    data = json.loads(cli("inspect", tutorial, "--json").stdout)
    assert data["style"] == "wandb"
    assert data["wandb"]["agent_function"] == "train" and data["wandb"]["agent_count"] == 5
    assert data["wandb"]["parameters"] == [
        "optimizer", "hidden_units", "epochs", "learning_rate", "batch_size"
    ]  # fmt: skip
    assert data["setup"] == {
        "cells": list(range(1, 11)),
        "fork_point": "the wandb.agent call in cell 11",
        "fork_cell": 11,
    }
    template = yaml.safe_load(cli("inspect", tutorial, "--sweep-template").stdout)
    assert template["program"] == str(tutorial) and template["method"] == "random"
    assert template["command"] == ["nbsweep", "run", "${program}", "--", "${args}"]


def test_non_literal_steps_and_defaults_are_shown(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "import math, wandb",
            "cfg = {'method': 'grid', 'parameters': {'lr': {'value': math.pi}}}",
            "def train(config_defaults={'lr': 0.1}):\n    wandb.init(config=config_defaults)",
            "wandb.sweep(cfg)\nwandb.agent('x', train)",
        ],
    )
    result = cli("inspect", nb)
    assert result.returncode == 0, result.stderr
    assert "defaults given to wandb.init / wandb.config: lr=0.1" in result.stdout
    assert "problem: cell 1 line 1: math.pi is not a literal" in result.stdout
    failed = cli("inspect", nb, "--sweep-template")
    assert failed.returncode == 2 and "cannot read the dict passed to wandb.sweep" in failed.stderr


def test_the_setup_and_the_fork_point_are_shown(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "# md: # Ridge",
            "!pip install -q numpy",
            "import numpy as np\nX = np.ones((100, 5))",
            ("alpha = 0.1", ["parameters"]),
            "print(X.sum() * alpha)",
        ],
    )
    table = cli("inspect", nb)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[-1] == (
        "setup (run once per agent, trials fork after it): cells 1-3 (3 code cells); "
        "trials start at the injected parameters after cell 3"
    )
    data = json.loads(cli("inspect", nb, "--json").stdout)
    assert data["setup"] == {
        "cells": [1, 2, 3],
        "fork_point": "the injected parameters after cell 3",
        "fork_cell": 4,
    }
    template = cli("inspect", nb, "--sweep-template")
    assert "trials start at" not in template.stdout

    # As papermill leaves a failed run: an error cell on top, the injected values.
    executed = nbformat.read(nb, as_version=4)
    error_cell = nbformat.v4.new_markdown_cell("An Exception was encountered")
    error_cell.metadata["tags"] = ["papermill-error-cell-tag"]
    injected = nbformat.v4.new_code_cell("alpha = 1.0")
    injected.metadata["tags"] = ["injected-parameters"]
    executed.cells[4:4] = [injected]
    executed.cells[0:0] = [error_cell]
    nbformat.write(executed, nb)
    data = json.loads(cli("inspect", nb, "--json").stdout)
    assert data["setup"] == {
        "cells": [2, 3, 4],
        "fork_point": "the injected parameters after cell 4",
        "fork_cell": 6,
    }


def test_the_setup_follows_config_var_sweep_function_and_the_per_trial_tag(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [
            "import wandb",
            "hp = dict(lr=0.1)",
            "def baseline():\n    with wandb.init():\n        wandb.log({'loss': 1})",
            "def train():\n    with wandb.init():\n        wandb.log({'loss': wandb.config.lr})",
            "sweep_id = wandb.sweep({'method': 'grid', 'parameters': {'lr': {'values': [1]}}})",
            "wandb.agent(sweep_id, baseline, count=1)",
            "wandb.agent(sweep_id, train)",
        ],
    )
    last = json.loads(cli("inspect", nb, "--json", "--config-var", "hp").stdout)["setup"]
    assert (last["fork_cell"], last["fork_point"]) == (6, "the wandb.agent call in cell 6")
    chosen = cli("inspect", nb, "--sweep-function", "baseline").stdout.splitlines()[-1]
    assert chosen.endswith(
        "cells 0-4 (5 code cells); trials start at the wandb.agent call in cell 5"
    )

    config_dict = write_notebook(
        tmp_path / "config.ipynb",
        ["import os", ("seed = os.getpid()", ["nbsweep-per-trial"]), "hp = dict(lr=0.1)"],
    )
    untagged = json.loads(cli("inspect", config_dict, "--json", "--config-var", "hp").stdout)
    assert untagged["setup"] == {
        "cells": [0],
        "fork_point": "cell 1, tagged nbsweep-per-trial",
        "fork_cell": 1,
    }


def test_no_setup_where_the_values_enter_in_the_first_cell(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        ["import wandb\nrun = wandb.init(project='p')\nlr = wandb.config.lr", "print(lr)"],
    )
    table = cli("inspect", nb)
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("no parameters cell or config dict: the notebook reads")
    assert table.stdout.splitlines()[-1] == (
        "setup: none (trials start at the first wandb.init in cell 0)"
    )
    data = json.loads(cli("inspect", nb, "--json").stdout)
    assert data == {
        "style": "wandb",
        "setup": {"cells": [], "fork_point": "the first wandb.init in cell 0", "fork_cell": 0},
    }
