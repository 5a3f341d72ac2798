"""Shared helpers: build small notebooks, run the real CLI, and read the process table."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import nbformat
import psutil
import pytest

MARKER_ENV = "NBSWEEP_TEST_MARKER"


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
    deadline = time.monotonic() + timeout
    while True:
        left = marked_processes(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


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


@pytest.fixture
def cli(tmp_path: Path) -> CliRun:
    runner = CliRun(tmp_path)
    yield runner
    runner.finish()


TEMPLATE = "nbsweep-forker"  # nbsweep.kernel.fork.TEMPLATE_NAME


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
            is_kernel = process.name() == TEMPLATE or "NBSWEEP_KERNEL_MARK" in process.environ()
            if is_kernel and process.status() != "zombie":
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


@contextlib.contextmanager
def no_kernel_left(timeout: float = 10.0):
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


@pytest.fixture
def server():
    """The W&B-protocol test server on 127.0.0.1 (tests/wandb_server.py)."""
    from wandb_server import WandbTestServer

    with WandbTestServer() as running:
        yield running


@pytest.fixture
def agent(server, tmp_path, request):
    """``nbsweep agent`` against ``server``, its processes marked for this test."""
    from test_agent import Agent  # the class lives with the agent's own tests

    runner = Agent(server, tmp_path, marker=f"agent-{request.node.name}-{time.time_ns()}")
    yield runner
    runner.finish(timeout=10)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL server for the session, in user space (the pgserver wheel, on a Unix
    socket: no TCP at all); skips with the reason where pgserver is not installed."""
    pgserver = pytest.importorskip(
        "pgserver", reason="PostgreSQL tests need the pgserver wheel: pip install 'nbsweep[test]'"
    )
    pytest.importorskip("psycopg", reason="PostgreSQL stores need psycopg: nbsweep[postgres]")
    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server
    server.cleanup()


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


@pytest.fixture
def private_postgres(tmp_path_factory, postgres_server):
    """A server of this test's own (a sibling of the session's, same wheel)."""
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pgown"), cleanup_mode="stop")
    private = PrivateServer(server)
    yield private
    with contextlib.suppress(Exception):
        private.start()  # cleanup stops a running server; a stopped one may be left mid-stop
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's server: its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    base = postgres_server.get_uri()
    with psycopg.connect(base, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return base.replace("/postgres?", f"/{name}?", 1)
