"""The local sweep store: hand-outs, reaping, history, stops, and several real agent processes
sharing one file (every grid point exactly once)."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_until

from nbsweep.errors import UsageError
from nbsweep.local.store import (
    SCHEMA_VERSION,
    AgentIdentity,
    LoggedRow,
    RunRecord,
    RunState,
    Store,
    StoreError,
    StoreLocked,
    network_file_system,
)

GRID = [{"x": i, "opt": {"name": "adam" if i % 2 else "sgd"}} for i in range(12)]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def row(step: int, values: dict) -> list[LoggedRow]:
    """One history row, the run's ``step``-th."""
    return [LoggedRow(step, step, time.time(), values)]


def walk(points: list[dict]):
    """A grid engine in miniature: the first point no run has taken yet."""

    def propose(runs: list[RunRecord]) -> dict | None:
        taken = [run.values for run in runs]
        return next((point for point in points if point not in taken), None)

    return propose


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path) -> str:
    """Where a store lives: an SQLite file, or a fresh PostgreSQL database (a real server)."""
    if request.param == "sqlite":
        return str(tmp_path / "sweeps.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(location):
    with Store.open(location) as opened:
        yield opened


@pytest.fixture
def me():
    return AgentIdentity.current()


def dead_agent() -> AgentIdentity:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return AgentIdentity(AgentIdentity.current().host, int(finished.stdout), time.time())


def test_sweeps_are_created_and_found(store):
    first = store.create_sweep({"method": "grid", "parameters": {}}, name="digits")
    second = store.create_sweep({"method": "random"})
    assert len(first) == 8 and first.isalnum() and first.islower() and first != second
    sweep = store.sweep(first)
    assert (sweep.config["method"], sweep.state, sweep.name) == ("grid", "running", "digits")
    assert {s.sweep_id for s in store.sweeps()} == {first, second}
    store.set_sweep_state(first, "finished")
    assert store.sweep(first).state == "finished"
    with pytest.raises(UsageError, match=f"no sweep 'nope'.*{first}.*{second}|{second}.*{first}"):
        store.sweep("nope")
    with pytest.raises(UsageError, match="use one of running, paused, finished, canceled"):
        store.set_sweep_state(first, "sleeping")
    with pytest.raises(UsageError, match="is finished: it cannot be paused"):
        store.set_sweep_state(first, "paused")


def test_paused_and_canceled_sweeps_hand_nothing_out(store):
    sweep_id = store.create_sweep({"method": "grid"})
    agent = AgentIdentity.current()
    propose = lambda runs: {"x": len(runs)}  # noqa: E731
    store.set_sweep_state(sweep_id, "paused")
    assert store.hand_out(sweep_id, agent, propose) is None
    store.set_sweep_state(sweep_id, "running")
    first = store.hand_out(sweep_id, agent, propose)
    assert first is not None and first.values == {"x": 0}
    assert store.set_sweep_state(sweep_id, "canceled") == [first.run_id]
    assert store.stop_requested(first.run_id)
    assert store.hand_out(sweep_id, agent, propose) is None


def test_unknown_sweep_in_an_empty_store_says_so(store):
    with pytest.raises(UsageError, match="has no sweeps yet"):
        store.runs("k3x9q2ab")


def test_a_grid_is_handed_out_once_and_then_exhausted(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    calls = []

    def propose(runs):
        calls.append(len(runs))
        return walk(GRID)(runs)

    handed = []
    while (run := store.hand_out(sweep_id, me, propose)) is not None:
        assert run.state is RunState.running and run.agent == me and run.started_at
        store.finish(
            run.run_id, run.agent, RunState.finished, {"y": run.values["x"] ** 2}, "out.ipynb"
        )
        handed.append(run.values)
    assert handed == GRID
    assert calls == list(range(13))  # the 13th call said "nothing left"
    assert store.hand_out(sweep_id, me, propose) is None
    runs = store.runs(sweep_id)
    assert [r.values for r in runs] == GRID
    assert {r.state for r in runs} == {RunState.finished}
    assert runs[3].summary == {"y": 9} and runs[3].notebook == "out.ipynb"


def test_a_finished_sweep_hands_out_no_new_runs(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    store.set_sweep_state(sweep_id, "finished")
    assert store.hand_out(sweep_id, me, walk(GRID)) is None
    assert store.runs(sweep_id) == []


def test_a_failing_engine_leaves_nothing_behind(store, me):
    sweep_id = store.create_sweep({"method": "grid"})

    def broken(runs):
        raise RuntimeError("engine bug")

    with pytest.raises(RuntimeError, match="engine bug"):
        store.hand_out(sweep_id, me, broken)
    assert store.runs(sweep_id) == []
    assert store.hand_out(sweep_id, me, walk(GRID)).values == GRID[0]  # the lock was released
    with pytest.raises(UsageError, match="no sweep 'nope'"):
        store.hand_out("nope", me, walk(GRID))


def test_run_cap_counts_every_run_created(store, me):
    sweep_id = store.create_sweep({"method": "random", "run_cap": 3})
    states = [RunState.crashed, RunState.failed, RunState.finished]
    for state in states:
        run = store.hand_out(sweep_id, me, lambda runs: {"x": len(runs)})
        store.finish(run.run_id, run.agent, state, {}, None)
    assert store.hand_out(sweep_id, me, lambda runs: {"x": len(runs)}) is None
    assert [r.state for r in store.runs(sweep_id)] == states


def test_a_dead_agents_run_crashes_at_the_next_hand_out(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    lost = store.hand_out(sweep_id, dead_agent(), walk(GRID))
    fresh = store.hand_out(sweep_id, me, walk(GRID))
    assert fresh.values == GRID[1]
    states = {r.run_id: r.state for r in store.runs(sweep_id)}
    assert states == {lost.run_id: RunState.crashed, fresh.run_id: RunState.running}
    assert store.runs(sweep_id)[0].finished_at is not None


def test_a_reused_pid_counts_as_dead(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    impostor = AgentIdentity(me.host, me.pid, me.started - 3600)  # our PID, another start
    assert not impostor.is_alive() and me.is_alive()
    assert AgentIdentity("another-host", 1, 0.0).is_alive()  # cannot tell: trust heartbeats
    lost = store.hand_out(sweep_id, impostor, walk(GRID))
    assert store.reap(sweep_id) == [lost.run_id]
    assert store.runs(sweep_id)[0].state is RunState.crashed


def test_requeue_gives_a_dead_agents_run_to_the_next_agent(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    lost = store.hand_out(sweep_id, dead_agent(), walk(GRID))
    store.log_metrics(lost.run_id, lost.agent, row(0, {"loss": 1.0}))
    proposed = []

    def propose(runs):
        proposed.append(runs)
        return walk(GRID)(runs)

    again = store.hand_out(sweep_id, me, propose, requeue_crashed=True)
    assert (again.run_id, again.values, again.agent) == (lost.run_id, GRID[0], me)
    assert proposed == []  # claimed, not proposed
    assert store.runs(sweep_id, with_history=True)[0].history == []  # a fresh start
    assert store.hand_out(sweep_id, me, propose, requeue_crashed=True).values == GRID[1]


def test_a_lost_run_whose_stop_was_requested_ends_stopped(store):
    sweep_id = store.create_sweep({"method": "grid"})
    lost = store.hand_out(sweep_id, dead_agent(), walk(GRID))
    store.request_stop([lost.run_id])
    assert store.reap(sweep_id, requeue_crashed=True) == [lost.run_id]
    assert store.runs(sweep_id)[0].state is RunState.stopped


def test_a_silent_run_crashes_after_the_heartbeat_grace(store, me):
    # Another machine's agents: only their heartbeats tell (this machine's, their PIDs).
    elsewhere = AgentIdentity("node-b", me.pid, me.started)
    sweep_id = store.create_sweep({"method": "grid"})
    quiet = store.hand_out(sweep_id, elsewhere, walk(GRID))
    beating = store.hand_out(sweep_id, elsewhere, walk(GRID))
    time.sleep(0.3)  # scenario: the quiet run's heartbeat grace (0.2 s) lapses
    assert store.heartbeat(beating.run_id, beating.agent)
    assert store.reap(sweep_id, heartbeat_grace=0.2) == [quiet.run_id]
    states = [r.state for r in store.runs(sweep_id)]
    assert states == [RunState.crashed, RunState.running]
    # The reaper guessed wrong: the agent is alive. Its heartbeat is refused (the run is no
    # longer its), but its real result is kept.
    assert not store.heartbeat(quiet.run_id, quiet.agent)
    assert store.log_metrics(quiet.run_id, quiet.agent, row(0, {"y": 1}))  # its rows too
    assert store.finish(quiet.run_id, quiet.agent, RunState.finished, {"y": 1}, None)
    [first, _] = store.runs(sweep_id, with_history=True)
    assert first.state is RunState.finished and [r["y"] for r in first.history] == [1]


def test_the_reaper_leaves_a_run_that_beat_since_it_looked(store, me):
    # On PostgreSQL a holder's heartbeat does not wait for the store's lock, so it can land
    # between the reaper's read and its write: the write must see it.
    sweep_id = store.create_sweep({"method": "grid"})
    run = store.hand_out(sweep_id, me, walk(GRID))
    with store._transaction("DEFERRED") as db:
        as_read = db.execute("SELECT * FROM runs WHERE run_id = ?", (run.run_id,)).fetchone()
    time.sleep(0.01)  # scenario: the heartbeat lands after the reaper's read
    assert store.heartbeat(run.run_id, me)
    with store._transaction():
        assert not store._end_lost_run(as_read, time.time(), requeue=True)
        assert not store._end_lost_run(as_read, time.time(), requeue=False)
    assert store.runs(sweep_id)[0].state is RunState.running


def test_history_rows_in_order_with_nan_and_nested_values(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    run = store.hand_out(sweep_id, me, walk(GRID))
    before = store.runs(sweep_id)[0].heartbeat_at
    for step in range(5):
        values = {"loss": 1 / (step + 1), "nan": math.nan}
        assert store.log_metrics(run.run_id, run.agent, row(step, values))
    store.finish(
        run.run_id, run.agent, RunState.finished, {"best": -math.inf, "loss": math.nan}, None
    )
    [stored] = store.runs(sweep_id, with_history=True)
    assert [row["_step"] for row in stored.history] == [0, 1, 2, 3, 4]
    assert [row["loss"] for row in stored.history] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert all(math.isnan(row["nan"]) for row in stored.history)
    assert stored.heartbeat_at > before and stored.values == GRID[0]
    assert stored.summary["best"] == -math.inf and math.isnan(stored.summary["loss"])
    assert store.runs(sweep_id)[0].history == []  # only when asked for
    assert not store.log_metrics(run.run_id, run.agent, row(5, {"loss": 0.1}))  # ended: not written


def test_the_owners_writes_touch_only_its_run(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    mine, other = (store.hand_out(sweep_id, me, walk(GRID)) for _ in range(2))
    other_before = store.runs(sweep_id)[1]
    store.heartbeat(mine.run_id, mine.agent)
    store.log_metrics(mine.run_id, mine.agent, row(0, {"loss": 1.0}))
    store.finish(mine.run_id, mine.agent, RunState.failed, {"loss": 1.0}, None)
    other_after = store.runs(sweep_id, with_history=True)[1]
    assert other_after == other_before
    with pytest.raises(UsageError, match="no run 'zzzzzzzz'"):
        store.finish("zzzzzzzz", me, RunState.finished, {}, None)
    with pytest.raises(ValueError, match="ended state"):
        store.finish(other.run_id, other.agent, RunState.running, {}, None)


def test_only_the_runs_holder_writes_to_it(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    lost = store.hand_out(sweep_id, dead_agent(), walk(GRID))
    again = store.hand_out(sweep_id, me, walk(GRID), requeue_crashed=True)
    assert again.run_id == lost.run_id and again.agent == me
    # The first holder comes back (it was only silent): the run is another's now.
    assert not store.heartbeat(lost.run_id, lost.agent)
    assert not store.log_metrics(lost.run_id, lost.agent, row(0, {"loss": 9.0}))
    assert not store.finish(lost.run_id, lost.agent, RunState.failed, {"loss": 9.0}, None)
    assert store.log_metrics(again.run_id, me, row(0, {"loss": 1.0}))
    assert store.finish(again.run_id, me, RunState.finished, {"loss": 1.0}, None)
    [stored] = store.runs(sweep_id, with_history=True)
    assert stored.state is RunState.finished and stored.summary == {"loss": 1.0}
    assert [r["loss"] for r in stored.history] == [1.0]


def test_history_rows_written_again_are_kept_once(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    run = store.hand_out(sweep_id, me, walk(GRID))
    rows = [LoggedRow(n, 10 * n, time.time(), {"loss": n}) for n in range(3)]
    assert store.log_metrics(run.run_id, me, rows[:2])
    assert store.log_metrics(run.run_id, me, rows)  # a retry of the first write, and more
    [stored] = store.runs(sweep_id, with_history=True)
    assert [(r["_step"], r["loss"]) for r in stored.history] == [(0, 0), (10, 1), (20, 2)]


def test_agent_names_decide_where_pids_can_be_checked(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    dead = dead_agent()
    on_node_b = AgentIdentity("node-b", dead.pid, dead.started)  # a PID on another node
    assert on_node_b.is_alive() and not on_node_b.is_alive("node-b")
    store.hand_out(sweep_id, on_node_b, walk(GRID))
    assert store.reap(sweep_id) == []  # node-b's PID means nothing here: only heartbeats
    node_a = AgentIdentity("node-a", me.pid, me.started)
    assert store.hand_out(sweep_id, node_a, walk(GRID)).values == GRID[1]
    assert store.runs(sweep_id)[0].state is RunState.running
    running = [r.run_id for r in store.runs(sweep_id)]
    assert store.reap(sweep_id, heartbeat_grace=1e-6) == running  # both silent: both lost


def test_stops_are_requested_and_seen(store, me):
    sweep_id = store.create_sweep({"method": "grid"})
    running = store.hand_out(sweep_id, me, walk(GRID))
    other = store.hand_out(sweep_id, me, walk(GRID))
    store.request_stop([running.run_id])
    assert store.stop_requested(running.run_id) and not store.stop_requested(other.run_id)
    assert store.finish(running.run_id, running.agent, RunState.stopped, {}, None)
    with pytest.raises(UsageError, match="no run nope"):
        store.request_stop([other.run_id, "nope"])
    assert not store.stop_requested(other.run_id)  # all or nothing


def test_run_states_map_to_wandb_names():
    assert RunState.stopped.sweeps_name == "killed"
    assert [s.sweeps_name for s in RunState if s is not RunState.stopped] == [
        "finished",
        "running",
        "pending",
        "failed",
        "crashed",
    ]


def test_a_locked_store_raises_store_locked_within_the_timeout(tmp_path, me):
    path = tmp_path / "sweeps.db"
    with Store.open(path, busy_timeout=0.2) as store:
        sweep_id = store.create_sweep({"method": "grid"})
        run = store.hand_out(sweep_id, me, walk(GRID))
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            started = time.monotonic()
            with pytest.raises(StoreLocked, match=f"{path}.*retry.*stuck process"):
                store.finish(run.run_id, run.agent, RunState.finished, {}, None)
            with pytest.raises(StoreLocked, match=r"stayed locked for over 0\.2s"):
                store.hand_out(sweep_id, me, walk(GRID))  # retried, then given up
            assert time.monotonic() - started < 5
            assert store.runs(sweep_id)[0].state is RunState.running  # reads still work
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert store.finish(run.run_id, run.agent, RunState.finished, {}, None)


def test_a_damaged_file_is_refused_with_its_path(tmp_path):
    path = tmp_path / "sweeps.db"
    path.write_bytes(b"this is no database at all\n" * 200)
    with pytest.raises(StoreError, match=f"{path}.*not a readable sweep store.*move it aside"):
        Store.open(path)


def test_another_programs_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE things (x)")
    other.close()
    with pytest.raises(StoreError, match="not an nbsweep sweep store"):
        Store.open(path)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "sweeps.db"
    Store.open(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    raw.close()
    with pytest.raises(StoreError, match=r"schema version 99, newer .* upgrade nbsweep"):
        Store.open(path)
    with Store.open(tmp_path / "nested" / "folder" / "ok.db") as fresh:  # folders created
        assert fresh.sweeps() == []


def test_a_version_1_store_is_upgraded_in_place(tmp_path, me):
    path = tmp_path / "sweeps.db"
    with Store.open(path) as store:
        sweep_id = store.create_sweep({"method": "grid"})
        old = store.hand_out(sweep_id, me, walk(GRID))
        store.log_metrics(old.run_id, me, row(0, {"loss": 1.0}))
    with sqlite3.connect(path) as raw:  # back to version 1: no row numbers, no run errors
        raw.execute("DROP INDEX history_once")
        raw.execute("ALTER TABLE history DROP COLUMN n")
        raw.execute("ALTER TABLE runs DROP COLUMN error")
        raw.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    raw.close()
    with Store.open(path) as store:
        assert store.log_metrics(old.run_id, me, [LoggedRow(1, 1, time.time(), {"loss": 0.5})] * 2)
        [stored] = store.runs(sweep_id, with_history=True)
    assert [r["loss"] for r in stored.history] == [1.0, 0.5]
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
    raw.close()


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
server:/export /mnt/data nfs4 rw,relatime 0 0
/dev/vdb /mnt/data/scratch ext4 rw 0 0
//nas/share /mnt/my\\040share cifs rw 0 0
sshfs#me@host: /home/me/remote fuse.sshfs rw 0 0
tmpfs /mnt/data/scratch/over nfs rw 0 0
tmpfs /mnt/data/scratch/over tmpfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/mnt/data/sweeps.db", "nfs4"),
        ("/mnt/data", "nfs4"),
        ("/mnt/database/sweeps.db", None),  # a prefix of the name is not a parent folder
        ("/mnt/data/scratch/sweeps.db", None),  # a local disk mounted inside the NFS share
        ("/mnt/my share/sweeps.db", "cifs"),
        ("/home/me/remote/a/b.db", "fuse.sshfs"),
        ("/mnt/data/scratch/over/x.db", None),  # mounted over: the later line wins
        ("/home/me/sweeps.db", None),
    ],
)
def test_network_file_systems_are_detected(path, expected):
    assert network_file_system(Path(path), MOUNTS) == expected


def test_a_store_on_a_network_file_system_is_refused(tmp_path, monkeypatch):
    from nbsweep.local import store as local_store

    mounts = f"/dev/vda / ext4 rw 0 0\nserver:/x {tmp_path.resolve()} nfs rw 0 0\n"
    monkeypatch.setattr(local_store, "read_mounts", lambda: mounts)
    with pytest.raises(StoreError, match=r"network file system \(nfs\).*one machine.*W&B server"):
        Store.open(tmp_path / "new" / "sweeps.db")
    assert not (tmp_path / "new").exists()


# Agents as real processes. Each opens the store, waits until all are ready, then loops
# hand_out -> (a short trial) -> finish until the sweep has nothing left.
AGENT = """
import json, os, sys, time
from pathlib import Path
from nbsweep.local.store import AgentIdentity, RunState, Store

path, sweep_id, points, barrier, agents, mode = sys.argv[1:]
points, agents = json.loads(points), int(agents)

def propose(runs):
    if mode == "endless":
        return {"x": len(runs)}
    taken = [run.values for run in runs]
    return next((point for point in points if point not in taken), None)

store = Store.open(path if "://" in path else Path(path))
Path(barrier, str(os.getpid())).touch()
while len(os.listdir(barrier)) < agents:
    time.sleep(0.002)
agent, latencies = AgentIdentity.current(f"node-{os.getpid()}"), []
while True:
    started = time.perf_counter()
    run = store.hand_out(sweep_id, agent, propose)
    latencies.append(time.perf_counter() - started)
    if run is None:
        break
    time.sleep(0.005)
    store.finish(run.run_id, run.agent, RunState.finished, {"y": run.values["x"]}, None)
store.close()
print(json.dumps(latencies))
"""


def run_agents(
    tmp_path: Path, location: str, sweep_id: str, agents: int, points: list, mode: str = "grid"
):
    barrier = tmp_path / f"barrier-{sweep_id}"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    argv = [
        sys.executable,
        "-c",
        AGENT,
        location,
        sweep_id,
        json.dumps(points),
        str(barrier),
        str(agents),
        mode,
    ]
    processes = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(agents)
    ]
    for process in processes:
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err


@pytest.mark.parametrize(("agents", "size"), [(3, 12), (8, 12), (3, 48), (8, 48)])
def test_concurrent_agents_get_every_grid_point_exactly_once(tmp_path, location, agents, size):
    points = [{"x": i, "opt": {"lr": 10.0 ** -(i % 4)}} for i in range(size)]
    with Store.open(location) as store:
        sweep_id = store.create_sweep({"method": "grid"})
        run_agents(tmp_path, location, sweep_id, agents, points)
        runs = store.runs(sweep_id)
    assert sorted((r.values for r in runs), key=lambda v: v["x"]) == points
    assert {r.state for r in runs} == {RunState.finished}
    assert len({r.agent.host for r in runs}) > 1  # they really did share the sweep


def test_concurrent_agents_stop_at_the_run_cap(tmp_path, location):
    with Store.open(location) as store:
        sweep_id = store.create_sweep({"method": "random", "run_cap": 20})
        run_agents(tmp_path, location, sweep_id, 3, [], mode="endless")
        runs = store.runs(sweep_id)
    assert sorted(r.values["x"] for r in runs) == list(range(20))


def test_the_servers_writer_drops_the_rows_of_a_run_no_longer_its(location):
    pytest.importorskip("sweeps", reason="the local sweep server needs the engine")
    from nbsweep.local.server import LocalSweepServer
    from nbsweep.options import StoreOptions
    from nbsweep.trial.metrics import MetricRecord

    store = Store.open(location)
    sweep_id = store.create_sweep({"method": "grid", "parameters": {"x": {"values": [1, 2]}}})
    # Another node's agent: reaped by heartbeat.
    server = LocalSweepServer(store, sweep_id, StoreOptions(agent_name="node-b"))
    try:
        [command] = server.heartbeat("agent", {})
        run_id = command["run_id"]
        server.record_metric(run_id, MetricRecord(0, {"loss": 1.0}, "nbsweep"))
        wait_until(  # written by the writer
            lambda: store.runs(sweep_id, with_history=True)[0].history, 10, interval=0.01
        )
        assert store.reap(sweep_id, requeue_crashed=True, heartbeat_grace=1e-9) == [run_id]
        writes = []
        real = store.log_metrics
        store.log_metrics = lambda *args: writes.append(args) or real(*args)  # a spy
        server.record_metric(run_id, MetricRecord(1, {"loss": 0.5}, "nbsweep"))
        time.sleep(0.5)  # scenario: time for a spinning writer to try again, and again
        assert len(writes) == 1, "refused once, then dropped: the writer does not spin"
        assert server.heartbeat("agent", {run_id: True}) == [{"type": "stop", "run_id": run_id}]
        assert store.runs(sweep_id, with_history=True)[0].history == []  # requeued: fresh
    finally:
        server.close()
