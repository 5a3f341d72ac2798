"""The suite's shared helpers, in one module: small notebooks, waiting on a condition, the real
CLI in marked subprocesses, and the process table read for what a test left behind.

Test modules and conftest.py import from here; no test module imports another test module or
conftest. Nothing here imports nbsweep: the helpers drive it from outside (its CLI, the process
table), so a move inside src/ never reaches this file.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import nbformat
import psutil
from wandb_server import WandbTestServer, wandb_env

ROOT = Path(__file__).parent.parent

# Every process a test starts carries this variable with a value of the test's own; the
# leftover checks look only at processes carrying the value they gave.
MARKER_ENV = "NBSWEEP_TEST_MARKER"
KERNEL_MARK_ENV = "NBSWEEP_KERNEL_MARK"  # nbsweep.kernel.process.KERNEL_MARK_ENV
TEMPLATE = "nbsweep-forker"  # nbsweep.kernel.fork.TEMPLATE_NAME

T = TypeVar("T")


# --- notebooks --------------------------------------------------------------------------


def make_notebook(
    cells: Sequence[str | tuple[str, Sequence[str]]],
    *,
    kernel: str | None = "python3",
    minor: int = 5,
) -> nbformat.NotebookNode:
    """Code cells from sources; ``(source, tags)`` tags a cell; ``"# md: text"`` is markdown."""
    nb = nbformat.v4.new_notebook()
    nb.nbformat_minor = minor
    for entry in cells:
        source, tags = (entry, ()) if isinstance(entry, str) else entry
        if source.startswith("# md:"):
            cell = nbformat.v4.new_markdown_cell(source[5:].strip())
        else:
            cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)} if tags else {})
        if minor < 5:
            cell.pop("id", None)
        nb.cells.append(cell)
    if kernel:
        nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    return nb


def write_notebook(path: Path, cells, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(make_notebook(cells, **kwargs), path)
    return path


# A trial that sleeps ``seconds`` the first time it runs and not again: a requeued run then
# finishes at once. Its ``started.flag`` says the first run is under way.
SLEEPS_THE_FIRST_TIME = [
    ("seconds = 60", ["parameters"]),
    "import pathlib, time\nflag = pathlib.Path('started.flag')\nfirst = not flag.exists()\n"
    "flag.touch()\ntime.sleep(seconds if first else 0)",
]


# --- waiting ----------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 60.0,
    interval: float = 0.05,
    what: str = "",
    alive: Sequence[subprocess.Popen] = (),
) -> T:
    """Poll ``predicate`` until it returns something true, and return that. Fails the test
    after ``timeout`` seconds, or as soon as one of the ``alive`` processes has exited (with
    its output), since what it was to bring about will not come then."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for process in alive:
            if process.poll() is not None:
                raise AssertionError(f"exited before {what or predicate}: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def wait_for_file(path: Path, *alive: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until ``path`` exists (a flag a notebook touches), every process in ``alive`` running."""
    wait_until(path.exists, timeout, what=str(path.name), alive=alive)


# --- the process table ------------------------------------------------------------------


def marked_processes(marker: str) -> list[psutil.Process]:
    """Live processes (kernels, their children) that inherited ``MARKER_ENV=marker``."""
    found = []
    for process in psutil.process_iter(["pid"]):
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(MARKER_ENV) == marker and process.status() != "zombie":
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def wait_until_gone(marker: str, timeout: float = 5.0) -> list[psutil.Process]:
    """The processes marked ``marker`` still alive after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        left = marked_processes(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def describe(processes: Sequence[psutil.Process]) -> list[str]:
    described = []
    for process in processes:
        try:
            described.append(f"{process.pid}: {' '.join(process.cmdline())}")
        except psutil.Error:
            described.append(str(process.pid))
    return described


def kill_marked(marker: str, timeout: float = 3.0) -> list[str]:
    """Kill what is left with ``marker`` after ``timeout`` seconds; say what that was."""
    left = wait_until_gone(marker, timeout)
    described = describe(left)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return described


def kernel_processes(marker: str) -> list[psutil.Process]:
    """Live kernels and kernel templates that carry ``MARKER_ENV=marker``: only what the
    caller started (a user's own sweep running beside the suite is never looked at). Every
    exec'd kernel and template inherits the starting process's environment; a forked
    kernel's environment is set after its fork, out of /proc's sight, so it shows its
    template's (and dies with it)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or process.environ().get(MARKER_ENV) != marker:
                continue
            is_kernel = process.name() == TEMPLATE or KERNEL_MARK_ENV in process.environ()
            if is_kernel and process.status() != "zombie":
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


@contextlib.contextmanager
def no_kernel_left(timeout: float = 10.0) -> Iterator[str]:
    """Mark what starts inside the block (this process's own kernels, in-process API calls)
    with a value of its own, then check the process table for kernels left with it, and
    kill only those."""
    marker = f"in-process-{uuid.uuid4().hex}"
    previous = os.environ.get(MARKER_ENV)
    os.environ[MARKER_ENV] = marker
    try:
        yield marker
    finally:
        if previous is None:
            os.environ.pop(MARKER_ENV, None)
        else:
            os.environ[MARKER_ENV] = previous
    deadline = time.monotonic() + timeout
    while (left := kernel_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = []
    for process in left:
        with contextlib.suppress(psutil.Error):
            survivors.append((process.pid, process.cmdline()))
            process.kill()
    assert not left, f"kernels survived: {survivors}"


# --- the real CLI -----------------------------------------------------------------------


class CliRun:
    """Runs ``python -m nbsweep`` in subprocesses marked in their environment, so that the
    process table shows what they (and their kernels) left behind."""

    def __init__(self, cwd: Path, marker: str | None = None, env: dict | None = None) -> None:
        self.cwd = cwd
        self.marker = marker or uuid.uuid4().hex
        base = os.environ if env is None else env
        self.env = {**base, MARKER_ENV: self.marker, "PYTHONUNBUFFERED": "1"}
        self.started: list[subprocess.Popen] = []

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "nbsweep", *map(str, args)]

    def __call__(self, *args: str, timeout: float = 120, **env: str):
        return subprocess.run(
            self.command(*args),
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        process = subprocess.Popen(
            self.command(*args),
            cwd=self.cwd,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(process)
        return process

    def leftovers(self, timeout: float = 5.0) -> list[psutil.Process]:
        return wait_until_gone(self.marker, timeout)

    def finish(self, timeout: float = 5.0) -> None:
        """Reap what ``start`` started (no leaked pipes, even after a failed test), then fail
        the test if any marked process is still alive."""
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.communicate()
        left = self.leftovers(timeout)
        for process in left:
            process.kill()
        assert not left, f"processes survived the test: {[p.cmdline() for p in left]}"


class Local(CliRun):
    """`python -m nbsweep ...` in tmp_path with its own store and no W&B settings."""

    def __init__(self, tmp_path: Path, marker: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
        super().__init__(tmp_path, marker, env=env)
        self.store = tmp_path / "store.db"
        self.env.update(
            NBSWEEP_STORE=str(self.store),
            WANDB_SILENT="true",
            WANDB_ERROR_REPORTING="false",
            WANDB__DISABLE_STATS="true",
            HOME=str(tmp_path),
        )

    def __call__(self, *args: str, timeout: float = 240, **env: str):
        return super().__call__(*args, timeout=timeout, **env)

    def sweep(self, yaml_text: str, notebook: list) -> str:
        write_notebook(self.cwd / "nb.ipynb", notebook)
        (self.cwd / "sweep.yaml").write_text("program: nb.ipynb\n" + yaml_text)
        result = self("sweep", "--local", "sweep.yaml")
        assert result.returncode == 0, result.stderr
        return result.stdout.split()[3]

    def status(self, sweep_id: str) -> dict:
        result = self("status", f"local:{sweep_id}", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


class PrivateServer:
    """A PostgreSQL server of one test's own, to stop and start again mid-sweep."""

    def __init__(self, server) -> None:
        self.server = server
        self.url = server.get_uri()

    def stop(self) -> None:
        from pgserver._commands import pg_ctl

        # fast: every session is cut at once, as when a server is restarted under clients.
        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()
        assert self.server.get_uri() == self.url  # the same socket: clients find it again

    def terminate_sessions(self, application: str = "nbsweep") -> int:
        """pg_terminate_backend on every session of ``application``: how many were cut."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                (application,),
            ).fetchall()
        return sum(1 for (cut,) in rows if cut)


class Agent(CliRun):
    """`python -m nbsweep agent ...` against the W&B-protocol test server."""

    def __init__(self, server: WandbTestServer, tmp_path: Path, marker: str) -> None:
        super().__init__(tmp_path, marker, env=wandb_env(server, tmp_path, project="p"))
        self.server = server

    def sweep(self, program: str, commands, **config) -> str:
        sweep_id = self.server.add_sweep(
            {"program": program, "method": "grid", **config}, project="p"
        )
        self.server.script(sweep_id, commands)
        return sweep_id

    def command(self, sweep_id: str, *args: str) -> list[str]:
        return super().command(
            "agent", f"{self.server.entity}/p/{sweep_id}", "--poll", "0.2", "--heartbeat",
            "0.3", *args,
        )  # fmt: skip

    def run(self, sweep_id: str, *args: str, timeout: float = 120):
        return self(sweep_id, *args, timeout=timeout)


def one_line_usage_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """``result`` is a usage error as nbsweep reports one: exit 2, no traceback, one line of
    stderr holding every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def run_cmd(run_id: str, **values) -> dict:
    """The W&B agent protocol's ``run`` command for ``run_id`` with ``values``."""
    return {"type": "run", "run_id": run_id, "args": {k: {"value": v} for k, v in values.items()}}


def executed(tmp_path: Path, sweep_id: str, run_id: str, name: str) -> nbformat.NotebookNode:
    return nbformat.read(tmp_path / "nbsweep-runs" / sweep_id / run_id / name, as_version=4)


def user_history(run) -> list[dict]:
    """A run's logged rows without wandb's own ``_step``, ``_runtime`` ... keys."""
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in run.history]


def fake_installers(tmp_path: Path) -> tuple[str, Path]:
    """A PATH whose pip, pip3 and conda only leave a marker: proof an install line ran, and
    no trial ever reaches a package index."""
    folder = tmp_path / "fake-bin"
    folder.mkdir()
    marker = tmp_path / "installer-ran"
    for name in ("pip", "pip3", "conda", "mamba"):
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "$0 $*" >> {marker}\n')
        script.chmod(0o755)
    return str(folder), marker
