"""Setup once per agent: the cells before the first one a trial's values reach run once in
the kernel template, and every trial's kernel forks from there. A trial computes what a fresh
kernel running the whole notebook computes; where sharing the setup is not safe, the agent
says why once and every trial runs every cell.

The notebooks copy the shapes of real ones: W&B's sweep tutorials (``!pip install``,
``wandb.login()``, a ``sweep_config`` dict, ``wandb.sweep``, an exploratory run before the
agent cell, ``def train(config=None): with wandb.init(config=config)``, ``wandb.agent(...,
count=5)``), papermill's ``parameters`` cell and the ``config = dict(...)`` style."""

from __future__ import annotations

import json
import random
import re
import signal
import time

import nbformat
import pytest
from helpers import wait_for_file

pytestmark = pytest.mark.kernel

RAN_ONCE = "ran_once"

PAPERMILL = [
    "# md: # Linear regression, tuned by nbsweep",
    "!pip install -q numpy",
    "import json, os, sys\nimport numpy as np\nimport nbsweep",
    "rng = np.random.default_rng(42)\n"
    "X = rng.normal(size=(500, 8))\n"
    "y = X @ rng.normal(size=8) + 0.1 * rng.normal(size=500)\n"
    "os.makedirs('data', exist_ok=True)\n"
    "np.save('data/X.npy', X)\n"
    "print('prepared', X.shape)\n"
    "print('columns are standardised', file=sys.stderr)\n"
    "print('rows', len(X))\n"
    "X[:2].round(3)",
    "from IPython.display import HTML, display\ndisplay(HTML('<b>data ready</b>'))\n"
    "def mse(w):\n    return float(np.mean((X @ w - y) ** 2))",
    ("lr = 0.01\nepochs = 20", ["parameters"]),
    "w = np.zeros(8)\n"
    "for _ in range(epochs):\n"
    "    w -= lr * 2 * X.T @ (X @ w - y) / len(y)\n"
    "names = sorted(n for n in globals() if not n.startswith('_'))\n"
    "print(names)\n"
    "with open(f'loss-{lr}.json', 'w') as f:\n"
    "    json.dump({'loss': mse(w)}, f)\n"
    "nbsweep.log({'loss': mse(w), 'names': len(names), 'saved': os.path.getsize('data/X.npy')})\n"
    "mse(w)",
]

CONFIG_DICT = [
    "import numpy as np\nimport nbsweep",
    "data = np.arange(1000, dtype=float).reshape(100, 10)\nmeans = data.mean(axis=0)\nmeans[:3]",
    "config = dict(lr=0.1, epochs=3)\nprint('training with', config)",
    "score = float(means.sum() * config['lr'] * config['epochs'])\nnbsweep.log({'score': score})",
]

WANDB_TUTORIAL = [
    "!pip install wandb -qU",
    "import wandb\nimport numpy as np",
    "wandb.login()",
    "sweep_config = {\n"
    "    'method': 'random',\n"
    "    'metric': {'name': 'loss', 'goal': 'minimize'},\n"
    "    'parameters': {'lr': {'distribution': 'uniform', 'min': 0.001, 'max': 0.1}},\n"
    "}",
    "sweep_id = wandb.sweep(sweep_config, project='pytorch-sweeps-demo')",
    "np.random.seed(0)\nX = np.random.rand(200, 4)\ny = X.sum(axis=1)\nX.shape",
    "# An exploratory run, as tutorials train a baseline before the sweep\n"
    "baseline = wandb.init(project='pytorch-sweeps-demo', config={'lr': 0.01})\n"
    "baseline.log({'baseline_loss': float(np.mean(y ** 2))})\n"
    "baseline.finish()",
    "def train(config=None):\n"
    "    with wandb.init(config=config):\n"
    "        config = wandb.config\n"
    "        w = np.zeros(4)\n"
    "        for epoch in range(5):\n"
    "            w -= config.lr * 2 * X.T @ (X @ w - y) / len(y)\n"
    "            wandb.log({'loss': float(np.mean((X @ w - y) ** 2)), 'epoch': epoch})",
    "wandb.agent(sweep_id, train, count=5)",
]


def _grid(name: str, *values: object) -> str:
    return f"method: grid\nparameters:\n  {name}: {{values: {json.dumps(list(values))}}}\n"


def _run(local, grid: str, cells: list, *options: str, expect: int = 0) -> tuple[str, str]:
    sweep = local.sweep(grid, cells)
    result = local("agent", f"local:{sweep}", *options)
    assert result.returncode == expect, result.stderr[-3000:]
    return sweep, result.stderr


def _runs(local, sweep: str) -> list[dict]:
    return sorted(local.status(sweep)["runs"], key=lambda run: json.dumps(run["values"]))


def _notebooks(local, sweep: str) -> list[nbformat.NotebookNode]:
    return [nbformat.read(local.cwd / run["notebook"], as_version=4) for run in _runs(local, sweep)]


def _code_cells(nb: nbformat.NotebookNode) -> list[tuple[int | None, list, bool]]:
    """Each code cell's execution count, outputs and whether it ran once in the template."""
    return [
        (
            cell.execution_count,
            [{k: v for k, v in output.items() if k != "metadata"} for output in cell.outputs],
            RAN_ONCE in cell.metadata.get("nbsweep", {}).get("setup", {}),
        )
        for cell in nb.cells
        if cell.cell_type == "code"
    ]


def _both_ways(local, grid: str, cells: list, *options: str) -> tuple[tuple, tuple]:
    """The same sweep with every cell in every trial, then with the setup shared."""
    fresh = _run(local, grid, cells, "--no-setup-once", *options)
    shared = _run(local, grid, cells, *options)
    return fresh, shared


@pytest.mark.parametrize(
    "cells,grid,setup_cells",
    [
        (PAPERMILL, _grid("lr", 0.01, 0.05), 5),  # the parameters cell too
        (CONFIG_DICT, _grid("lr", 0.2), 2),
    ],
    ids=["papermill", "config-dict"],
)
def test_a_trial_computes_what_a_fresh_kernel_computes(local, cells, grid, setup_cells):
    (fresh, fresh_err), (shared, shared_err) = _both_ways(local, grid, cells, "--no-wandb")
    assert "setup not shared" not in shared_err + fresh_err
    assert shared_err.count("ran once in the kernel template") == 1, shared_err
    fresh_runs, shared_runs = _runs(local, fresh), _runs(local, shared)
    assert [r["summary"] for r in shared_runs] == [r["summary"] for r in fresh_runs]
    assert {r["state"] for r in shared_runs} == {"finished"}
    for fresh_nb, shared_nb in zip(
        _notebooks(local, fresh), _notebooks(local, shared), strict=True
    ):
        fresh_cells, shared_cells = _code_cells(fresh_nb), _code_cells(shared_nb)
        # The same execution counts and outputs, byte for byte; only the mark differs.
        assert [c[:2] for c in shared_cells] == [c[:2] for c in fresh_cells]
        assert [c[2] for c in shared_cells] == [True] * setup_cells + [False] * (
            len(shared_cells) - setup_cells
        )
        assert not any(c[2] for c in fresh_cells)
        setup = next(c for c in shared_nb.cells if "nbsweep" in c.metadata)
        mark = setup.metadata["nbsweep"]["setup"]
        assert mark["host"] and mark["template_pid"] > 0 and mark["at"]


def test_the_wandb_tutorial_shape_runs_its_setup_once(local):
    """W&B's tutorial shape: login, sweep config, wandb.sweep, data, an exploratory run that
    is finished, the sweep function; each trial runs the agent cell in its own run."""
    grid = _grid("lr", 0.01, 0.05)
    (fresh, _), (shared, stderr) = _both_ways(local, grid, WANDB_TUTORIAL)
    assert "ran once in the kernel template" in stderr and "setup not shared" not in stderr
    assert "the wandb.agent call in cell 8" in stderr, stderr
    fresh_runs, shared_runs = _runs(local, fresh), _runs(local, shared)
    assert [r["state"] for r in shared_runs] == ["finished", "finished"]
    loss = [r["summary"]["loss"] for r in shared_runs]
    assert loss == [r["summary"]["loss"] for r in fresh_runs]
    assert loss[0] != loss[1]
    for nb in _notebooks(local, shared):
        marks = [ran for _, _, ran in _code_cells(nb)]
        assert marks == [True] * 8 + [False]  # the install line's cell (commented) too
        assert nb.cells[-1].execution_count == 9


SEEDED = [
    "import random\nimport numpy as np\nimport nbsweep",
    "np.random.seed(7)\nrandom.seed(7)\nnoise = np.random.rand(3)",
    ("x = 0", ["parameters"]),
    "nbsweep.log({'np': float(np.random.rand()), 'py': random.random(), "
    "'noise': float(noise[0]), 'x': x})",
]
UNSEEDED = [
    "import random\nimport numpy as np\nimport nbsweep\nrng = np.random.default_rng()\n"
    "noise = np.random.rand(4)  # drawn once: every trial shares it (said once)",
    ("x = 0", ["parameters"]),
    "nbsweep.log({'np': float(np.random.rand()), 'py': random.random(), "
    "'rng': float(rng.random()), 'x': x})",
]


def test_a_seeded_setup_gives_every_trial_the_seeded_state(local):
    shared, stderr = _run(local, _grid("x", 1, 2), SEEDED, "--no-wandb")
    assert "ran once in the kernel template" in stderr
    draws = [{k: r["summary"][k] for k in ("np", "py", "noise")} for r in _runs(local, shared)]
    # What any fresh process draws after the same seeds.
    np = pytest.importorskip("numpy")
    np.random.seed(7)
    noise = np.random.rand(3)
    expected = {"np": float(np.random.rand()), "py": random.Random(7).random(), "noise": noise[0]}
    assert draws == [expected, expected]


def test_an_unseeded_setup_gives_each_trial_its_own_random_state(local):
    shared, stderr = _run(local, _grid("x", 1, 2, 3), UNSEEDED, "--no-wandb")
    assert "ran once in the kernel template" in stderr
    summaries = [r["summary"] for r in _runs(local, shared)]
    for key in ("np", "py", "rng"):
        assert len({s[key] for s in summaries}) == 3, key
    assert stderr.count("drew from numpy's random generator without seeding it") == 1, stderr


@pytest.mark.parametrize(
    "cell,reason",
    [
        (
            "import threading, time\n"
            "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
            "setup cell 1: it started 1 thread(s)",
        ),
        (
            "import subprocess\nsleeper = subprocess.Popen(['sleep', '30'])",
            "setup cell 1: it started a process that is still running",
        ),
        (
            "import socket\nserver = socket.socket()\n"
            "server.bind(('127.0.0.1', 0))\nserver.listen()",
            "setup cell 1: it holds a socket (tcp listening)",
        ),
        (
            # A run opened out of the notebook's sight (a helper module): the check sees it.
            "import exploring",
            "setup cell 1: a wandb run is open",
        ),
        (
            "checkpoints = os.path.join('ckpt', os.environ.get('WANDB_RUN_ID', 'none'))",
            "setup cell 1: it read WANDB_RUN_ID, which each trial sets to its own value",
        ),
        (
            "import logging\nlogging.basicConfig(filename='prep.log', level=logging.INFO)",
            "setup cell 1: it left a file open (",
        ),
        (
            "nbsweep.log({'rows': 500})",
            "setup cell 1: it logged a metric (nbsweep.log), which belongs to a trial",
        ),
    ],
    ids=[
        "thread",
        "child-process",
        "socket",
        "open-wandb-run",
        "trial-variable",
        "open-file",
        "metric",
    ],
)
def test_an_unforkable_setup_falls_back_and_says_why(local, cell, reason):
    exploring = "import wandb\nrun = wandb.init(project='exploring')\n"
    (local.cwd / "exploring.py").write_text(exploring, encoding="utf-8")
    cells = ["import os\nimport nbsweep", cell, ("x = 0", ["parameters"]), "nbsweep.log({'x': x})"]
    sweep, stderr = _run(local, _grid("x", 1), cells, "--no-wandb")
    assert stderr.count("setup not shared: ") == 1, stderr
    assert f"setup not shared: {reason}" in stderr, stderr
    assert "every trial runs every cell" in stderr
    runs = _runs(local, sweep)
    assert [r["state"] for r in runs] == ["finished"]
    for nb in _notebooks(local, sweep):
        assert not any(ran for _, _, ran in _code_cells(nb))
        assert nb.cells[1].outputs is not None and nb.cells[1].execution_count == 2


def test_a_failing_setup_cell_is_reported_and_trials_fail_as_they_would(local):
    """A command that fails in the setup raises, as in a kernel: the setup's subprocesses
    are its own to wait for (no reaper of the template's takes their exit status)."""
    cells = [
        "import subprocess\nimport nbsweep",
        "subprocess.run(['sh', '-c', 'exit 3'], check=True)",
        ("x = 0", ["parameters"]),
        "nbsweep.log({'x': x})",
    ]
    sweep, stderr = _run(local, _grid("x", 1), cells, "--no-wandb")
    assert "setup not shared: setup cell 1 failed: CalledProcessError: " in stderr, stderr
    (run,) = _runs(local, sweep)
    assert run["state"] == "failed"
    nb = nbformat.read(local.cwd / run["notebook"], as_version=4)
    assert nb.cells[1].outputs[-1]["ename"] == "CalledProcessError"
    assert nb.metadata["nbsweep"]["error"]["source_cell_index"] == 1


def test_what_the_setup_sets_stays_as_in_a_fresh_kernel(local):
    """Variables the setup sets win over the trial's (as in a kernel that ran the setup
    after its start), and a logging handler made in the setup prints into the trial's cell."""
    (local.cwd / "prep_utils.py").write_text("ROWS = 500\n", encoding="utf-8")
    cells = [
        "from prep_utils import ROWS  # the notebook's own module, beside it\n"
        "import logging, os, sys\nimport nbsweep\nos.environ['WANDB_PROJECT'] = 'from-setup'\n"
        "log = logging.getLogger('prep')\nlog.addHandler(logging.StreamHandler(sys.stdout))\n"
        "log.setLevel(logging.INFO)",
        ("x = 0", ["parameters"]),
        "log.info('trial %s logs', x)\n"
        "nbsweep.log({'x': x, 'project': os.environ['WANDB_PROJECT'] == 'from-setup'})",
    ]
    shared, stderr = _run(local, _grid("x", 1), cells, "--no-wandb")
    assert "ran once in the kernel template" in stderr
    assert _runs(local, shared)[0]["summary"] == {"x": 1, "project": True}
    (nb,) = _notebooks(local, shared)
    assert "trial 1 logs" in json.dumps(nb.cells[-1].outputs)


def test_setup_cells_get_the_cell_timeout(local):
    """A shell line runs in a session of its own: the timeout ends it with the template."""
    cells = ["import time", "!sleep 60", ("x = 0", ["parameters"]), "print(x)"]
    sweep, stderr = _run(local, _grid("x", 1), cells, "--no-wandb", "--timeout", "2")
    assert "setup not shared: setup cell 1 ran past --timeout (2 s)" in stderr, stderr
    (run,) = _runs(local, sweep)
    assert run["state"] == "failed" and "timeout" in json.dumps(run).lower()


def test_a_stop_during_the_setup_ends_it_and_leaves_nothing(local):
    flag = local.cwd / "setting-up"
    cells = [
        "import subprocess, time\nhelper = subprocess.Popen(['sleep', '60'])",
        f"open({str(flag)!r}, 'w').close()\ntime.sleep(60)",
        ("x = 0", ["parameters"]),
        "print(x)",
    ]
    sweep = local.sweep(_grid("x", 1), cells)
    agent = local.start("agent", f"local:{sweep}", "--no-wandb")
    wait_for_file(flag, agent)
    started = time.monotonic()
    agent.send_signal(signal.SIGINT)
    agent.communicate(timeout=30)
    assert time.monotonic() - started < 15
    assert agent.returncode == 130
    assert not local.leftovers(), "the setup's template and its child are gone"


EDITS_ITS_SETUP = [
    "import json, os\nimport nbsweep\nSETUP = 1",
    ("x = 0", ["parameters"]),
    # The first trial edits the notebook's setup: later trials see the new setup.
    "if x == 1:\n"
    "    nb = json.load(open('nb.ipynb'))\n"
    "    nb['cells'][0]['source'] = 'import json, os\\nimport nbsweep\\nSETUP = 2'\n"
    "    json.dump(nb, open('nb.ipynb', 'w'))\n"
    "nbsweep.log({'x': x, 'setup': SETUP})",
]


def test_a_changed_setup_gets_a_new_template(local):
    sweep, stderr = _run(local, _grid("x", 1, 2, 3), EDITS_ITS_SETUP, "--no-wandb")
    runs = _runs(local, sweep)
    assert [r["summary"]["setup"] for r in runs] == [1, 2, 2]
    pids = []
    for nb in _notebooks(local, sweep):
        mark = nb.cells[0].metadata.get("nbsweep", {}).get("setup")
        pids.append(mark["template_pid"] if mark else None)
    assert pids[0] is not None and pids[-1] is not None and pids[0] != pids[-1]
    assert stderr.count("ran once in the kernel template") == 2, stderr


def test_no_setup_once_and_the_tag_keep_cells_per_trial(local):
    cells = [
        "import nbsweep\nimport os",
        ("pid = os.getpid()", ["nbsweep-per-trial"]),
        ("x = 0", ["parameters"]),
        "nbsweep.log({'x': x, 'same_kernel': pid == os.getpid()})",
    ]
    sweep, stderr = _run(local, _grid("x", 1, 2), cells, "--no-wandb")
    assert "setup (cell 0) ran once" in stderr, stderr
    assert "starts at cell 1, tagged nbsweep-per-trial" in stderr, stderr
    assert all(r["summary"]["same_kernel"] for r in _runs(local, sweep))
    for nb in _notebooks(local, sweep):
        assert [ran for _, _, ran in _code_cells(nb)] == [True] + [False] * 4
    sweep, stderr = _run(local, _grid("x", 1), cells, "--no-wandb", "--no-setup-once")
    assert "ran once" not in stderr and "setup not shared" not in stderr


def test_the_kernels_of_a_shared_setup_are_forked_after_it(local):
    """One template per agent: every trial's kernel is its child, started after the setup."""
    cells = [
        "import os, time\nimport nbsweep\nSETUP_PID = os.getpid()\nSETUP_AT = time.time()",
        ("x = 0", ["parameters"]),
        "nbsweep.log({'x': x, 'parent': os.getppid(), 'setup_pid': SETUP_PID, "
        "'mine': os.getpid()})",
    ]
    sweep, _ = _run(local, _grid("x", 1, 2), cells, "--no-wandb")
    summaries = [r["summary"] for r in _runs(local, sweep)]
    assert len({s["setup_pid"] for s in summaries}) == 1
    assert all(s["parent"] == s["setup_pid"] != s["mine"] for s in summaries)


def test_the_setup_outputs_read_as_a_kernels_would(local):
    """Streams merge as a kernel's do, results carry the execution count, errors and
    displays keep their shape; what C code writes to the descriptors is kept in order."""
    cells = [
        "import os, sys\nprint('a')\nprint('b', file=sys.stderr)\nprint('c')\n"
        "os.system('echo from-a-shell')\n42",
        "from IPython.display import display, Markdown, clear_output\n"
        "display(Markdown('*one*'))\nclear_output(wait=True)\ndisplay(Markdown('*two*'))",
        "import warnings\nwarnings.warn('careful')\n'done';",
        ("x = 0", ["parameters"]),
        "print(x)",
    ]
    # Kernels leave fds 1 and 2 alone under pytest: not these, which run as a user's would.
    local.env.pop("PYTEST_CURRENT_TEST", None)
    (fresh, _), (shared, _) = _both_ways(local, _grid("x", 1), cells, "--no-wandb")
    (fresh_nb,), (shared_nb,) = _notebooks(local, fresh), _notebooks(local, shared)

    # A kernel reads fd 1 on a thread of its own: the shell's line may join the cell's first
    # stream, follow its result or reach no cell. Compared without it; where the template
    # puts it is checked below.
    def comparable(cell: tuple) -> str:
        count, outputs = cell[:2]
        for output in outputs:
            if output.get("output_type") == "stream":
                output["text"] = output["text"].replace("from-a-shell\n", "")
        kept = [o for o in outputs if o.get("output_type") != "stream" or o["text"]]
        # A warning names its kernel's temporary folder.
        return re.sub(r"ipykernel_\d+", "", json.dumps([count, kept]))

    for fresh_cell, shared_cell in zip(
        _code_cells(fresh_nb)[:3], _code_cells(shared_nb)[:3], strict=True
    ):
        assert comparable(shared_cell) == comparable(fresh_cell)
    assert shared_nb.cells[0].outputs[0]["text"] == "a\nc\nfrom-a-shell\n", shared_nb.cells[0]


KILLS_ITS_TEMPLATE = [
    "import os, signal\nimport nbsweep",
    ("x = 0", ["parameters"]),
    # The template is this kernel's parent; its kernels die with it.
    "if x == 1:\n    os.kill(os.getppid(), signal.SIGKILL)\nnbsweep.log({'x': x})",
]


def test_a_template_that_dies_is_replaced_and_the_setup_runs_again(local):
    sweep, stderr = _run(local, _grid("x", 1, 2, 3), KILLS_ITS_TEMPLATE, "--no-wandb")
    assert re.search(
        r"the kernel template \(pid \d+\) died: starting a new one; the setup runs again", stderr
    ), stderr
    runs = _runs(local, sweep)
    assert runs[-1]["state"] == "finished"
    assert "kernels start as fresh interpreters" not in stderr, "forking goes on"
    last = nbformat.read(local.cwd / runs[-1]["notebook"], as_version=4)
    assert last.cells[0].metadata["nbsweep"]["setup"]["ran_once"]


def test_a_forked_kernel_finds_what_wandbs_first_use_imports_loaded(local):
    """A preload of wandb (W&B's tutorials lead with ``import wandb``) also loads what a
    first ``wandb.init`` imports (``preload.FIRST_USE``), once, in the template."""
    from nbsweep.kernel.preload import FIRST_USE

    names = sorted(FIRST_USE["wandb"])
    probe = f"import sys\nprint(sorted(name for name in {names!r} if name in sys.modules))"
    cells = ["import wandb", ("x = 0", ["parameters"]), probe]
    sweep, stderr = _run(local, _grid("x", 1), cells, "--no-wandb", "--preload", "wandb")
    assert "setup not shared" not in stderr, stderr
    (nb,) = _notebooks(local, sweep)
    assert nb.cells[-1].outputs[0]["text"] == f"{names}\n", stderr


def test_a_setup_that_loads_blas_itself_is_shared(local):
    """Without a preload the setup's own ``import numpy`` starts OpenBLAS's pool; the
    template shuts it down before it forks, as it does for a preloaded one."""
    cells = [
        "import numpy as np\nm = np.ones((200, 200)) @ np.ones((200, 200))",
        ("x = 0", ["parameters"]),
        "print(m[0, 0] + x)",
    ]
    sweep, stderr = _run(local, _grid("x", 1), cells, "--no-wandb", "--preload", "none")
    assert "setup not shared" not in stderr and "ran once" in stderr, stderr
    (nb,) = _notebooks(local, sweep)
    assert nb.cells[-1].outputs[0]["text"] == "201.0\n"
