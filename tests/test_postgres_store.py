"""Local sweeps on a PostgreSQL store, through the CLI, with real agent processes and a real
server (the pgserver wheel, on a Unix socket). The store's own semantics are tested against
both back ends in test_local_store.py."""

from __future__ import annotations

import time

import pytest
from test_local_sweeps import Local

pytest.importorskip("sweeps", reason="local sweeps need the engine: pip install 'nbsweep[local]'")

pytestmark = pytest.mark.kernel

TRIVIAL = [("x = 0", ["parameters"]), "import nbsweep\nnbsweep.log({'score': x})"]


@pytest.fixture
def local(tmp_path, request, postgres_url):
    runner = Local(tmp_path, f"pg-{request.node.name}-{time.time_ns()}")
    runner.env["NBSWEEP_STORE"] = postgres_url
    runner.url = postgres_url
    yield runner
    runner.finish(timeout=10)


def test_agents_share_a_sweep_through_postgresql(local):
    grid = "method: grid\nmetric: {name: score, goal: maximize}\nparameters:\n"
    sweep_id = local.sweep(grid + "  x: {values: [0, 1, 2, 3, 4, 5]}\n", TRIVIAL)
    assert not (local.cwd / ".nbsweep").exists(), "nothing went to an SQLite file"
    result = local("agent", f"local:{sweep_id}", "--workers", "3", "--no-wandb")
    assert result.returncode == 0, result.stderr[-3000:]
    status = local.status(sweep_id)
    assert sorted(run["values"]["x"] for run in status["runs"]) == [0, 1, 2, 3, 4, 5]
    assert status["totals"]["finished"] == 6 and status["best"]["metric"] == 5
    cancel = local("sweep", "--cancel", sweep_id)
    assert cancel.returncode == 0 and local.status(sweep_id)["state"] == "canceled"


def test_the_store_url_is_shown_without_its_password(local):
    url = local.url.replace("postgres:@", "postgres:hunter2@", 1)
    wrong_db = url.replace("/t_", "/missing_t_", 1)
    result = local("status", NBSWEEP_STORE=wrong_db)
    assert result.returncode == 2, result.stderr
    assert "does not exist" in result.stderr and "hunter2" not in result.stderr
    assert "postgres:***@" in result.stderr and result.stderr.count("\n") == 1
    no_server = "postgresql://nbsweep:hunter2@/db?host=/nonexistent-socket-dir"
    result = local("status", NBSWEEP_STORE=no_server)
    assert result.returncode == 2 and "hunter2" not in result.stderr
    assert "cannot connect to sweep store" in result.stderr
