"""Notebooks written the W&B way run unchanged: `wandb.sweep`/`wandb.agent` inside the notebook,
values read from `wandb.config`, metrics logged with `wandb.log`, an install cell first. Real
kernels with the real wandb SDK, the W&B-protocol test server, local sweeps, the process table."""

from __future__ import annotations

import json
import os
import shutil

import nbformat
import pytest
from helpers import ROOT, executed, fake_installers, run_cmd, user_history, write_notebook

pytestmark = pytest.mark.kernel

TUTORIAL = ROOT / "notebooks" / "wandb_tutorial.ipynb"
VALUES = {
    "r1": {"optimizer": "adam", "hidden_units": 16, "learning_rate": 0.02, "batch_size": 64,
           "epochs": 3},
    "r2": {"optimizer": "sgd", "hidden_units": 32, "learning_rate": 0.001, "batch_size": 128,
           "epochs": 2},
}  # fmt: skip


def with_path_first(env: dict, folder: str) -> None:
    env["PATH"] = folder + os.pathsep + env.get("PATH", "")


def expected_losses(values: dict) -> list[float]:
    """What the tutorial's train() computes for ``values``, run here: a trial that trained on
    anything else (the notebook's defaults, another trial's values) cannot match."""
    nb = nbformat.read(TUTORIAL, as_version=4)
    helpers = next(cell.source for cell in nb.cells if "def build_model" in cell.source)
    namespace: dict = {}
    exec(helpers, namespace)
    from sklearn.metrics import log_loss

    X_train, X_val, y_train, y_val = namespace["build_dataset"]()
    classes = sorted(set(y_train))
    model = namespace["build_model"](
        values["optimizer"], values["hidden_units"], values["learning_rate"], values["batch_size"]
    )
    losses = []
    for _ in range(values["epochs"]):
        model.partial_fit(X_train, y_train, classes=classes)
        losses.append(log_loss(y_val, model.predict_proba(X_val), labels=classes))
    return losses


@pytest.mark.e2e
def test_the_tutorial_runs_unchanged_under_the_online_agent(agent, server, tmp_path):
    shutil.copy(TUTORIAL, tmp_path / "tutorial.ipynb")
    folder, marker = fake_installers(tmp_path)
    with_path_first(agent.env, folder)
    sweep = agent.sweep(
        "tutorial.ipynb",
        [run_cmd("r1", **VALUES["r1"]), run_cmd("r2", **VALUES["r2"]), {"type": "exit"}],
        metric={"name": "loss", "goal": "minimize"},
    )
    result = agent.run(sweep, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = server.runs
    assert sorted(runs) == ["r1", "r2"], "wandb.agent ran train() once per trial, in its run"
    assert "UpsertSweep" not in server.operations, "wandb.sweep created no sweep"
    assert list(server.sweeps) == [sweep]
    for run_id, values in VALUES.items():
        run = runs[run_id]
        assert run.user_config == values
        history = user_history(run)
        # Each wandb.log row reached W&B exactly once (nbsweep forwards none of them).
        assert [row["epoch"] for row in history] == list(range(values["epochs"]))
        assert [row["loss"] for row in history] == pytest.approx(expected_losses(values))
        assert run.exitcode == 0 and run.sweep == sweep
        assert "tutorial.ipynb" in run.files, "the executed notebook is attached"
        saved = executed(tmp_path, sweep, run_id, "tutorial.ipynb")
        assert saved.metadata.nbsweep["status"] == "finished"
    assert not marker.exists(), marker.read_text()


FAILING = [
    "import wandb",
    "sweep_id = wandb.sweep({'method': 'grid', 'parameters': {'depth': {'values': [1, 2]}}})",
    "def train():\n    with wandb.init():\n        check(wandb.config.depth)\n\n"
    "def check(depth):\n    raise ValueError(f'depth {depth} is too shallow')",
    "wandb.agent(sweep_id, train, count=3)",
    "print('after the agent')",
]


@pytest.mark.e2e
def test_a_failing_train_fails_the_trial_with_the_notebook_saved(agent, server, tmp_path):
    write_notebook(tmp_path / "failing.ipynb", FAILING)
    sweep = agent.sweep("failing.ipynb", [run_cmd("r1", depth=2), {"type": "exit"}])
    result = agent.run(sweep, "--max-consecutive-failures", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    saved = executed(tmp_path, sweep, "r1", "failing.ipynb")
    assert saved.metadata.nbsweep["status"] == "failed"
    assert saved.metadata.nbsweep["error"]["source_cell_index"] == 3
    traceback = "\n".join(saved.cells[3].outputs[-1].traceback)
    assert "def check" in traceback or "check(wandb.config.depth)" in traceback
    assert "depth 2 is too shallow" in traceback, "the function's own frames and values"
    assert saved.cells[4].execution_count is None
    assert server.runs["r1"].exitcode == 1


AFTER_AGENT = [
    "import wandb",
    "calls = []\ndef train():\n    calls.append(1)\n    with wandb.init() as run:\n"
    "        wandb.log({'score': wandb.config.x * 2})",
    "wandb.agent('ignored', function=train, count=7)",
    "print('calls', len(calls))",
]


@pytest.mark.e2e
def test_cells_after_wandb_agent_run_and_train_runs_once(agent, server, tmp_path):
    write_notebook(tmp_path / "after.ipynb", AFTER_AGENT)
    sweep = agent.sweep("after.ipynb", [run_cmd("r1", x=4), {"type": "exit"}])
    result = agent.run(sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = executed(tmp_path, sweep, "r1", "after.ipynb")
    assert "calls 1" in "".join(o.get("text", "") for o in saved.cells[3].outputs)
    assert user_history(server.runs["r1"]) == [{"score": 8}]


BLOG_WANDB_LOG_ONLY = [
    "import wandb",
    "config = {'x': 1.0, 'opt': {'scale': 2.0}}",
    "run = wandb.init(config=config)\n"
    "for step in range(3):\n    wandb.log({'score': config['x'] * config['opt']['scale'] + step})\n"
    "wandb.summary['best'] = config['x']\nrun.finish()",
]


def test_a_local_sweep_ranks_by_what_the_notebook_logs_through_wandb(local, tmp_path):
    write_notebook(tmp_path / "blog.ipynb", BLOG_WANDB_LOG_ONLY)
    (tmp_path / "sweep.yaml").write_text(
        "program: blog.ipynb\nmethod: grid\nmetric: {name: score, goal: maximize}\n"
        "parameters:\n  x: {values: [1.0, 3.0, 2.0]}\n  opt.scale: {value: 10.0}\n"
    )
    created = local("sweep", "--local", "sweep.yaml")
    assert created.returncode == 0, created.stderr
    sweep_id = created.stdout.split()[3]
    result = local("agent", f"local:{sweep_id}")
    assert result.returncode == 0, result.stderr[-3000:]
    status = local("status", f"local:{sweep_id}", "--json")
    runs = json.loads(status.stdout)["runs"]
    assert [run["parameters"]["x"] for run in runs] == [3.0, 2.0, 1.0], "ranked by score"
    best = runs[0]
    assert best["metric"] == 32.0 and best["summary"]["best"] == 3.0
    table = local("status", f"local:{sweep_id}")
    assert "32" in table.stdout.splitlines()[2], table.stdout


def test_nbsweep_run_gives_wandb_config_notebooks_their_values_offline(local, tmp_path):
    shutil.copy(TUTORIAL, tmp_path / "tutorial.ipynb")
    folder, marker = fake_installers(tmp_path)
    with_path_first(local.env, folder)
    values = VALUES["r2"]
    args = [f"--{name}={value}" for name, value in values.items()]
    result = local(
        "run", "tutorial.ipynb", *args, "--metrics-json", "m.json", "-o", "out/t.ipynb",
        WANDB_MODE="offline",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    losses = [row["loss"] for row in metrics["history"]]
    assert losses == pytest.approx(expected_losses(values))
    assert metrics["summary"]["loss"] == pytest.approx(losses[-1])
    assert f"loss\t{losses[-1]}" in result.stdout
    assert not marker.exists()


CONFIG_DEFAULTS = [
    "import wandb",
    "def sweep_train(config_defaults=None):\n"
    "    config_defaults = {'width': 8}\n"
    "    wandb.init(config=config_defaults)\n"
    "    wandb.config.depth = 5  # the notebook's own choice for an unswept key\n"
    "    wandb.log({'area': wandb.config.width * wandb.config.depth})\n"
    "    wandb.finish()",
    "wandb.agent('sweep', sweep_train)",
]


def test_the_config_defaults_pattern_takes_the_trials_values(local, tmp_path):
    write_notebook(tmp_path / "defaults.ipynb", CONFIG_DEFAULTS)
    result = local(
        "run", "defaults.ipynb", "--width=3", "--metrics-json", "m.json", WANDB_MODE="offline"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["history"] == [{"step": 0, "area": 15}]


def test_a_notebook_that_never_imports_wandb_is_not_made_to(cli, tmp_path):
    write_notebook(
        tmp_path / "plain.ipynb",
        [("x = 1", ["parameters"]), "import sys, nbsweep\nnbsweep.log({'x': x})\n"
         "print('wandb loaded:', 'wandb' in sys.modules)"],
    )  # fmt: skip
    result = cli("run", "plain.ipynb", "--x=2", "-o", "out.ipynb")
    assert result.returncode == 0, result.stderr
    saved = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "wandb loaded: False" in saved.cells[-1].outputs[0]["text"]


def test_outside_nbsweep_wandb_is_left_alone():
    import subprocess
    import sys

    code = (
        "import nbsweep, wandb\n"
        "assert wandb.agent.__module__.startswith('wandb'), wandb.agent.__module__\n"
        "assert wandb.sweep.__module__.startswith('wandb'), wandb.sweep.__module__\n"
        "assert not getattr(wandb, '_nbsweep_patched', False)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NBSWEEP_"))}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
