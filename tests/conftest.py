"""Shared fixtures (the helpers they use live in helpers.py), and the guard that keeps the
unit layer in-process: a test marked neither ``kernel`` nor ``e2e`` fails if it starts a
kernel or the W&B-protocol test server."""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Agent, CliRun, Local, PrivateServer
from wandb_server import SERVER_STARTS, WandbTestServer

# --- the unit layer stays in-process ------------------------------------------------------

OUTSIDE_THE_UNIT_LAYER = ("kernel", "e2e")
_unit_layer_breaches: list[str] | None = None  # a list while a unit-layer test runs


def _starts_a_kernel(argv: object) -> bool:
    """``python -m ipykernel...`` or ``-m nbsweep.kernel...`` (a launcher module of nbsweep's
    own), or ``python -c CODE`` whose code is a kernel launcher: nbsweep's launcher and fork
    template keep the name ipykernel_launcher in their code (for ps and pkill). Only the
    program counts, not later arguments that may look alike."""
    if not isinstance(argv, (list, tuple)) or len(argv) < 3:
        return False
    option, program = str(argv[1]), str(argv[2])
    if option == "-m":
        return program.startswith(("ipykernel", "nbsweep.kernel"))
    return option == "-c" and "ipykernel" in program


def _watch_the_unit_layer(event: str, args: tuple) -> None:
    if _unit_layer_breaches is None:
        return
    if event == "subprocess.Popen" and _starts_a_kernel(args[1]):
        _unit_layer_breaches.append(f"started a kernel: {' '.join(map(str, args[1]))[:200]}")
    elif event == SERVER_STARTS:
        _unit_layer_breaches.append(f"started the W&B test server on {args[0]}")


# An audit hook cannot be removed: it is added once, and does nothing outside unit tests.
sys.addaudithook(_watch_the_unit_layer)


@pytest.fixture(autouse=True)
def unit_layer_stays_in_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """`make test-fast` deselects ``kernel`` and ``e2e``: what it keeps must start no kernel
    and no server in this process (it runs first, so other fixtures' setup is watched too).
    Kernels that a CLI subprocess would start are out of this hook's sight."""
    global _unit_layer_breaches
    if any(request.node.get_closest_marker(name) for name in OUTSIDE_THE_UNIT_LAYER):
        yield
        return
    _unit_layer_breaches = breaches = []
    try:
        yield
    finally:
        _unit_layer_breaches = None
    if breaches:
        pytest.fail(
            "a test marked neither kernel nor e2e " + "; ".join(breaches) + ": mark it",
            pytrace=False,
        )


# --- processes the test starts ----------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[CliRun]:
    """The real CLI in ``tmp_path``, its processes marked for this test."""
    runner = CliRun(tmp_path)
    yield runner
    runner.finish()


@pytest.fixture
def local(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Local]:
    """The real CLI in ``tmp_path`` with a local sweep store there (``tmp_path/store.db``),
    no W&B settings, its processes marked for this test. Skips where the local engine
    (`nbsweep[local]`) is not installed."""
    pytest.importorskip(
        "sweeps", reason="local sweeps need the engine: pip install 'nbsweep[local]'"
    )
    runner = Local(tmp_path, f"local-{request.node.name}-{time.time_ns()}")
    yield runner
    runner.finish(timeout=10)


@pytest.fixture(params=["sqlite", "postgres"])
def on_either_store(request: pytest.FixtureRequest, local: Local) -> Local:
    """``local`` on an SQLite file, then on a PostgreSQL database (a real server)."""
    if request.param == "postgres":
        local.env["NBSWEEP_STORE"] = request.getfixturevalue("postgres_url")
    return local


@pytest.fixture
def server() -> Iterator[WandbTestServer]:
    """The W&B-protocol test server on 127.0.0.1 (tests/wandb_server.py)."""
    with WandbTestServer() as running:
        yield running


@pytest.fixture
def agent(
    server: WandbTestServer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Agent]:
    """``nbsweep agent`` against ``server``, its processes marked for this test."""
    runner = Agent(server, tmp_path, marker=f"agent-{request.node.name}-{time.time_ns()}")
    yield runner
    runner.finish(timeout=10)


# --- PostgreSQL -------------------------------------------------------------------------


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
