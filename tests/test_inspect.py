import json

import yaml
from conftest import write_notebook


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
    assert template["command"] == ["nbsweep", "run", "${program}", "${args}"]
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
