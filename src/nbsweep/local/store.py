"""The store of local sweeps: one SQLite file holding sweeps, their runs and metric history,
shared by the agent processes of one machine (no W&B server).

The search engine is stateless (it derives the next run from the list of runs), so this file
*is* the sweep's state. Every hand-out is one ``BEGIN IMMEDIATE`` transaction: reap runs whose
agent is gone, claim a pending run, else ask the engine for a new one and insert it. Agents
queue on that one write lock, so no two of them ever get the same grid point. SQLite's locks
are only trustworthy on a local disk, so a store on a network file system is refused: beyond
one machine, the distributed controller is a W&B server.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbsweep.errors import UsageError
from nbsweep.local.database import (
    Postgres,
    Sqlite,
    StoreError,
    StoreLocked,
    is_url,
    without_password,
)
from nbsweep.local.filesystems import network_file_system, read_mounts
from nbsweep.processes import AgentIdentity
from nbsweep.status import ENDED_STATES, RunState

SCHEMA_VERSION = 1
DEFAULT_BUSY_TIMEOUT = 10.0  # seconds one statement waits for another process's write lock
BUSY_TIMEOUT_ENV = "NBSWEEP_STORE_BUSY_TIMEOUT"
DEFAULT_HEARTBEAT_GRACE = 600.0  # seconds of silence before a running run counts as lost
HAND_OUT_ATTEMPTS = 3  # hand_out survives this many busy timeouts in a row, minus one
SWEEP_STATES = ("running", "paused", "finished", "canceled")
"""W&B's own: paused hands nothing out until resumed; finished (stopped, or its target
reached) and canceled hand nothing out again; canceled also stops its running runs."""
_ID_ALPHABET = string.ascii_lowercase + string.digits


@dataclass
class RunRecord:
    sweep_id: str
    run_id: str
    state: RunState
    values: dict[str, Any]  # the parameter values, nested dicts for nested parameters
    agent: AgentIdentity | None  # who holds or last held it; None while pending
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    summary: dict[str, Any]
    notebook: str | None  # the executed notebook's path
    stop_requested: bool
    # Rows as logged plus ``_step`` and ``_timestamp`` (W&B's names); only when asked for.
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SweepRecord:
    sweep_id: str
    config: dict[str, Any]
    state: str  # one of SWEEP_STATES
    created_at: float
    name: str | None


Propose = Callable[[list[RunRecord]], dict[str, Any] | None]


class Store:
    """One open store (an SQLite file or a PostgreSQL database); its methods may be called
    from several threads, one at a time."""

    def __init__(self, database: Sqlite | Postgres, path: Path | str, busy_timeout: float) -> None:
        self._db = database
        self.path = path
        """The file, or the database's URL without its password."""
        self._busy_timeout = busy_timeout
        self._thread_lock = threading.RLock()
        self.read_only = False

    @classmethod
    def open_for_reading(cls, path: Path) -> Store:
        """The store at ``path`` to read: as ``open`` where it may be written (a reader also
        reaps dead agents' runs), else read-only and taken as it is (a finished sweep on a
        read-only share): nothing is written, and ``reap`` does nothing."""
        if is_url(path):
            return cls.open(path)
        path = Path(path)
        if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
            return cls.open(path)
        store = cls(Sqlite.open_immutable(path), path, DEFAULT_BUSY_TIMEOUT)
        store.read_only = True
        try:
            with store._transaction("DEFERRED") as db:
                store._check_schema(db)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(cls, path: Path | str, *, busy_timeout: float | None = None) -> Store:
        """Open or create the store at ``path`` (a file, or a ``postgresql://`` URL); refuses
        damaged, newer and network-file-system stores. ``busy_timeout``: None reads
        ``NBSWEEP_STORE_BUSY_TIMEOUT`` (seconds), else 10."""
        if busy_timeout is None:
            busy_timeout = busy_timeout_from(os.environ)
        if is_url(path):
            url = str(path)
            store = cls(Postgres.open(url, busy_timeout), without_password(url), busy_timeout)
        else:
            path = Path(path)
            refuse_network_file_system(path.resolve(), read_mounts())  # before creating anything
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(
                    f"cannot create the folder of sweep store {str(path)!r}: {error.strerror}; "
                    "choose another path"
                ) from None
            store = cls(Sqlite.open(path, busy_timeout), path, busy_timeout)
        try:
            store._prepare()
        except BaseException:
            store.close()
            raise
        return store

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def create_sweep(self, config: dict[str, Any], name: str | None = None) -> str:
        with self._transaction() as db:
            sweep_id = self._unused_id("sweeps", "sweep_id")
            db.execute(
                "INSERT INTO sweeps VALUES (?, ?, 'running', ?, ?)",
                (sweep_id, json.dumps(config), time.time(), name),
            )
        return sweep_id

    def sweep(self, sweep_id: str) -> SweepRecord:
        with self._transaction("DEFERRED"):
            return _sweep_from_row(self._require_sweep(sweep_id))

    def sweeps(self) -> list[SweepRecord]:
        with self._transaction("DEFERRED") as db:
            rows = db.execute("SELECT * FROM sweeps ORDER BY created_at, sweep_id").fetchall()
        return [_sweep_from_row(row) for row in rows]

    def set_sweep_state(self, sweep_id: str, state: str) -> list[str]:
        """Set the sweep's state; canceled also flags its running runs to stop. Returns the
        runs so flagged. Ended sweeps stay ended: resuming one is a UsageError."""
        if state not in SWEEP_STATES:
            raise UsageError(f"unknown sweep state {state!r}; use one of {', '.join(SWEEP_STATES)}")
        with self._transaction() as db:
            current = self._require_sweep(sweep_id)["state"]
            if current in ("finished", "canceled") and state in ("running", "paused"):
                verb = "resumed" if state == "running" else "paused"
                raise UsageError(f"sweep {sweep_id} is {current}: it cannot be {verb}")
            db.execute("UPDATE sweeps SET state = ? WHERE sweep_id = ?", (state, sweep_id))
            if state != "canceled":
                return []
            live = "sweep_id = ? AND state IN ('running', 'pending')"
            rows = db.execute(f"SELECT run_id FROM runs WHERE {live}", (sweep_id,)).fetchall()
            db.execute(f"UPDATE runs SET stop_requested = 1 WHERE {live}", (sweep_id,))
            return [row["run_id"] for row in rows]

    def hand_out(
        self,
        sweep_id: str,
        agent: AgentIdentity,
        propose: Propose,
        *,
        requeue_crashed: bool = False,
        heartbeat_grace: float = DEFAULT_HEARTBEAT_GRACE,
    ) -> RunRecord | None:
        """The next run for ``agent``, already marked running, or None when the sweep has none.

        In one write transaction: reap lost runs (see ``reap``); claim the oldest pending run;
        else, unless the sweep is finished or has ``run_cap`` runs, call ``propose`` with every
        run of the sweep (with history) and insert its values as a new run (None from it:
        nothing left). ``propose`` runs inside the lock so that no two agents get the same
        point: import the engine before the first call. A busy lock is retried with backoff.
        """
        attempt = 0
        while True:
            try:
                with self._transaction():
                    return self._hand_out_locked(
                        sweep_id, agent, propose, requeue_crashed, heartbeat_grace
                    )
            except StoreLocked:
                attempt += 1
                if attempt >= HAND_OUT_ATTEMPTS:
                    raise
                time.sleep(0.1 * 2**attempt)

    def reap(
        self,
        sweep_id: str,
        *,
        requeue_crashed: bool = False,
        heartbeat_grace: float = DEFAULT_HEARTBEAT_GRACE,
    ) -> list[str]:
        """End the sweep's lost runs; returns their ids.

        A running run is lost when its agent is dead (this host: PID gone or reused) or its
        heartbeat is older than ``heartbeat_grace`` seconds. It becomes crashed, or pending
        again with ``requeue_crashed`` (same id and values, history cleared), or stopped when
        a stop was requested for it. A pending run whose stop was requested becomes stopped.
        """
        if self.read_only:
            return []
        with self._transaction():
            self._require_sweep(sweep_id)
            return self._reap_locked(sweep_id, time.time(), requeue_crashed, heartbeat_grace)

    # The owning agent's writes. Each returns False when the run is no longer its to write
    # (reaped, or ended), so that the agent can give the trial up.

    def heartbeat(self, run_id: str) -> bool:
        with self._transaction():
            return self._touch(run_id, time.time())

    def log_metrics(self, run_id: str, step: int, values: dict[str, Any]) -> bool:
        now = time.time()
        with self._transaction() as db:
            if not self._touch(run_id, now):
                return False
            db.execute(
                "INSERT INTO history (run_id, step, logged_at, metrics) VALUES (?, ?, ?, ?)",
                (run_id, step, now, json.dumps(values)),
            )
        return True

    def finish(
        self, run_id: str, state: RunState, summary: dict[str, Any], notebook: str | None
    ) -> bool:
        """Record the run's end. A run the reaper marked crashed is accepted too: its agent
        was alive after all, and its real result beats the reaper's guess."""
        if state not in ENDED_STATES:
            raise ValueError(f"finish needs an ended state, not {state!r}")
        now = time.time()
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE runs SET state = ?, summary = ?, notebook = ?, finished_at = ?,"
                " heartbeat_at = ? WHERE run_id = ? AND state IN ('running', 'crashed')",
                (RunState(state).value, json.dumps(summary), notebook, now, now, run_id),
            ).rowcount
            if not changed:
                self._require_run(run_id)
        return bool(changed)

    def request_stop(self, run_ids: Iterable[str]) -> None:
        """Flag the runs for their agents to stop; all or nothing when an id is unknown."""
        with self._transaction() as db:
            unknown = []
            for run_id in dict.fromkeys(run_ids):
                if not db.execute(
                    "UPDATE runs SET stop_requested = 1 WHERE run_id = ?", (run_id,)
                ).rowcount:
                    unknown.append(run_id)
            if unknown:
                raise UsageError(
                    f"no run {', '.join(unknown)} in {str(self.path)!r}; nothing was stopped"
                )

    def stop_requested(self, run_id: str) -> bool:
        with self._transaction("DEFERRED"):
            return bool(self._require_run(run_id)["stop_requested"])

    def runs(self, sweep_id: str, *, with_history: bool = False) -> list[RunRecord]:
        """The sweep's runs in creation order."""
        with self._transaction("DEFERRED"):
            self._require_sweep(sweep_id)
            return self._select_runs(sweep_id, with_history)

    # Inside a transaction

    def _hand_out_locked(
        self, sweep_id: str, agent: AgentIdentity, propose: Propose, requeue: bool, grace: float
    ) -> RunRecord | None:
        sweep = _sweep_from_row(self._require_sweep(sweep_id))
        now = time.time()
        self._reap_locked(sweep_id, now, requeue, grace)
        holder = (agent.host, agent.pid, agent.started, now, now)
        if sweep.state != "running":  # paused, or ended: nothing new, nothing requeued
            return None
        pending = self._db.execute(
            "SELECT run_id FROM runs WHERE sweep_id = ? AND state = 'pending'"
            " AND stop_requested = 0 ORDER BY seq LIMIT 1",
            (sweep_id,),
        ).fetchone()
        if pending is not None:
            self._db.execute(
                "UPDATE runs SET state = 'running', agent_host = ?, agent_pid = ?,"
                " agent_started = ?, started_at = ?, heartbeat_at = ? WHERE run_id = ?",
                (*holder, pending["run_id"]),
            )
            return _run_from_row(self._require_run(pending["run_id"]))
        runs = self._select_runs(sweep_id, with_history=True)
        cap = run_cap(sweep.config)
        if (cap is not None and len(runs) >= cap) or (values := propose(runs)) is None:
            return None
        run_id = self._unused_id("runs", "run_id")
        self._db.execute(
            "INSERT INTO runs (run_id, sweep_id, state, run_values, agent_host, agent_pid,"
            " agent_started, started_at, heartbeat_at, created_at, summary)"
            " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, '{}')",
            (run_id, sweep_id, json.dumps(values), *holder, now),
        )
        return _run_from_row(self._require_run(run_id))

    def _reap_locked(self, sweep_id: str, now: float, requeue: bool, grace: float) -> list[str]:
        reaped = []
        for row in self._db.execute(
            "SELECT * FROM runs WHERE sweep_id = ? AND state IN ('running', 'pending')"
            " ORDER BY seq",
            (sweep_id,),
        ).fetchall():
            if row["state"] == "pending":
                lost = bool(row["stop_requested"])  # never to be run
            else:
                agent, heartbeat = _agent_from_row(row), row["heartbeat_at"]
                dead = agent is not None and not agent.is_alive()
                lost = dead or heartbeat is None or heartbeat < now - grace
            if lost:
                self._end_lost_run(row, now, requeue)
                reaped.append(row["run_id"])
        return reaped

    def _end_lost_run(self, row: Any, now: float, requeue: bool) -> None:
        if requeue and not row["stop_requested"]:
            # A fresh start: hyperband counts history rows, so the lost attempt's must go.
            self._db.execute("DELETE FROM history WHERE run_id = ?", (row["run_id"],))
            self._db.execute(
                "UPDATE runs SET state = 'pending', agent_host = NULL, agent_pid = NULL,"
                " agent_started = NULL, started_at = NULL, heartbeat_at = NULL,"
                " summary = '{}', notebook = NULL WHERE run_id = ?",
                (row["run_id"],),
            )
            return
        state = RunState.stopped if row["stop_requested"] else RunState.crashed
        self._db.execute(
            "UPDATE runs SET state = ?, finished_at = ? WHERE run_id = ?",
            (state.value, now, row["run_id"]),
        )

    def _touch(self, run_id: str, now: float) -> bool:
        changed = self._db.execute(
            "UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND state = 'running'", (now, run_id)
        ).rowcount
        if not changed:
            self._require_run(run_id)
        return bool(changed)

    def _select_runs(self, sweep_id: str, with_history: bool) -> list[RunRecord]:
        rows = self._db.execute("SELECT * FROM runs WHERE sweep_id = ? ORDER BY seq", (sweep_id,))
        runs = {row["run_id"]: _run_from_row(row) for row in rows.fetchall()}
        if with_history:
            for row in self._db.execute(
                "SELECT history.* FROM history JOIN runs USING (run_id)"
                f" WHERE sweep_id = ? ORDER BY {self._db.history_order}",
                (sweep_id,),
            ):
                extra = {"_step": row["step"], "_timestamp": row["logged_at"]}
                runs[row["run_id"]].history.append({**json.loads(row["metrics"]), **extra})
        return list(runs.values())

    def _require_sweep(self, sweep_id: str) -> Any:
        row = self._db.execute("SELECT * FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone()
        if row is not None:
            return row
        known = [r["sweep_id"] for r in self._db.execute("SELECT sweep_id FROM sweeps")]
        listed = f"its sweeps are {', '.join(known)}" if known else "it has no sweeps yet"
        raise UsageError(f"no sweep {sweep_id!r} in {str(self.path)!r}; {listed}")

    def _require_run(self, run_id: str) -> Any:
        row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"no run {run_id!r} in {str(self.path)!r}; list the runs to see them")
        return row

    def _unused_id(self, table: str, column: str) -> str:
        # Called inside the write lock, so nobody can take the id between check and insert.
        while True:
            candidate = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
            query = f"SELECT 1 FROM {table} WHERE {column} = ?"
            if self._db.execute(query, (candidate,)).fetchone() is None:
                return candidate

    # Connection plumbing

    def _prepare(self) -> None:
        with self._translated_errors():
            self._db.prepare()
        with self._transaction() as db:
            if not db.tables():
                for statement in db.schema():
                    db.execute(statement)
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            self._check_schema(db)

    def _check_schema(self, db: Sqlite | Postgres) -> None:
        if "meta" not in db.tables():
            kind = "an SQLite file" if isinstance(db, Sqlite) else "a database"
            raise StoreError(
                f"{str(self.path)!r} is {kind} but not an nbsweep sweep store; "
                "choose another path"
            )
        version = int(
            db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"sweep store {str(self.path)!r} has schema version {version}, newer than "
                f"this nbsweep reads ({SCHEMA_VERSION}); upgrade nbsweep"
            )

    @contextlib.contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[Sqlite | Postgres]:
        """IMMEDIATE: a write, which holds the store's write lock from its start, so a write
        never fails half-way for want of it; DEFERRED is for reads, which never wait."""
        with self._thread_lock, self._translated_errors():
            self._db.begin(write=mode == "IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            translated = self._db.translate(error)
            if translated is None:
                raise  # our own bugs, and nbsweep's errors, not the driver's
            raise translated from None


def busy_timeout_from(environ: Mapping[str, str]) -> float:
    """``NBSWEEP_STORE_BUSY_TIMEOUT``: how long a statement waits for another's write lock."""
    text = environ.get(BUSY_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_BUSY_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageError(f"{BUSY_TIMEOUT_ENV}={text!r} is not a number of seconds above 0")
    return value


def run_cap(config: dict[str, Any]) -> int | None:
    """The sweep's ``run_cap``. Like W&B's it counts every run ever created in the sweep,
    whatever its state: crashed and stopped runs use it up (a re-queued run counts once)."""
    cap = config.get("run_cap")
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None


def refuse_network_file_system(path: Path, mounts: str) -> None:
    file_system = network_file_system(path, mounts)
    if file_system is not None:
        raise StoreError(
            f"sweep store {str(path)!r} is on a network file system ({file_system}), where "
            "SQLite's locks are unreliable; the local store is for one machine: put it on a "
            "local disk, or run the sweep on a W&B server (cloud or self-hosted) to use "
            "several machines"
        )


def _agent_from_row(row: Any) -> AgentIdentity | None:
    if row["agent_pid"] is None:
        return None
    return AgentIdentity(row["agent_host"], row["agent_pid"], row["agent_started"])


def _run_from_row(row: Any) -> RunRecord:
    same_names = ("sweep_id", "run_id", "created_at", "started_at", "finished_at", "heartbeat_at")
    return RunRecord(
        **{name: row[name] for name in (*same_names, "notebook")},
        state=RunState(row["state"]),
        values=json.loads(row["run_values"]),
        agent=_agent_from_row(row),
        summary=json.loads(row["summary"]),
        stop_requested=bool(row["stop_requested"]),
    )


def _sweep_from_row(row: Any) -> SweepRecord:
    return SweepRecord(
        **{name: row[name] for name in ("sweep_id", "state", "created_at", "name")},
        config=json.loads(row["config"]),
    )
