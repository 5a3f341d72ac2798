"""Reading the W&B way of writing a sweep notebook with `ast`: no kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
from helpers import make_notebook

from nbsweep.notebook.wandb_way import analyse, sweep_parameter_names

ROOT = Path(__file__).parent.parent


def test_the_tutorial_dict_built_over_cells_is_resolved():
    found = analyse(nbformat.read(ROOT / "notebooks" / "wandb_tutorial.ipynb", as_version=4))
    assert found.config_name == "sweep_config" and found.sweep_cell == 8
    assert found.config["method"] == "random"
    assert found.config["metric"] == {"name": "loss", "goal": "minimize"}
    assert found.parameter_names() == [
        "optimizer", "hidden_units", "epochs", "learning_rate", "batch_size"
    ]  # fmt: skip
    assert found.project == "digits-sweeps-demo"
    assert (found.agent_function, found.agent_cell, found.agent_count) == ("train", 11, 5)
    assert found.reads_wandb_config and not found.problems


def test_aliases_updates_nested_keys_and_inline_sweeps():
    nb = make_notebook(
        [
            "import wandb as wb",
            "params = dict(lr={'min': 0.1, 'max': 1.0})\ncfg = {'method': 'grid'}",
            "cfg['parameters'] = params\nparams.update(depth={'values': [1, 2]})",
            "params['lr']['distribution'] = 'uniform'\nparams.update({'opt': {'parameters': "
            "{'beta1': {'value': 0.9}}}})",
            "sweep_id = wb.sweep(sweep=cfg, entity='me')\nwb.agent(sweep_id, function=run)",
        ]
    )
    found = analyse(nb)
    assert found.config["parameters"]["lr"] == {"min": 0.1, "max": 1.0, "distribution": "uniform"}
    assert found.parameter_names() == ["lr", "depth", "opt.beta1"]
    assert found.entity == "me" and found.agent_function == "run" and found.agent_count is None


def test_a_step_that_is_not_a_literal_names_its_cell():
    nb = make_notebook(
        [
            "import math, wandb",
            "sweep_config = {'method': 'random'}",
            "sweep_config['parameters'] = {'lr': {'min': math.log(1e-4), 'max': 0.0}}",
            "sweep_id = wandb.sweep(sweep_config)",
        ]
    )
    found = analyse(nb)
    assert found.config is None
    assert len(found.problems) == 1
    assert found.problems[0].startswith("cell 2 line 1: math.log(")
    assert "nbsweep sweep SWEEP.yaml" in found.problems[0]


def test_the_config_defaults_patterns():
    keras = make_notebook(
        [
            "import wandb",
            "def sweep_train(config_defaults={'lr': 0.1, 'layers': 2}):\n"
            "    with wandb.init(config=config_defaults):\n        pass",
            "wandb.agent('x', sweep_train, count=10)",
        ]
    )
    assert analyse(keras).defaults == {"lr": 0.1, "layers": 2}
    tensorflow = make_notebook(
        [
            "import wandb",
            "def sweep_train(config_defaults=None):\n    config_defaults = {'lr': 0.1}\n"
            "    wandb.init(config=config_defaults)\n    wandb.config.epochs = 2",
            "wandb.agent('x', sweep_train)",
        ]
    )
    assert analyse(tensorflow).defaults == {"lr": 0.1, "epochs": 2}
    pyg = make_notebook(
        [
            "import wandb",
            "def train():\n    wandb.init(project='p')\n    config = wandb.config\n"
            "    config.hidden = 64\n    config.model = model_name()",
            "wandb.agent('x', function=train)",
        ]
    )
    assert analyse(pyg).defaults == {"hidden": 64}


def test_the_config_defaults_under_any_name_an_import_gives_wandb():
    """The same one rule that finds ``wandb.init`` finds the defaults and the reads of
    ``wandb.config``: ``import wandb as wb`` and ``from wandb import init`` too."""
    aliased = make_notebook(
        [
            "import wandb as wb",
            "def sweep_train(config_defaults={'lr': 0.1}):\n"
            "    wb.init(config=config_defaults)\n    wb.config.epochs = 2",
            "wb.agent('x', sweep_train)",
        ]
    )
    assert analyse(aliased).defaults == {"lr": 0.1, "epochs": 2}
    imported = make_notebook(
        [
            "import wandb\nfrom wandb import init as start, config as cfg",
            "def sweep_train(config_defaults={'lr': 0.1}):\n"
            "    start(config=config_defaults)\n    cfg.epochs = 3",
            "wandb.agent('x', sweep_train)",
        ]
    )
    found = analyse(imported)
    assert found.defaults == {"lr": 0.1, "epochs": 3}
    assert found.reads_wandb_config


def test_a_notebook_without_wandb():
    found = analyse(make_notebook([("x = 1", ["parameters"]), "print(x)", "!pip list"]))
    assert found.config is None and found.agent_function is None
    assert not found.reads_wandb_config and not found.problems


def test_sweep_parameter_names_of_nested_groups():
    config = {"parameters": {"a": {"value": 1}, "g": {"parameters": {"b": {"values": [1]}}}}}
    assert sweep_parameter_names(config) == ["a", "g.b"]
    assert sweep_parameter_names({}) == []


def test_the_config_is_what_it_was_when_the_sweep_was_made():
    nb = make_notebook(
        ["import wandb", "c = {'method': 'grid'}\nsid = wandb.sweep(c)", "c['method'] = 'bayes'"]
    )
    assert analyse(nb).config == {"method": "grid"}


def test_changes_nbsweep_does_not_follow_are_problems_not_silent():
    for step in ("del c['parameters']['b']", "c['parameters'].pop('a')",
                 "for k in ('a', 'b'):\n    c['parameters'][k]['value'] = 2"):  # fmt: skip
        nb = make_notebook(
            [
                "import wandb",
                "c = {'parameters': {'a': {'value': 1}, 'b': {'value': 1}}}",
                step,
                "print(c)\nwandb.sweep(c)",
            ]
        )
        found = analyse(nb)
        assert found.config is None, step
        assert found.problems and found.problems[0].startswith("cell 2 line 1: c is changed")


def test_reading_a_dict_is_not_changing_it_and_from_imports_count():
    nb = make_notebook(
        [
            "from wandb import sweep, agent\nimport pprint",
            "c = {'method': 'grid'}\npprint.pprint(c)\nfor key in c:\n    print(key)",
            "P = 'proj'\nN = 3\nsid = sweep(c, project=P)\nagent(sid, function=f, count=N)",
        ]
    )
    found = analyse(nb)
    assert found.config == {"method": "grid"} and not found.problems
    assert (found.project, found.agent_function, found.agent_count) == ("proj", "f", 3)


def test_values_for_a_wandb_config_notebook_are_checked_against_its_sweep():
    import pytest

    from nbsweep.errors import ParameterError
    from nbsweep.notebook.injection import parameterize

    nb = nbformat.read(ROOT / "notebooks" / "wandb_tutorial.ipynb", as_version=4)
    injection = parameterize(nb, [("optimizer", "sgd"), ("epochs", 2)])
    assert injection.values == {"optimizer": "sgd", "epochs": 2}
    assert injection.injected_cell_index is None, "nothing injected: wandb.config gets them"
    with pytest.raises(ParameterError, match=r"'optimiser' \(did you mean 'optimizer'\?\)"):
        parameterize(nb, [("optimiser", "sgd")])
    assert parameterize(nb, [("optimiser", "sgd")], allow_unknown=True).values
