"""The fork point and the setup cells (``notebook/setup.py``): pure, no kernel. The notebooks
copy the shapes of real ones: W&B's sweep tutorials, a papermill notebook, a config-dict
notebook. The invariant every test leans on: the setup is exactly the cells a trial's own
notebook (``trial.run.prepare``) has before the fork point, with the same sources."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import make_notebook

from nbsweep.errors import NotebookError
from nbsweep.notebook.injection import Injection
from nbsweep.notebook.parameters import CONTINUED_TAG, INJECTED_TAG
from nbsweep.notebook.setup import PER_TRIAL_TAG, SetupPlan, plan_setup
from nbsweep.options import TrialSettings
from nbsweep.trial.run import prepare
from nbsweep.trial.spec import TrialSpec

# W&B's "Organizing Hyperparameter Sweeps in PyTorch" notebook, cell for cell (bodies cut).
WANDB_TUTORIAL = [
    "# md: # Organizing Hyperparameter Sweeps in PyTorch with W&B",
    "!pip install wandb -Uq",
    "import wandb\n\nwandb.login()",
    "# md: ## Step 1: Define the sweep",
    "sweep_config = {\n    'method': 'random'\n    }",
    "metric = {\n    'name': 'loss',\n    'goal': 'minimize'\n    }\n\n"
    "sweep_config['metric'] = metric",
    "parameters_dict = {\n    'optimizer': {'values': ['adam', 'sgd']},\n"
    "    'fc_layer_size': {'values': [128, 256, 512]},\n"
    "    'dropout': {'values': [0.3, 0.4, 0.5]},\n    }\n\n"
    "sweep_config['parameters'] = parameters_dict",
    "parameters_dict.update({\n    'epochs': {'value': 1}\n    })",
    "parameters_dict.update({\n    'learning_rate': {\n        'distribution': 'uniform',\n"
    "        'min': 0,\n        'max': 0.1\n      },\n    'batch_size': {\n"
    "        'distribution': 'q_log_uniform_values',\n        'q': 8,\n        'min': 32,\n"
    "        'max': 256,\n      }\n    })",
    "import pprint\n\npprint.pprint(sweep_config)",
    'sweep_id = wandb.sweep(sweep_config, project="pytorch-sweeps-demo")',
    "import torch\nimport torch.optim as optim\n\n"
    'device = torch.device("cuda" if torch.cuda.is_available() else "cpu")\n\n'
    "def train(config=None):\n    # Initialize a new wandb run\n"
    "    with wandb.init(config=config):\n        config = wandb.config\n\n"
    "        loader = build_dataset(config.batch_size)\n"
    "        network = build_network(config.fc_layer_size, config.dropout)\n"
    "        optimizer = build_optimizer(network, config.optimizer, config.learning_rate)\n\n"
    "        for epoch in range(config.epochs):\n"
    "            avg_loss = train_epoch(network, loader, optimizer)\n"
    '            wandb.log({"loss": avg_loss, "epoch": epoch})',
    "def build_dataset(batch_size):\n    return list(range(batch_size))",
    "wandb.agent(sweep_id, train, count=5)",
]
WANDB_VALUES = [("learning_rate", 0.05), ("optimizer", "adam"), ("batch_size", 64)]

# papermill's layout: data prepared first, then the tagged defaults, then training.
PAPERMILL = [
    "# md: # Train a ridge model",
    "import numpy as np\nrng = np.random.default_rng(0)",
    "X = rng.normal(size=(2000, 50))\ny = X @ rng.normal(size=50)",
    ("alpha = 0.1\nepochs = 3", ["parameters"]),
    "for epoch in range(epochs):\n    w = np.linalg.solve(X.T @ X + alpha * np.eye(50), X.T @ y)",
    "import nbsweep\nnbsweep.log({'loss': float(((X @ w - y) ** 2).mean())})",
]
PAPERMILL_VALUES = [("alpha", 1.0), ("epochs", 5)]

# The W&B-blog layout: a config dict with code after it in the same cell.
CONFIG_DICT = [
    "!pip install -q numpy",
    "import numpy as np\ndata = np.arange(1000.0)",
    "config = dict(\n    lr=0.01,\n    epochs=5,\n    opt=dict(beta1=0.9),\n)\n"
    "weights = np.zeros(3)\nprint(config)",
    "for _ in range(config['epochs']):\n    weights -= config['lr']",
]
CONFIG_VALUES = [("lr", 0.1), ("opt.beta1", 0.8)]


def _plan(nb: nbformat.NotebookNode, settings: TrialSettings) -> SetupPlan:
    return plan_setup(
        nb,
        config_var=settings.config_var,
        sweep_function=settings.sweep_function,
        run_install_cells=settings.run_install_cells,
    )


def _prepared(
    nb: nbformat.NotebookNode, values: Sequence[tuple[str, Any]], settings: TrialSettings
) -> Injection:
    return prepare(TrialSpec(Path("nb.ipynb"), values, settings=settings), nb)


def _assert_setup_is_the_trials_prefix(
    nb: nbformat.NotebookNode, values: Sequence[tuple[str, Any]], settings: TrialSettings
) -> tuple[SetupPlan, Injection]:
    """What the template runs is what the trial would have run before its fork point, and
    nothing the injection adds lands before it."""
    plan = _plan(nb, settings)
    injection = _prepared(nb, values, settings)
    before_fork = injection.notebook.cells[: plan.fork_index]
    in_trial = [
        (index, cell.source)
        for index, cell in enumerate(before_fork)
        if cell.cell_type == "code" and cell.source.strip()
    ]
    assert in_trial == list(zip(plan.cells, plan.sources, strict=True))
    assert None not in injection.origins[: plan.fork_index]
    assert plan.file_cells == tuple(injection.origins[index] for index in plan.cells)
    return plan, injection


@pytest.mark.parametrize("run_install_cells", [False, True])
@pytest.mark.parametrize("values", [WANDB_VALUES, []])
def test_wandb_tutorial_forks_at_its_agent_call(
    values: list[tuple[str, Any]], run_install_cells: bool
) -> None:
    settings = TrialSettings(run_install_cells=run_install_cells)
    plan, injection = _assert_setup_is_the_trials_prefix(
        make_notebook(WANDB_TUTORIAL), values, settings
    )
    assert plan.fork_index == 13 and plan.fork_cell == 13
    assert plan.fork_point == "the wandb.agent call in cell 13"
    assert plan.cells == (1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12)  # markdown is not run
    assert injection.notebook.cells[plan.fork_index].source.startswith("wandb.agent(")
    install = plan.sources[0]
    if run_install_cells:
        assert install == "!pip install wandb -Uq"
    else:
        assert install.startswith("# nbsweep skipped: !pip install wandb -Uq")


def test_the_chosen_agent_call_is_the_fork_point() -> None:
    nb = make_notebook(
        [
            "import wandb",
            "def baseline():\n    with wandb.init():\n        wandb.log({'loss': 1})",
            "def train():\n    with wandb.init():\n        wandb.log({'loss': wandb.config.lr})",
            "wandb.agent('s', baseline, count=1)",
            "wandb.agent('s', train, count=5)",
        ]
    )
    assert plan_setup(nb).fork_index == 4
    chosen = plan_setup(nb, sweep_function="baseline")
    assert (chosen.fork_index, chosen.fork_point) == (3, "the wandb.agent call in cell 3")
    _assert_setup_is_the_trials_prefix(nb, [], TrialSettings(sweep_function="baseline"))
    with pytest.raises(NotebookError, match="--sweep-function nothing"):
        plan_setup(nb, sweep_function="nothing")  # as prepare raises it


def test_an_exploratory_baseline_and_run_before_the_agent_are_setup() -> None:
    # W&B's PyG node-classification tutorial: an MLP trained for 200 epochs, a logged
    # exploratory run, then the sweep.
    nb = make_notebook(
        [
            "%%capture\n!pip install -q torch-geometric wandb",
            "import wandb\nimport numpy as np",
            "def train_mlp(epochs):\n    return sum(np.ones(epochs))",
            "baseline = train_mlp(200)\nprint(f'MLP loss {baseline}')",
            "run = wandb.init(project='pyg-demo', job_type='baseline')\n"
            "wandb.log({'mlp_loss': baseline})\nwandb.finish()",
            "sweep_config = {'method': 'grid', 'parameters': {'hidden': {'values': [16, 64]}}}\n"
            "sweep_id = wandb.sweep(sweep_config, project='pyg-demo')",
            "def train():\n    with wandb.init() as run:\n"
            "        wandb.log({'loss': train_mlp(run.config.hidden)})",
            "wandb.agent(sweep_id, train, count=2)",
        ]
    )
    plan, _ = _assert_setup_is_the_trials_prefix(nb, [("hidden", 64)], TrialSettings())
    assert plan.cells == (0, 1, 2, 3, 4, 5, 6) and plan.fork_index == 7
    assert plan.sources[0].startswith("%%capture\n# nbsweep skipped: !pip install -q torch")


def test_without_an_agent_call_the_first_wandb_init_is_the_fork_point() -> None:
    nb = make_notebook(
        [
            "import numpy as np\nimport wandb as wb",
            "data = np.arange(100.0)",
            "# md: ## Train",
            "run = wb.init(project='p')\nlr = wb.config.get('lr', 0.1)",
            "wb.log({'loss': float(data.mean() * lr)})",
        ]
    )
    plan, _ = _assert_setup_is_the_trials_prefix(nb, [("lr", 0.5)], TrialSettings())
    assert (plan.fork_index, plan.cells) == (3, (0, 1))
    assert plan.fork_point == "the first wandb.init in cell 3"


def test_a_run_opened_in_the_first_cell_leaves_no_setup() -> None:
    nb = make_notebook(["import wandb\nrun = wandb.init()", "print(wandb.config.lr)"])
    plan = plan_setup(nb)
    assert (plan.fork_index, plan.cells) == (0, ())
    assert plan.fork_point == "the first wandb.init in cell 0"


def test_a_config_dict_beside_the_notebooks_own_sweep_is_left_alone() -> None:
    """With its own wandb.agent the values go to wandb.config, not to ``config``."""
    nb = make_notebook(
        [
            "import wandb",
            "config = {'epochs': 2}",
            "def train():\n    with wandb.init(config=config):\n        wandb.log({'loss': 1})",
            "wandb.agent('s', train, count=3)",
        ]
    )
    plan, _ = _assert_setup_is_the_trials_prefix(nb, [("epochs", 4)], TrialSettings())
    assert (plan.fork_index, plan.cells) == (3, (0, 1, 2))


def test_a_function_that_opens_the_run_is_where_values_may_enter() -> None:
    """Where the run is opened inside a function, the values enter when it is called, at
    the definition or later: the definition is the safe fork point."""
    nb = make_notebook(
        [
            "import wandb",
            "x = 2",
            "def train():\n    wandb.init()\n    return wandb.config.lr * x",
            "train()",
        ]
    )
    assert plan_setup(nb).fork_index == 2


def test_papermill_forks_at_the_injected_parameters() -> None:
    nb = make_notebook(PAPERMILL)
    plan, injection = _assert_setup_is_the_trials_prefix(nb, PAPERMILL_VALUES, TrialSettings())
    assert plan.fork_index == 4 and plan.fork_cell == 4
    assert plan.cells == (1, 2, 3)  # the parameters cell is setup: the injection overrides it
    assert plan.fork_point == "the injected parameters after cell 3"
    assert injection.injected_cell_index == plan.fork_index
    assert INJECTED_TAG in injection.notebook.cells[plan.fork_index].metadata.tags


def test_a_parameters_cell_in_a_wandb_notebook_still_takes_the_values() -> None:
    nb = make_notebook(
        [
            "import wandb",
            ("lr = 0.1", ["parameters"]),
            "def train():\n    wandb.init(config={'lr': lr})",
            "wandb.agent('s', train)",
        ]
    )
    plan, injection = _assert_setup_is_the_trials_prefix(nb, [("lr", 0.2)], TrialSettings())
    assert plan.fork_index == 2 == injection.injected_cell_index


def test_parameters_as_the_last_cell_leave_trials_only_the_injection() -> None:
    nb = make_notebook(["import math", ("lr = 0.1", ["parameters"])])
    plan, _ = _assert_setup_is_the_trials_prefix(nb, [("lr", 0.2)], TrialSettings())
    assert (plan.fork_index, plan.cells, plan.fork_cell) == (2, (0, 1), 2)


@pytest.mark.parametrize("values", [CONFIG_VALUES, []])
def test_config_dict_forks_at_its_assignment(values: list[tuple[str, Any]]) -> None:
    nb = make_notebook(CONFIG_DICT)
    plan, injection = _assert_setup_is_the_trials_prefix(nb, values, TrialSettings())
    assert (plan.fork_index, plan.cells) == (2, (0, 1))
    assert plan.fork_point == "the config dict assignment in cell 2"
    cells = injection.notebook.cells
    assert cells[plan.fork_index].source.startswith("config = dict(")
    if values:  # the trial runs the assignment, the injection, then the rest of the cell
        assert injection.injected_cell_index == plan.fork_index + 1
        assert CONTINUED_TAG in cells[plan.fork_index + 2].metadata.tags


def test_config_var_names_the_dict() -> None:
    nb = make_notebook(["import os", "hp = {'lr': 0.1}", "print(hp)"])
    assert plan_setup(nb).fork_index == 0
    plan = plan_setup(nb, config_var="hp")
    assert (plan.fork_index, plan.fork_point) == (1, "the hp dict assignment in cell 1")
    _assert_setup_is_the_trials_prefix(nb, [("lr", 0.3)], TrialSettings(config_var="hp"))


def test_a_tagged_cell_and_all_after_it_run_per_trial() -> None:
    cells: list[str | tuple[str, list[str]]] = list(PAPERMILL)
    cells[2] = (str(cells[2]), [PER_TRIAL_TAG])
    nb = make_notebook(cells)
    plan, _ = _assert_setup_is_the_trials_prefix(nb, PAPERMILL_VALUES, TrialSettings())
    assert (plan.fork_index, plan.cells) == (2, (1,))
    assert plan.fork_point == f"cell 2, tagged {PER_TRIAL_TAG}"

    after_fork = list(PAPERMILL)
    after_fork[5] = (str(after_fork[5]), [PER_TRIAL_TAG])
    assert plan_setup(make_notebook(after_fork)).fork_index == 4


def test_an_executed_notebook_run_again_has_the_same_setup() -> None:
    """A trial's saved notebook (injected cells, skipped install lines, a split config
    cell) planned again: the same setup, cells numbered as in that file."""
    for cells, values in [
        (CONFIG_DICT, CONFIG_VALUES),
        (PAPERMILL, PAPERMILL_VALUES),
        (WANDB_TUTORIAL, WANDB_VALUES),
    ]:
        nb = make_notebook(cells)
        executed = _prepared(nb, values, TrialSettings()).notebook
        again, first = plan_setup(executed), plan_setup(nb)
        assert (again.sources, again.fork_index) == (first.sources, first.fork_index)
        _assert_setup_is_the_trials_prefix(executed, values, TrialSettings())


def test_cells_are_numbered_as_in_the_file() -> None:
    nb = make_notebook(["import math", ("lr = 0.1", ["parameters"]), "print(lr)"])
    stale = nbformat.v4.new_code_cell("lr = 0.5", metadata={"tags": [INJECTED_TAG]})
    nb.cells.insert(0, stale)  # an old injection, dropped by every trial
    plan = plan_setup(nb)
    assert (plan.cells, plan.file_cells) == ((0, 1), (1, 2))
    assert (plan.fork_index, plan.fork_cell) == (2, 3)
    assert plan.fork_point == "the injected parameters after cell 2"


def test_no_entry_for_values_means_no_setup() -> None:
    plan = plan_setup(make_notebook(["import math", "print(math.pi)"]))
    assert (plan.fork_index, plan.cells, plan.sources) == (0, (), ())
    assert "finds no cell where a trial's values enter" in plan.fork_point
    assert plan_setup(make_notebook([])).fork_index == 0


def test_a_notebook_in_another_language_has_no_setup() -> None:
    nb = make_notebook(["library(stats)", ("alpha <- 0.1", ["parameters"])], kernel=None)
    nb.metadata["kernelspec"] = {"name": "ir", "display_name": "R", "language": "R"}
    plan = plan_setup(nb)
    assert (plan.fork_index, plan.cells) == (0, ())
    assert "'r'" in plan.fork_point


def test_a_cell_that_does_not_parse_is_run_by_trials() -> None:
    nb = make_notebook(
        ["import math", "def broken(:\n    pass", ("lr = 0.1", ["parameters"]), "print(lr)"]
    )
    plan, _ = _assert_setup_is_the_trials_prefix(nb, [("lr", 0.2)], TrialSettings())
    assert (plan.fork_index, plan.cells) == (1, (0,))
    assert plan.fork_point.startswith("cell 1, which is not Python nbsweep reads (line 1:")


def test_ipython_lines_are_not_parse_errors() -> None:
    nb = make_notebook(
        [
            "%load_ext autoreload\n%autoreload 2",
            "files = !ls\nnp?",
            "%%bash\necho hi",
            "if True:\n    !pip install -q numpy\nfor _ in range(2):\n    %time sum(range(9))",
            ("lr = 0.1", ["parameters"]),
        ]
    )
    assert plan_setup(nb).fork_index == 5
    assert plan_setup(nb, run_install_cells=True).fork_index == 5


def test_a_config_dict_nbsweep_cannot_inject_after_gives_no_setup() -> None:
    nb = make_notebook(["import math", "config = {'lr': 0.1}; print(config)"])
    with pytest.raises(NotebookError):
        _prepared(nb, [("lr", 0.2)], TrialSettings())  # trials with values stop at it
    plan = plan_setup(nb)  # never raises where a trial without values runs
    assert plan.fork_index == 0 and "on lines of its own" in plan.fork_point
    _prepared(nb, [], TrialSettings())


def test_without_an_agent_call_a_wandb_init_before_the_parameters_is_the_fork_point():
    """The first wandb.init opens the trial's run where no wandb.agent call exists: it must
    run in the trial, even before a parameters cell."""
    nb = make_notebook(
        [
            "import wandb",
            "run = wandb.init(project='p')\nrun.finish()",
            ("lr = 0.1", ["parameters"]),
            "print(lr)",
        ]
    )
    plan = plan_setup(nb)
    assert plan.fork_index == 1 and plan.cells == (0,)
    assert plan.fork_point == "the first wandb.init in cell 1"
