"""`nbsweep run` end to end: real CLI processes, real ipykernel kernels, the process table."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import click
import nbformat
import psutil
import pytest
from helpers import (
    marked_processes,
    no_kernel_left,
    wait_for_file,
    wait_until,
    wait_until_gone,
    write_notebook,
)


@pytest.fixture(scope="module", autouse=True)
def no_kernel_is_left_by_the_whole_module():
    """Every kernel this module starts in-process must be gone at its end: checked in the
    process table by a mark of the module's own, not by their parent (CLI runs are checked
    by their own mark, ``CliRun.finish``)."""
    with no_kernel_left():
        yield


pytestmark = pytest.mark.kernel


def saved(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def stdout_of(nb, index):
    return "".join(o.get("text", "") for o in nb.cells[index].outputs if o.output_type == "stream")


def test_success_with_metrics(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "nbs" / "train.ipynb",
        [
            "import nbsweep",
            ("lr = 0.001\nepochs = 3", ["parameters"]),
            "for epoch in range(epochs):\n    nbsweep.log({'loss': lr * epoch, 'epoch': epoch})\n"
            "final = {'acc': 0.5}\nval_acc = 0.25 + lr",
        ],
    )
    result = cli(
        "run",
        nb,
        "--lr=0.5",
        "--epochs",
        "2",
        "--metric",
        "val_acc",
        "--metrics-json",
        "new/m.json",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "loss\t0.5\nepoch\t1\nval_acc\t0.75\n"
    assert "step 1: loss=0.5, epoch=1" in result.stderr
    metrics = json.loads((tmp_path / "new" / "m.json").read_text())
    assert metrics["history"] == [
        {"step": 0, "loss": 0.0, "epoch": 0},
        {"step": 1, "loss": 0.5, "epoch": 1},
    ]
    assert metrics["summary"] == {"loss": 0.5, "epoch": 1, "val_acc": 0.75}
    outputs = list((tmp_path / "nbsweep-runs" / "train").glob("*/train.ipynb"))
    assert len(outputs) == 1, "executed notebook goes under nbsweep-runs/ in the cwd"
    executed = saved(outputs[0])
    assert executed.metadata.nbsweep["status"] == "finished"
    assert executed.cells[2].metadata.tags == ["injected-parameters"]
    assert not list(nb.parent.glob("*.nbconvert.ipynb")) and len(list(nb.parent.iterdir())) == 1


def test_two_runs_never_share_an_output(cli, tmp_path):
    nb = write_notebook(tmp_path / "a.ipynb", ["x = 1"])
    first, second = cli.start("run", nb), cli.start("run", nb)
    assert first.wait(60) == 0 and second.wait(60) == 0
    first.communicate(), second.communicate()
    assert len(list((tmp_path / "nbsweep-runs" / "a").glob("*/a.ipynb"))) == 2


def test_failing_cell_reports_and_keeps_the_partial_notebook(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "fail.ipynb",
        [
            "# md: intro",
            ("n = 1", ["parameters"]),
            "print('before')",
            "def inner():\n    raise ValueError(f'bad value {n}')\ninner()",
            "print('never')",
        ],
    )
    result = cli("run", nb, "-p", "n", "7", "-o", "out/fail.ipynb")
    assert result.returncode == 1
    assert "cell 3 failed: ValueError: bad value 7" in result.stderr
    assert "raise ValueError" in result.stderr, "the end of the traceback is shown"
    assert "notebook saved: out/fail.ipynb" in result.stderr
    assert "Traceback (most recent call last)" not in result.stderr.split("Error:")[0]
    executed = saved(tmp_path / "out" / "fail.ipynb")
    assert stdout_of(executed, 3) == "before\n"
    assert executed.cells[4].outputs[0].ename == "ValueError"
    assert executed.cells[5].execution_count is None
    assert executed.metadata.nbsweep["error"] == {
        "cell_index": 4,
        "source_cell_index": 3,
        "ename": "ValueError",
        "evalue": "bad value 7",
    }


@pytest.mark.parametrize(
    "source,code",
    [
        ("import sys\nsys.exit(0)", 0),
        ("import sys\nsys.exit()", 0),
        ("raise SystemExit", 0),
        ("raise SystemExit(0)", 0),
        ("import sys\nsys.exit(1)", 1),
        ("import sys\nsys.exit('no')", 1),
    ],
)
def test_sys_exit(cli, tmp_path, source, code):
    nb = write_notebook(tmp_path / "exit.ipynb", ["print('one')", source, "print('never')"])
    result = cli("run", nb, "-o", "out.ipynb")
    assert result.returncode == code, result.stderr
    executed = saved(tmp_path / "out.ipynb")
    assert executed.cells[2].execution_count is None
    if code:
        assert "cell 1 failed: SystemExit" in result.stderr


def test_raises_exception_tag_is_allowed_and_execution_goes_on(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "r.ipynb",
        [(("raise KeyError('expected')"), ["raises-exception"]), "print('after')"],
    )
    result = cli("run", nb, "-o", "out.ipynb")
    assert result.returncode == 0, result.stderr
    assert stdout_of(saved(tmp_path / "out.ipynb"), 1) == "after\n"


def test_error_only_in_the_execute_reply_is_a_failure(cli, tmp_path):
    nb = write_notebook(tmp_path / "m.ipynb", ["%this-magic-does-not-exist", "print('never')"])
    result = cli("run", nb, "-o", "out.ipynb")
    assert result.returncode == 1
    assert "cell 0 failed: UsageError" in result.stderr
    assert saved(tmp_path / "out.ipynb").cells[1].execution_count is None


@pytest.mark.parametrize(
    "death",
    [
        "import os\nos._exit(3)",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        "import ctypes\nctypes.string_at(0)",
    ],
    ids=["os._exit", "sigkill", "segfault"],
)
def test_dead_kernel_is_detected_within_seconds(cli, tmp_path, death):
    nb = write_notebook(tmp_path / "die.ipynb", ["print('alive')", death, "print('never')"])
    started = time.monotonic()
    result = cli("run", nb, "-o", "out.ipynb")
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert "cell 1 failed: DeadKernelError" in result.stderr
    executed = saved(tmp_path / "out.ipynb")
    assert executed.metadata.nbsweep["reason"] == "kernel-died"
    assert stdout_of(executed, 0) == "alive\n"


def test_input_fails_at_once(cli, tmp_path):
    nb = write_notebook(tmp_path / "ask.ipynb", ["name = input('name? ')"])
    result = cli("run", nb, "-o", "out.ipynb", timeout=30)
    assert result.returncode == 1
    assert "StdinNotImplementedError" in result.stderr
    assert "make the value a parameter" in result.stderr


@pytest.mark.parametrize(
    "options,reason",
    [
        (["--timeout", "1"], "cell-timeout"),
        (["--trial-timeout", "2"], "trial-timeout"),
    ],
)
def test_timeouts_interrupt_the_cell(cli, tmp_path, options, reason):
    nb = write_notebook(
        tmp_path / "slow.ipynb",
        [
            "print('quick')",
            "import time\nfor i in range(600):\n    time.sleep(0.1)",
            "print('never')",
        ],
    )
    started = time.monotonic()
    result = cli("run", nb, "-o", "out.ipynb", *options)
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    executed = saved(tmp_path / "out.ipynb")
    assert executed.metadata.nbsweep["reason"] == reason
    assert executed.cells[1].outputs[-1].ename == "KeyboardInterrupt"
    assert executed.cells[2].execution_count is None


def test_a_cell_that_ignores_the_interrupt_is_killed_after_the_grace(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "stubborn.ipynb",
        [
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('ignoring')\n"
            "time.sleep(120)"
        ],
    )
    started = time.monotonic()
    result = cli("run", nb, "-o", "out.ipynb", "--timeout", "1", "--stop-grace", "1")
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    executed = saved(tmp_path / "out.ipynb")
    assert executed.metadata.nbsweep["reason"] == "cell-timeout"
    assert "ignoring" in stdout_of(executed, 0)


def test_environment_and_working_directory(cli, tmp_path):
    folder = tmp_path / "project"
    nb = write_notebook(
        folder / "env.ipynb",
        [
            "import os, json\nprint(json.dumps({'cwd': os.getcwd(), 'cuda': os.environ.get("
            "'CUDA_VISIBLE_DEVICES'), 'run': os.environ.get('WANDB_RUN_ID')}))"
        ],
    )
    env = {"CUDA_VISIBLE_DEVICES": "3", "WANDB_RUN_ID": "abc123"}
    result = cli("run", nb, "-o", "out1.ipynb", **env)
    assert result.returncode == 0, result.stderr
    seen = json.loads(stdout_of(saved(tmp_path / "out1.ipynb"), 0))
    assert seen == {"cwd": str(folder), "cuda": "3", "run": "abc123"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli("run", nb, "-o", "out2.ipynb", "--cwd", elsewhere)
    assert json.loads(stdout_of(saved(tmp_path / "out2.ipynb"), 0))["cwd"] == str(elsewhere)


def test_config_dict_notebook(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "blog.ipynb",
        [
            "config = dict(lr=0.001, opt=dict(name='adam', beta1=0.9))\n"
            "beta = config['opt']['beta1']",
            "print(beta, config['opt']['name'], config['lr'])",
        ],
    )
    result = cli("run", nb, "-o", "out.ipynb", "--opt.beta1=0.5", "--lr=1")
    assert result.returncode == 0, result.stderr
    assert stdout_of(saved(tmp_path / "out.ipynb"), 3) == "0.5 adam 1.0\n"


def test_execution_option_names_do_not_block_parameters(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "o.ipynb",
        [("output = 'x'\ntimeout = 1", ["parameters"]), "print(output, timeout)"],
    )
    result = cli(
        "run", nb, "-p", "output", "'y'", "--args-json", '{"timeout": 5}', "-o", "out.ipynb"
    )
    assert result.returncode == 0, result.stderr
    assert stdout_of(saved(tmp_path / "out.ipynb"), 2) == "y 5\n"


def test_secrets_never_reach_the_notebook_or_the_terminal(cli, tmp_path):
    secret = "a" * 20 + "SECRETKEY" + "b" * 11
    nb = write_notebook(
        tmp_path / "s.ipynb",
        [
            "import os\nprint(os.environ['WANDB_API_KEY'])",
            "raise RuntimeError(os.environ['MY_TOKEN'])",
        ],
    )
    result = cli(
        "run",
        nb,
        "-o",
        "out.ipynb",
        "--log-output",
        "--html",
        WANDB_API_KEY=secret,
        MY_TOKEN="tok-" + secret,
    )
    assert result.returncode == 1
    assert secret not in result.stdout + result.stderr
    assert "***" in result.stdout
    for path in tmp_path.glob("out.*"):
        assert secret not in path.read_text(), path


def test_html_and_log_output(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "h.ipynb",
        ["print('to stdout')", "import sys\nprint('to stderr', file=sys.stderr)"],
    )
    result = cli("run", nb, "-o", "out.ipynb", "--html", "--log-output")
    assert result.returncode == 0, result.stderr
    assert "to stdout" in result.stdout and "to stderr" in result.stderr
    assert "cell 1 started (2/2)" in result.stderr
    assert "to stdout" in (tmp_path / "out.html").read_text()


def test_kernel_children_are_cleaned_up(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "spawn.ipynb",
        [
            "import subprocess\nchild = subprocess.Popen(['sleep', '300'])\n"
            "orphan = subprocess.Popen(['sleep', '301'], start_new_session=True)\nprint(child.pid)"
        ],
    )
    result = cli("run", nb, "-o", "out.ipynb")
    assert result.returncode == 0, result.stderr
    assert not cli.leftovers(), "the kernel, its child and its detached child are all gone"


def _wait_for_output(process, path: Path, needle: str, timeout: float = 30) -> None:
    def printed() -> bool:
        return any(needle in (p.cmdline() or [""])[-1] for p in marked_processes(path.name))

    wait_until(printed, timeout, interval=0.1, what=repr(needle), alive=[process])


def _start_long_trial(cli, tmp_path):
    flag = tmp_path / "started.flag"
    nb = write_notebook(
        tmp_path / "long.ipynb",
        [
            f"import time, pathlib\nprint('working')\npathlib.Path({str(flag)!r}).touch()\n"
            "for i in range(1200):\n    time.sleep(0.1)",
            "print('never')",
        ],
    )
    process = cli.start("run", nb, "-o", "out.ipynb", "--stop-grace", "3")
    wait_for_file(flag, process)
    return process


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_the_trial_and_save_it(cli, tmp_path, signum, code):
    process = _start_long_trial(cli, tmp_path)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code, stderr
    assert "partial notebook saved: out.ipynb" in stderr
    executed = saved(tmp_path / "out.ipynb")
    assert executed.metadata.nbsweep["status"] == "stopped"
    assert stdout_of(executed, 0) == "working\n"
    assert executed.cells[1].execution_count is None


def test_second_signal_kills_at_once(cli, tmp_path):
    nb_flag = tmp_path / "started.flag"
    nb = write_notebook(
        tmp_path / "stubborn.ipynb",
        [
            f"import signal, time, pathlib\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            f"pathlib.Path({str(nb_flag)!r}).touch()\ntime.sleep(300)"
        ],
    )
    process = cli.start("run", nb, "-o", "out.ipynb", "--stop-grace", "120")
    wait_for_file(nb_flag, process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)  # scenario: a second Ctrl-C, apart from the first
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - started < 10
    assert process.returncode == 130
    assert "Task was destroyed but it is pending" not in stderr, stderr


def test_sigkill_of_nbsweep_takes_the_kernel_with_it(tmp_path):
    from helpers import CliRun

    runner = CliRun(tmp_path)
    process = _start_long_trial(runner, tmp_path)
    kernels = [p for p in marked_processes(runner.marker) if p.pid != process.pid]
    assert kernels, "the kernel is running"
    process.kill()
    process.communicate()
    assert not wait_until_gone(runner.marker, timeout=5)


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.ipynb"], "cannot read notebook 'missing.ipynb'"),
        (["bad.ipynb"], "'bad.ipynb' is not a valid notebook"),
        (["good.ipynb", "--lrr=1"], "unknown parameter 'lrr' (did you mean 'lr'?)"),
        (["good.ipynb", "--kernel", "no-such-kernel"], "no Jupyter kernel named 'no-such-kernel'"),
        (["good.ipynb", "-o", "/proc/nope/out.ipynb"], "cannot write to output folder"),
        (["good.ipynb", "--l-r=1"], "'l-r' is not a parameter name"),
        (["notes.txt"], "is not a notebook"),
        (["good.ipynb", "--metric", "a.b"], "--metric 'a.b' is not a variable name"),
        (["good.ipynb", "--timeout", "-1"], "Invalid value for '--timeout'"),
        (["badspec.ipynb"], "'badspec.ipynb' is not a valid notebook: metadata.kernelspec"),
        (["badtags.ipynb"], "'badtags.ipynb' is not a valid notebook: cell 0 has bad metadata"),
        (["badcell.ipynb"], "'badcell.ipynb' is not a valid notebook"),
    ],
)
def test_usage_errors_are_one_line_exit_2(cli, tmp_path, args, message):
    write_notebook(tmp_path / "good.ipynb", [("lr = 0.1", ["parameters"])])
    (tmp_path / "bad.ipynb").write_text("{not json")
    # Notebooks nbformat's reader takes but nbsweep cannot use: one line each, no traceback.
    cell = {"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": []}
    broken = {
        "badspec.ipynb": {"metadata": {"kernelspec": "python3"}, "cells": [cell]},
        "badtags.ipynb": {"metadata": {}, "cells": [{**cell, "metadata": {"tags": "x"}}]},
        "badcell.ipynb": {"metadata": {}, "cells": ["abc"]},
    }
    for name, body in broken.items():
        notebook = {"nbformat": 4, "nbformat_minor": 5, **body}
        (tmp_path / name).write_text(json.dumps(notebook))
    (tmp_path / "notes.txt").write_text("x")
    result = cli("run", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if "Error" in line] == [
        line for line in result.stderr.splitlines() if line.startswith("Error: ")
    ]
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error: ")]) == 1
    assert not list(tmp_path.glob("nbsweep-runs/**/*.ipynb")), "nothing ran, nothing is saved"


def test_help_documents_every_command(cli):
    from nbsweep.cli.main import cli as group

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert cli("--help").returncode == 0
    for name, command in group.commands.items():
        assert command.help, f"nbsweep {name} has no help text"
        options = [p for p in command.params if isinstance(p, click.Option)]
        undocumented = [o.name for o in options if not o.help]
        assert not undocumented, f"nbsweep {name}: options without help: {undocumented}"
        assert f"nbsweep {name}" in readme, f"the README does not show nbsweep {name}"
        assert cli(name, "--help").returncode == 0


def test_a_kernel_started_before_its_trial_is_known(tmp_path):
    """The executor's warm-kernel path: start first, learn the trial (and its env) later."""
    import asyncio

    from nbsweep.kernel.process import Kernel
    from nbsweep.trial.reporting import Reporter
    from nbsweep.trial.run import run_trial_async
    from nbsweep.trial.spec import TrialSpec

    nb = write_notebook(
        tmp_path / "w.ipynb",
        [
            ("lr = 0.1", ["parameters"]),
            "import os, nbsweep\nnbsweep.log({'lr': lr, 'run': int(os.environ['WANDB_RUN_ID'])})",
        ],
    )

    async def main():
        kernel = Kernel()
        await kernel.start(tmp_path, dict(os.environ))
        spec = TrialSpec(
            nb, [("lr", 0.5)], output=tmp_path / "out.ipynb", env={"WANDB_RUN_ID": "42"}
        )
        return await run_trial_async(spec, Reporter(tty=False), kernel=kernel), kernel

    result, kernel = asyncio.run(main())
    assert result.status == "finished", result.failure
    assert result.metrics.summary() == {"lr": 0.5, "run": 42}
    assert not psutil.pid_exists(kernel.pid) or psutil.Process(kernel.pid).status() == "zombie"


@pytest.mark.e2e
def test_values_and_folders_under_wandb_agent(cli, tmp_path):
    nb = write_notebook(
        tmp_path / "nb.ipynb",
        [("lr = 0.1\nname = 'x'\nflag = False", ["parameters"]), "print(repr((lr, name, flag)))"],
    )
    param_file = tmp_path / "wandb" / "sweep-sw1" / "config-run1.yaml"
    param_file.parent.mkdir(parents=True)
    param_file.write_text(
        "wandb_version: 1\nlr:\n  value: 0.5\nname:\n  value: 'None'\nflag:\n  value: true\n"
    )
    from wandb_server import WandbTestServer, wandb_env

    with WandbTestServer() as server:
        env = wandb_env(
            server,
            tmp_path,
            WANDB_SWEEP_PARAM_PATH=str(param_file),
            WANDB_SWEEP_ID="sw1",
            WANDB_RUN_ID="run1",
        )
        result = cli("run", nb, "--lr=0.5", "--name=None", "--flag=True", **env)
    assert result.returncode == 0, result.stderr
    executed = saved(tmp_path / "nbsweep-runs" / "sw1" / "run1" / "nb.ipynb")
    assert stdout_of(executed, 2) == "(0.5, 'None', True)\n"
    assert server.runs["run1"].user_config == {"lr": 0.5, "name": "None", "flag": True}


def test_an_unreachable_wandb_costs_the_trial_nothing(cli, tmp_path):
    import socket

    from wandb_server import DUMMY_API_KEY

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nb = write_notebook(tmp_path / "nb.ipynb", ["import nbsweep\nnbsweep.log({'x': 1})"])
    result = cli(
        "run",
        nb,
        "-o",
        "out.ipynb",
        WANDB_SWEEP_ID="sw1",
        WANDB_RUN_ID="run1",
        WANDB_BASE_URL=f"http://127.0.0.1:{port}",
        WANDB_API_KEY=DUMMY_API_KEY,
        WANDB_INIT_TIMEOUT="3",
        WANDB__GRAPHQL_RETRY_MAX="1",
        WANDB__GRAPHQL_RETRY_WAIT_MAX_SECONDS="1",
        WANDB_SILENT="true",
        WANDB_DIR=str(tmp_path),
        HOME=str(tmp_path),
        WANDB__DISABLE_STATS="true",
        WANDB_ERROR_REPORTING="false",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "cannot open the W&B run" in result.stderr
    assert "the trial runs unreported" in result.stderr
    assert result.stdout == "x\t1\n"
    assert saved(tmp_path / "out.ipynb").metadata.nbsweep["status"] == "finished"


def test_a_kernel_that_dies_at_start_is_reported_at_once(cli, tmp_path):
    spec = tmp_path / "jupyter" / "kernels" / "broken"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", "import sys; print('no luck'); sys.exit(3)"],
                "display_name": "broken",
                "language": "python",
            }
        )
    )
    nb = write_notebook(tmp_path / "nb.ipynb", ["x = 1"])
    started = time.monotonic()
    result = cli("run", nb, "--kernel", "broken", JUPYTER_PATH=str(tmp_path / "jupyter"))
    assert time.monotonic() - started < 15
    assert result.returncode == 2
    assert "kernel 'broken' did not start (it exited); it last wrote: no luck" in result.stderr
