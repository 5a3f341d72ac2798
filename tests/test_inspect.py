import json

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
    assert lines[-1].startswith("wandb.agent calls train (cell 11, count=5): nbsweep runs it")
    data = json.loads(cli("inspect", tutorial, "--json").stdout)
    assert data["style"] == "wandb"
    assert data["wandb"]["agent_function"] == "train" and data["wandb"]["agent_count"] == 5
    assert data["wandb"]["parameters"] == [
        "optimizer", "hidden_units", "epochs", "learning_rate", "batch_size"
    ]  # fmt: skip
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
