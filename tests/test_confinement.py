"""Nothing escapes, nothing leaks (issue 20): ids from a store, a server or the environment
never lead a file outside its folder; an output that is a device is written to, a FIFO is
refused, never replaced; an input that is a device or a FIFO is one line, not a hang or a
memory blow-up; a signal while a trial is saved still ends `nbsweep run` with its code."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from helpers import CliRun, wait_until, write_notebook

NOTEBOOK = [("x = 1", ["parameters"]), "print(x)"]


def _one_line(result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], result.stderr


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if not path.is_dir()}


# ---------------------------------------------------------------- ids that would escape

HOSTILE_IDS = ["../../../escaped", "ABSOLUTE", ".."]


def _hostile(run_id: str, tmp_path: Path) -> str:
    return str(tmp_path / "absolute") if run_id == "ABSOLUTE" else run_id


@pytest.fixture
def confined(tmp_path, request):
    """A CLI in ``tmp_path/work`` with a local sweep store there; anything written in
    ``tmp_path`` beside ``work`` escaped."""
    work = tmp_path / "work"
    work.mkdir()
    runner = CliRun(work, f"confinement-{request.node.name}-{time.time_ns()}")
    runner.env["NBSWEEP_STORE"] = str(work / "s.db")
    yield runner
    runner.finish(timeout=10)


@pytest.mark.parametrize("run_id", HOSTILE_IDS)
def test_a_pending_run_with_a_hostile_id_fails_and_writes_nothing_outside(
    confined, tmp_path, run_id
):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    run_id = _hostile(run_id, tmp_path)
    work = confined.cwd
    write_notebook(work / "nb.ipynb", NOTEBOOK)
    (work / "s.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\nparameters:\n  x: {values: [2]}\n"
    )
    created = confined("sweep", "--local", "s.yaml")
    assert created.returncode == 0, created.stderr
    sweep = created.stdout.split()[3]
    with sqlite3.connect(work / "s.db") as db:
        db.execute(
            "INSERT INTO runs (run_id, sweep_id, state, run_values, created_at, summary)"
            " VALUES (?, ?, 'pending', ?, ?, '{}')",
            (run_id, sweep, json.dumps({"x": 5}), time.time()),
        )
    result = confined("agent", f"local:{sweep}", "--count", "1", "--no-warm-kernels", "--no-wandb")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"run id {run_id!r} is not an id W&B accepts" in result.stderr, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["work"], "nothing escaped"
    written = _files(work) - {"nb.ipynb", "s.yaml", "s.db"}
    assert not [name for name in written if name.endswith(".ipynb")], written
    status = json.loads(confined("status", f"local:{sweep}", "--json").stdout)
    [run] = [run for run in status["runs"] if run["run_id"] == run_id]
    assert run["state"] == "failed" and "is not an id W&B accepts" in run["error"], run


@pytest.mark.kernel  # `nbsweep run` starts its kernel while it checks the rest of its input
@pytest.mark.parametrize(
    "variables",
    [
        {"WANDB_SWEEP_ID": "s1", "WANDB_RUN_ID": "../../../escaped"},
        {"WANDB_SWEEP_ID": "s1", "WANDB_RUN_ID": "ABSOLUTE"},
        {"WANDB_SWEEP_ID": "ABSOLUTE", "WANDB_RUN_ID": "r1"},
        {"WANDB_SWEEP_ID": "..", "WANDB_RUN_ID": ".."},
    ],
    ids=["run-dotdot", "run-absolute", "sweep-absolute", "both-dotdot"],
)
def test_nbsweep_run_refuses_hostile_ids_from_the_environment(confined, tmp_path, variables):
    work = confined.cwd
    write_notebook(work / "nb.ipynb", NOTEBOOK)
    env = {name: _hostile(value, tmp_path) for name, value in variables.items()}
    # Offline, so that the code before the fix went on to write instead of waiting on W&B.
    result = confined("run", "nb.ipynb", WANDB_MODE="offline", **env)
    _one_line(result, 2, "is not an id W&B accepts")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["work"], "nothing escaped"
    assert _files(work) == {"nb.ipynb"}, "nothing written at all"


@pytest.mark.kernel
@pytest.mark.e2e
def test_a_wandb_server_handing_out_a_hostile_id(tmp_path, request):
    from wandb_server import WandbTestServer, wandb_env

    work = tmp_path / "work"
    work.mkdir()
    write_notebook(work / "nb.ipynb", NOTEBOOK)
    with WandbTestServer() as server:
        sweep = server.add_sweep({"program": "nb.ipynb", "method": "grid"}, project="p")
        server.script(
            sweep,
            [
                {"type": "run", "run_id": "../../../escaped", "args": {"x": {"value": 3}}},
                {"type": "run", "run_id": "good", "args": {"x": {"value": 4}}},
                {"type": "exit"},
            ],
        )
        runner = CliRun(work, f"confinement-{time.time_ns()}", env=wandb_env(server, work))
        try:
            result = runner("agent", f"{server.entity}/p/{sweep}", "--poll", "0.2")
        finally:
            runner.finish(timeout=10)
    assert result.returncode == 0, result.stderr
    assert "run id '../../../escaped' is not an id W&B accepts" in result.stderr, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["work"], "nothing escaped"
    notebooks = {name for name in _files(work / "nbsweep-runs") if name.endswith(".ipynb")}
    assert notebooks == {f"{sweep}/good/nb.ipynb"}, notebooks
    assert _files(work / "wandb" / f"sweep-{sweep}") == {"config-good.yaml"}


# ------------------------------------------------------------- outputs that are devices


def _character_device(path: Path) -> Path:
    """A /dev/null of the test's own (major 1, minor 3), so that replacing it harms nothing."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs root")
    return path


@pytest.mark.kernel
@pytest.mark.parametrize(
    "args,device",
    [
        (["-o", "dev.ipynb"], "dev.ipynb"),
        (["-o", "out.ipynb", "--html"], "out.html"),
        (["-o", "out.ipynb", "--metrics-json", "m.json"], "m.json"),
    ],
    ids=["output", "html", "metrics-json"],
)
def test_an_output_that_is_a_device_is_written_to_not_replaced(cli, tmp_path, args, device):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    _character_device(tmp_path / device)
    result = cli("run", "nb.ipynb", *args)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR((tmp_path / device).stat().st_mode), "still a device"
    assert not [name for name in _files(tmp_path) if name.startswith(".")], "no temp file left"


@pytest.mark.kernel  # `nbsweep run` starts its kernel while it checks the rest of its input
@pytest.mark.parametrize(
    "args,fifo,option",
    [
        (["-o", "out.ipynb"], "out.ipynb", "--output"),
        (["-o", "out.ipynb", "--html"], "out.html", "--html"),
        (["--metrics-json", "m.json"], "m.json", "--metrics-json"),
    ],
    ids=["output", "html", "metrics-json"],
)
def test_an_output_that_is_a_fifo_is_refused_before_the_trial(cli, tmp_path, args, fifo, option):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    os.mkfifo(tmp_path / fifo)
    result = cli("run", "nb.ipynb", *args, timeout=60)
    _one_line(result, 2, f"{option} '{fifo}' is a FIFO, not a regular file")
    assert stat.S_ISFIFO((tmp_path / fifo).stat().st_mode), "still a FIFO"


def test_a_plot_to_a_fifo_is_refused_and_to_a_device_written_to(cli, tmp_path):
    pytest.importorskip("sweeps", reason="local sweeps need the engine: nbsweep[local]")
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    (tmp_path / "s.yaml").write_text(
        "program: nb.ipynb\nmethod: grid\nparameters:\n  x: {values: [2]}\n"
    )
    store = str(tmp_path / "s.db")
    assert cli("sweep", "--local", "s.yaml", NBSWEEP_STORE=store).returncode == 0
    os.mkfifo(tmp_path / "p.html")
    result = cli("status", "--plot", "p.html", NBSWEEP_STORE=store, timeout=60)
    _one_line(result, 2, "'p.html': it is a FIFO, not a regular file")
    assert stat.S_ISFIFO((tmp_path / "p.html").stat().st_mode)
    _character_device(tmp_path / "d.html")
    assert cli("status", "--plot", "d.html", NBSWEEP_STORE=store).returncode == 0
    assert stat.S_ISCHR((tmp_path / "d.html").stat().st_mode)


# ------------------------------------------------------------ inputs that never end

# Before the fix a device was read whole: a cap on the address space turns that into a
# failed test instead of a machine out of memory. A kernel needs far less.
_MEMORY_CAP = 4 * 2**30


def _capped(cli: CliRun, *args: str, **env: str) -> subprocess.CompletedProcess:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_CAP, _MEMORY_CAP))

    return subprocess.run(
        cli.command(*args),
        cwd=cli.cwd,
        env={**cli.env, **env},
        capture_output=True,
        text=True,
        timeout=30,  # a FIFO that hangs fails the test instead of hanging it
        preexec_fn=cap,
    )


def _special(path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


READERS = {
    "run": (["run", "bad.ipynb"], "notebook 'bad.ipynb'"),
    "inspect": (["inspect", "bad.ipynb"], "notebook 'bad.ipynb'"),
    "parameters-file": (["run", "nb.ipynb", "-f", "bad.yaml"], "parameters file 'bad.yaml'"),
    "args-json-file": (["run", "nb.ipynb", "bad.json"], "--args-json file 'bad.json'"),
    "sweep-file": (["sweep", "bad.yaml", "--dry-run"], "sweep file 'bad.yaml'"),
    "param-path": (["run", "nb.ipynb"], "WANDB_SWEEP_PARAM_PATH file 'bad.yaml'"),
}


# `nbsweep run` of the good notebook starts its kernel while it reads the bad file.
@pytest.mark.parametrize(
    "reader",
    [
        pytest.param(name, marks=pytest.mark.kernel) if argv[:2] == ["run", "nb.ipynb"] else name
        for name, (argv, _) in READERS.items()
    ],
)
@pytest.mark.parametrize("kind,what", [("fifo", "a FIFO"), ("zero", "a device")])
def test_inputs_that_are_devices_or_fifos_are_one_line(cli, tmp_path, kind, what, reader):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    for name in ("bad.ipynb", "bad.yaml", "bad.json"):
        _special(tmp_path / name, kind)
    args, names = READERS[reader]
    env = {"WANDB_SWEEP_PARAM_PATH": "bad.yaml"} if reader == "param-path" else {}
    _one_line(_capped(cli, *args, **env), 2, f"{names} is {what}, not a regular file")


@pytest.mark.kernel  # `nbsweep run` starts its kernel while it checks the rest of its input
def test_a_yaml_file_over_the_limit_is_refused_without_reading_it_all(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", NOTEBOOK)
    with open(tmp_path / "big.yaml", "wb") as file:
        file.truncate(17 * 2**20)  # sparse: costs no disk
    _one_line(cli("run", "nb.ipynb", "-f", "big.yaml"), 2, "is over 16 MiB")


# ------------------------------------------------------------- a signal while saving

# Colored output: nbconvert turns ANSI codes into HTML slowly (several seconds here).
SLOW_HTML = [("lines = 20_000", ["parameters"]), "print('\\x1b[31mred\\x1b[0m line\\n' * lines)"]


@pytest.mark.kernel
def test_sigterm_while_the_html_is_written_ends_with_143(cli, tmp_path):
    write_notebook(tmp_path / "nb.ipynb", SLOW_HTML)
    process = cli.start("run", "nb.ipynb", "-o", "out.ipynb", "--html")
    saved = tmp_path / "out.ipynb"
    wait_until(saved.exists, interval=0.02, what="the notebook saved", alive=[process])
    assert not (tmp_path / "out.html").exists(), "the HTML export is still running"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr, stderr
    assert "Error: terminated while the trial (finished) was saved" in stderr, stderr
    saved = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert saved.metadata.nbsweep.status == "finished", "the notebook ran to its end"
    assert "red" in saved.cells[-1].outputs[0].text
