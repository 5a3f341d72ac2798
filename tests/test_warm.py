"""Warm kernels, preloading and the fast ways in and out of a kernel: real kernels, real
local sweeps, processes checked in the process table."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import make_notebook, marked_processes, wait_for_file, wait_until, write_notebook

from nbsweep.errors import UsageError
from nbsweep.kernel.fork import TEMPLATE_NAME
from nbsweep.kernel.preload import Preload, leading_imports
from nbsweep.kernel.process import Kernel

ROOT = Path(__file__).parent.parent


def cells(*sources: str):
    return make_notebook(list(sources))


@pytest.mark.parametrize(
    "sources,expected",
    [
        (
            ["import json\nimport os.path as p\nfrom email import message"],
            ("json", "os.path", "email", "email.message"),
        ),
        (["import json", "x = 1\nimport csv"], ("json",)),
        (["import json\nx = 1\nimport csv"], ("json",)),
        (['"""Docs."""\nfrom __future__ import annotations\nimport json'], ("json",)),
        (["from . import sibling\nimport json"], ("json",)),
        (["%matplotlib inline\nimport json"], ()),
        (["!pip install thing", "import thing"], ()),
        (["from json import *"], ("json",)),
        (["x = 1", "import json"], ()),
        ([], ()),
    ],
)
def test_leading_imports(tmp_path, sources, expected):
    assert leading_imports(cells(*sources), tmp_path) == expected


def test_leading_imports_leave_out_the_users_own_modules(tmp_path):
    (tmp_path / "helpers.py").write_text("")
    (tmp_path / "package").mkdir()
    nb = cells("import helpers\nimport package.sub\nimport json")
    assert leading_imports(nb, tmp_path) == ("json",)


def test_a_folder_python_would_not_import_from_is_not_the_users_module(tmp_path):
    """wandb's offline runs go to ``wandb/`` beside the notebook (``make demo`` leaves one in
    the checkout): a folder without ``__init__.py`` is a namespace portion, which Python
    passes over for the installed wandb, so it is still preloaded."""
    (tmp_path / "wandb" / "offline-run-20261206_000000-abc").mkdir(parents=True)
    (tmp_path / "regular").mkdir()
    (tmp_path / "regular" / "__init__.py").write_text("")
    nb = cells("import wandb\nimport regular\nimport json")
    assert leading_imports(nb, tmp_path) == ("wandb", "json")


def test_preload_option():
    assert Preload.parse("auto") == Preload("auto")
    assert Preload.parse("NONE", cuda=True) == Preload("none", (), True)
    assert Preload.parse("numpy, torch.nn") == Preload("explicit", ("numpy", "torch.nn"))
    for bad in ("", "num-py", "os;rm", "a,,1b"):
        with pytest.raises(UsageError, match=r"--preload .* is not a module name"):
            Preload.parse(bad)
    nb = cells("import json")
    assert Preload.parse("none").modules_for(nb, Path()) == ()
    assert Preload.parse("csv").modules_for(nb, Path()) == ("csv",)
    assert Preload.parse("none").code(()) is None


def test_install_lines_a_trial_skips_do_not_stop_the_preload():
    nb = cells("!pip install wandb -Uq", "import wandb\nwandb.login()")
    auto = Preload.parse("auto")
    assert auto.modules_for(nb, Path()) == ("wandb",)
    assert auto.modules_for(nb, Path(), installs_run=True) == ()
    assert nb.cells[0].source == "!pip install wandb -Uq", "the agent's notebook is not changed"


def run_async(coroutine):
    return asyncio.run(coroutine)


@pytest.mark.kernel
def test_preload_code_loads_modules_and_binds_no_names(tmp_path):
    async def check() -> dict:
        kernel = Kernel()
        try:
            await kernel.start(tmp_path, dict(os.environ))
            assert kernel.info is not None
            assert kernel.info["language_info"]["name"] == "python"
            code = Preload("explicit", ("colorsys", "no_such_module_at_all")).code(
                ("colorsys", "no_such_module_at_all")
            )
            assert await kernel.execute_silently(code, 30)
            reply = await kernel.client.execute_interactive(
                "",
                silent=True,
                user_expressions={
                    "loaded": "'colorsys' in __import__('sys').modules",
                    "bound": "[n for n in ('colorsys', 'importlib', 'name') if n in dir()]",
                },
                timeout=30,
            )
            return {
                k: v["data"]["text/plain"] for k, v in reply["content"]["user_expressions"].items()
            }
        finally:
            await kernel.stop()

    assert run_async(check()) == {"loaded": "True", "bound": "[]"}


@pytest.mark.kernel
def test_a_finished_kernel_is_killed_only_where_that_loses_nothing(tmp_path):
    """A kill replaces a polite exit only while the kernel has nothing more to do at exit
    than a fresh kernel; with exit handlers or threads but no file open for writing, the
    polite exit skips the interpreter's teardown; an open file gets the whole of it."""
    plans = {
        "x = [1, 2, 3]\nimport json": "kill",
        "import atexit; atexit.register(print, 'bye')": "polite, no teardown",
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=False).start()": (
            "polite, no teardown"
        ),
        f"f = open({str(tmp_path / 'out.txt')!r}, 'w')": "polite",
    }

    async def plan(code: str | None) -> str:
        kernel = Kernel()
        try:
            await kernel.start(tmp_path, dict(os.environ))
            if code:
                assert await kernel.execute_silently(code, 30)
            return (await kernel.exit_plan()).value
        finally:
            await kernel.stop(graceful=False)

    assert run_async(plan(None)) == "kill"
    for code, expected in plans.items():
        assert run_async(plan(code)) == expected, code


@pytest.mark.kernel
@pytest.mark.parametrize("unclosed_file", [False, True], ids=["no-teardown", "and-a-file"])
def test_exit_work_of_a_finished_notebook_is_done(cli, tmp_path, unclosed_file):
    """What a polite exit does (exit handlers, a thread's work, flushing an unclosed file)
    still happens, whichever way the kernel is stopped."""
    cells = [
        "import atexit\natexit.register(lambda: open('atexit.txt', 'w').write('ran'))",
        "import threading, time, pathlib\n"
        "def later():\n    time.sleep(0.5)\n    pathlib.Path('thread.txt').write_text('done')\n"
        "threading.Thread(target=later).start()",
    ]
    if unclosed_file:
        cells.append("log = open('unclosed.txt', 'w')\nlog.write('x' * 100)")
    write_notebook(tmp_path / "nb.ipynb", cells)
    result = cli("run", "nb.ipynb")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert (tmp_path / "thread.txt").read_text() == "done"
    if unclosed_file:
        assert (tmp_path / "unclosed.txt").read_text() == "x" * 100


# --- warm kernels in the agent (local sweeps) ---------------------------------------------

STAMP_MODULE = "import os\nRUN_AT_IMPORT = os.environ.get('WANDB_RUN_ID')\n"

WARM = [
    "import stamp_mod",
    ("x = 0", ["parameters"]),
    "import os, sys, nbsweep\n"
    "nbsweep.log({'score': x, 'pid': os.getpid(),\n"
    "             'preloaded': stamp_mod.RUN_AT_IMPORT is None,\n"
    "             'colorsys_loaded': 'colorsys' in sys.modules,\n"
    "             'colorsys_bound': 'colorsys' in globals()})",
]


@pytest.fixture
def warm_sweep(local, tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "stamp_mod.py").write_text(STAMP_MODULE)
    local.env["PYTHONPATH"] = str(tmp_path / "lib")

    def new_sweep() -> str:
        return local.sweep("method: grid\nparameters:\n  x: {values: [0, 1, 2, 3]}\n", WARM)

    return new_sweep


def summaries(local, sweep_id: str) -> list[dict]:
    runs = local.status(sweep_id)["runs"]
    assert [run["state"] for run in runs] == ["finished"] * 4, runs
    return [run["summary"] for run in runs]


@pytest.mark.kernel
@pytest.mark.parametrize(
    "options,preloaded,colorsys",
    [
        ((), True, False),
        (("--preload", "colorsys"), False, True),
        (("--preload", "none"), False, False),
        (("--no-warm-kernels",), False, False),
    ],
    ids=["auto", "explicit", "none", "cold"],
)
def test_each_trial_gets_a_fresh_kernel_preloaded_as_asked(
    local, warm_sweep, options, preloaded, colorsys
):
    sweep_id = warm_sweep()
    result = local("agent", f"local:{sweep_id}", "--no-wandb", *options)
    assert result.returncode == 0, result.stderr[-3000:]
    found = summaries(local, sweep_id)
    assert len({summary["pid"] for summary in found}) == 4, "one kernel per trial"
    assert [summary["preloaded"] for summary in found] == [preloaded] * 4
    assert [summary["colorsys_loaded"] for summary in found] == [colorsys] * 4
    assert not any(summary["colorsys_bound"] for summary in found), "preloads bind no names"


SLOW = [("seconds = 60", ["parameters"]), "import time\ntime.sleep(seconds)"]


def wait_for_kernels(local, agent: subprocess.Popen, count: int) -> None:
    def is_kernel(process: psutil.Process) -> bool:
        # Not the agent, nor the template that forks kernels; one that has just ended
        # (a kernel of the agent's start-up) is none.
        try:
            return process.pid != agent.pid and process.name() != TEMPLATE_NAME
        except psutil.Error:
            return False

    def kernels() -> list:
        return [p for p in marked_processes(local.marker) if is_kernel(p)]

    wait_until(lambda: len(kernels()) >= count, what="the warm kernel", alive=[agent])


@pytest.mark.kernel
@pytest.mark.parametrize(
    "signals",
    [(signal.SIGTERM,), (signal.SIGINT, signal.SIGINT), (signal.SIGKILL,)],
    ids=["sigterm", "ctrl-c-twice", "sigkill"],
)
def test_the_idle_warm_kernel_goes_with_the_agent(local, signals):
    sweep_id = local.sweep("method: grid\nparameters:\n  seconds: {values: [60, 60]}\n", SLOW)
    agent = local.start("agent", f"local:{sweep_id}", "--no-wandb")
    wait_for_kernels(local, agent, 2)  # the trial's kernel and the next trial's
    for signum in signals:
        agent.send_signal(signum)
        time.sleep(0.3)  # scenario: signals apart, as a person sends them
    agent.communicate(timeout=60)
    assert not local.leftovers(timeout=10), "no kernel survives the agent"
    if signals[0] != signal.SIGKILL:
        assert agent.returncode != 0
        states = [run["state"] for run in local.status(sweep_id)["runs"]]
        assert states == ["stopped"], states


def test_the_cli_imports_nothing_heavy():
    """`nbsweep --help` stays fast: kernels, notebooks and W&B load only when used."""
    code = (
        "import sys, nbsweep.cli.main\n"
        "heavy = ('wandb', 'nbclient', 'nbformat', 'jupyter_client', 'zmq', 'requests',\n"
        "         'nbconvert', 'sweeps', 'numpy', 'matplotlib')\n"
        "print(sorted(name for name in heavy if name in sys.modules))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[]"


@pytest.mark.kernel
def test_a_signal_while_the_next_kernel_preloads_ends_the_agent(local, tmp_path):
    """A long preload (a slow import) does not hold the agent: a signal ends the wait, no
    trial is taken, and the half-warm kernel goes too."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "slow_mod.py").write_text(
        "import pathlib, time\npathlib.Path('importing.flag').touch()\ntime.sleep(60)\n"
    )
    local.env["PYTHONPATH"] = str(tmp_path / "lib")
    sweep_id = local.sweep(
        "method: grid\nparameters:\n  x: {values: [1, 2]}\n",
        ["import slow_mod", ("x = 0", ["parameters"]), "print(x)"],
    )
    agent = local.start("agent", f"local:{sweep_id}", "--no-wandb")
    wait_for_file(tmp_path / "importing.flag", agent)
    started = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    agent.communicate(timeout=30)
    assert time.monotonic() - started < 10, "the agent did not wait for the preload"
    assert not local.leftovers(timeout=10)
    assert local.status(sweep_id)["runs"] == [], "no trial was handed out"


@pytest.mark.kernel
def test_a_notebook_removed_mid_sweep_is_a_one_line_error(local, tmp_path):
    sweep_id = local.sweep(
        "method: grid\nparameters:\n  x: {values: [1, 2]}\n",
        [("x = 0", ["parameters"]), "import os\nos.remove('nb.ipynb')"],
    )
    result = local("agent", f"local:{sweep_id}", "--no-wandb")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot read notebook 'nb.ipynb'" in result.stderr
