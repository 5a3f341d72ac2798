"""Nothing a notebook starts outlives its trial: daemons that detach themselves (setsid, a
double fork, a detach some time after their cell returned, a detached holder of the kernel's
stdout) are found through nbsweep being their subreaper, killed and reaped. Checked in the
process table, after `nbsweep run`, after each agent trial, and after SIGTERM of the agent."""

from __future__ import annotations

import contextlib
import signal
import uuid

import psutil
import pytest
from helpers import wait_for_file, wait_until, write_notebook

pytestmark = pytest.mark.kernel

ESCAPES = [
    ("trial = 0", ["parameters"]),
    "import os, subprocess, sys, time, pathlib",
    # A daemon in a session of its own.
    "subprocess.Popen(['sleep', '777'], start_new_session=True)",
    # A double fork whose intermediate exits at once: its child is an orphan immediately.
    "pid = os.fork()\nif pid == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
    "        os.execvp('sleep', ['sleep', '778'])\n    os._exit(0)\nos.waitpid(pid, 0)",
    # A detached holder of the kernel's own stdout, through a shell that exits.
    "subprocess.Popen('setsid sleep 779 &', shell=True).wait()",
    # Detaches itself a second after its cell returned.
    "subprocess.Popen([sys.executable, '-c', 'import os, time\\ntime.sleep(1)\\n"
    'if os.fork() == 0:\\n    os.setsid()\\n    os.execvp("sleep", ["sleep", "780"])\\n\'])',
    "pathlib.Path(f'daemons-{trial}.flag').touch()\ntime.sleep(2.5)",
]


def test_nbsweep_run_leaves_no_daemon(cli, tmp_path):
    write_notebook(tmp_path / "escape.ipynb", ESCAPES)
    result = cli("run", "escape.ipynb", "-o", "out.ipynb")
    assert result.returncode == 0, result.stderr
    assert not cli.leftovers(timeout=3), [p.cmdline() for p in cli.leftovers(0)]


def test_a_killed_kernel_takes_its_unmarked_daemon_with_it(cli, tmp_path):
    """A child in a session of its own, its environment (and so nbsweep's mark) dropped, is
    found only in the kernel's tree while the kernel lives: the kill of a cell that ignores
    the interrupt must read that tree first."""
    seconds = f"1000.{uuid.uuid4().int % 10**9}"  # this test's own sleep, found by its argument
    write_notebook(
        tmp_path / "nb.ipynb",
        [
            "import signal, subprocess, time",
            f"subprocess.Popen(['sleep', '{seconds}'], start_new_session=True, env={{}})\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)",
        ],
    )
    result = cli("run", "nb.ipynb", "-o", "out.ipynb", "--timeout", "2", "--stop-grace", "0.5")
    assert result.returncode == 1, result.stderr
    left = []
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] == ["sleep", seconds]:
            left.append(process)
            process.kill()
    assert not left, "the daemon outlived the killed kernel"


def _local_sweep(local, tmp_path, trials: int) -> str:
    write_notebook(tmp_path / "escape.ipynb", ESCAPES)
    values = list(range(trials))
    (tmp_path / "s.yaml").write_text(
        f"program: escape.ipynb\nmethod: grid\nparameters:\n  trial: {{values: {values}}}\n"
    )
    created = local("sweep", "--local", "s.yaml")
    assert created.returncode == 0, created.stderr
    return created.stdout.split()[3]


def _is_sleep(process: psutil.Process) -> bool:
    try:
        return process.name() == "sleep"
    except psutil.Error:  # ended since it was listed
        return False


def _late_detacher(local) -> bool:
    """The trial's last escape has forked and exec'd its ``sleep 780``."""
    with contextlib.suppress(psutil.Error):
        return any(p.cmdline() == ["sleep", "780"] for p in local.leftovers(0))
    return False


def test_each_agent_trial_leaves_no_daemon(local, tmp_path):
    sweep = _local_sweep(local, tmp_path, 2)
    process = local.start("agent", f"local:{sweep}", "--no-wandb")
    wait_for_file(tmp_path / "daemons-1.flag", process, timeout=120)
    # The second trial runs: the first trial's daemons must be gone already.
    sleepers = [p for p in local.leftovers(0) if _is_sleep(p)]
    assert len(sleepers) <= 4, [p.pid for p in sleepers]
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert not local.leftovers(timeout=3)


def test_sigterm_of_the_agent_leaves_no_daemon(local, tmp_path):
    sweep = _local_sweep(local, tmp_path, 1)
    process = local.start("agent", f"local:{sweep}", "--no-wandb")
    wait_for_file(tmp_path / "daemons-0.flag", process, timeout=120)
    wait_until(lambda: _late_detacher(local), 10, what="the late detacher", alive=[process])
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 130, process.returncode
    assert not local.leftovers(timeout=3), [p.cmdline() for p in local.leftovers(0)]
