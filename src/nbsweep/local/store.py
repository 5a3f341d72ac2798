"""The store of local sweeps: sweeps, their runs and metric history, shared by agent
processes with no W&B server. An SQLite file serves one machine; a PostgreSQL database serves
any number.

The search engine is stateless (it derives the next run from the list of runs), so the store
*is* the sweep's state. Every hand-out is one write transaction holding the store's write lock
(``BEGIN IMMEDIATE``; an advisory lock on PostgreSQL): reap runs whose agent is gone, claim a
pending run, else ask the engine for a new one and insert it. Agents queue on that one lock,
so no two of them ever get the same grid point. SQLite's locks are only trustworthy on a
local disk, so an SQLite file on a network file system is refused.

Only a run's holder writes to it: heartbeats, history and the result name the agent. Whether
a holder is gone is judged by its process where it can be (an agent of this machine: alive,
it holds its run however old its heartbeat), else by its heartbeat, written and read on the
store's clock (PostgreSQL's: one clock for every machine). A lost
PostgreSQL connection is reopened with backoff and the call retried; each write is safe to
repeat (history rows carry their place in the run, and a retried hand-out takes back the run
the lost attempt may have claimed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from nbsweep.errors import (
    StoreDisconnected,
    StoreError,
    StoreLocked,
    StoreUnreachable,
    UsageError,
)
from nbsweep.local.database import (
    UPGRADES,
    Postgres,
    Sqlite,
    without_password,
)
from nbsweep.local.filesystems import network_file_system, read_mounts
from nbsweep.options import RECONNECT_TIMEOUT_ENV, StoreOptions, is_url
from nbsweep.processes import AgentIdentity
from nbsweep.status import ENDED_STATES, RunState, SweepState

SCHEMA_VERSION = 3
HAND_OUT_ATTEMPTS = 3  # hand_out survives this many busy timeouts in a row, minus one
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
    error: str | None = None  # why it failed or was stopped, in one line (secrets redacted)
    # Rows as logged plus ``_step`` and ``_timestamp`` (W&B's names); only when asked for.
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SweepRecord:
    sweep_id: str
    config: dict[str, Any]
    state: SweepState
    created_at: float
    name: str | None


@dataclass(frozen=True)
class KeyHistory:
    """One logged key's values in a stretch of a sweep's history rows."""

    last_row: int
    """The number of the last row read (the next stretch starts after it)."""
    rows_read: int
    """Rows read, whether or not they logged the key: fewer than asked for means no more."""
    values: list[tuple[str, int, Any]]
    """``(run_id, step, value)`` for the rows that logged the key, oldest first."""


@dataclass(frozen=True)
class LoggedRow:
    """One history row as its agent recorded it."""

    n: int  # its place among the run's rows, from 0
    step: int
    logged_at: float
    values: dict[str, Any]


Propose = Callable[[list[RunRecord]], dict[str, Any] | None]
P = ParamSpec("P")
T = TypeVar("T")


def _reconnecting(method: Callable[P, T]) -> Callable[P, T]:
    """Run ``method`` (one transaction) again after reopening a lost connection."""

    @functools.wraps(method)
    def again(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0]
        assert isinstance(store, Store)
        retried = False
        while True:
            try:
                result = method(*args, **kwargs)
            except StoreDisconnected as error:
                store._reconnect(error, retried)
                retried = True
                continue
            store._back()
            return result

    return again


class Store:
    """One open store (an SQLite file or a PostgreSQL database); its methods may be called
    from several threads, one at a time."""

    def __init__(
        self, database: Sqlite | Postgres, path: Path | str, options: StoreOptions
    ) -> None:
        self._db = database
        self.path = path
        """The file, or the database's URL without its password."""
        self.options = options
        """Its timeouts, and the name of this machine's agents (whose PIDs it may check)."""
        self._thread_lock = threading.RLock()
        self.read_only = False
        self.reconnect_timeout = options.reconnect_timeout
        """Seconds a lost database server is waited for before StoreUnreachable."""
        self.on_retry: Callable[[str], None] | None = None
        """Told, in a line, when the connection is lost and when it is back."""
        self._down_since: float | None = None
        self._stop_waiting = threading.Event()

    @classmethod
    def open_for_reading(cls, path: Path | str, options: StoreOptions | None = None) -> Store:
        """The store at ``path`` to read: as ``open`` where it may be written (a reader also
        reaps dead agents' runs), else read-only and taken as it is (a finished sweep on a
        read-only share): nothing is written, and ``reap`` does nothing."""
        options = options or StoreOptions(location=path)
        if is_url(path):
            return cls.open(path, options)
        path = Path(path)
        _refuse_folder(path)
        if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
            return cls.open(path, options)
        store = cls(Sqlite.open_immutable(path), path, options)
        store.read_only = True
        try:
            with store._transaction("DEFERRED") as db:
                store._check_schema(db)
            store._db.opened()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(
        cls,
        path: Path | str,
        options: StoreOptions | None = None,
        *,
        busy_timeout: float | None = None,
    ) -> Store:
        """Open or create the store at ``path`` (a file, or a ``postgresql://`` URL); refuses
        damaged, newer and network-file-system stores. ``options``: its timeouts and agent
        name (default: ``StoreOptions``' defaults; the CLI's come from
        ``StoreOptions.from_environment``); ``busy_timeout`` overrides theirs."""
        options = options or StoreOptions(location=path)
        if busy_timeout is not None:
            options = dataclasses.replace(options, busy_timeout=busy_timeout)
        busy_timeout = options.busy_timeout
        if is_url(path):
            url = str(path)
            store = cls(Postgres.open(url, busy_timeout), without_password(url), options)
        else:
            path = Path(path)
            _refuse_folder(path)
            refuse_network_file_system(path.resolve(), read_mounts())  # before creating anything
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(
                    f"cannot create the folder of sweep store {str(path)!r}: {error.strerror}; "
                    "choose another path"
                ) from None
            store = cls(Sqlite.open(path, busy_timeout), path, options)
        try:
            store._prepare()
            store._db.opened()
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

    @_reconnecting
    def create_sweep(self, config: dict[str, Any], name: str | None = None) -> str:
        with self._transaction() as db:
            sweep_id = self._unused_id("sweeps", "sweep_id")
            db.execute(
                "INSERT INTO sweeps VALUES (?, ?, 'running', ?, ?)",
                (sweep_id, json.dumps(config), time.time(), name),
            )
        return sweep_id

    @_reconnecting
    def sweep(self, sweep_id: str) -> SweepRecord:
        with self._transaction("DEFERRED"):
            return _sweep_from_row(self._require_sweep(sweep_id))

    @_reconnecting
    def sweeps(self) -> list[SweepRecord]:
        with self._transaction("DEFERRED") as db:
            rows = db.execute("SELECT * FROM sweeps ORDER BY created_at, sweep_id").fetchall()
        return [_sweep_from_row(row) for row in rows]

    @_reconnecting
    def set_sweep_state(self, sweep_id: str, state: SweepState | str) -> list[str]:
        """Set the sweep's state (W&B's: paused hands nothing out until resumed; finished and
        canceled hand nothing out again); canceled also flags its running runs to stop.
        Returns the runs so flagged. Ended sweeps stay ended: resuming one is a UsageError."""
        try:
            state = SweepState(state)
        except ValueError:
            known = ", ".join(known.value for known in SweepState)
            raise UsageError(f"unknown sweep state {state!r}; use one of {known}") from None
        with self._transaction() as db:
            current = SweepState(self._require_sweep(sweep_id)["state"])
            if current.ended and not state.ended:
                verb = "resumed" if state is SweepState.RUNNING else "paused"
                raise UsageError(f"sweep {sweep_id} is {current}: it cannot be {verb}")
            db.execute("UPDATE sweeps SET state = ? WHERE sweep_id = ?", (state.value, sweep_id))
            if state is not SweepState.CANCELED:
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
        heartbeat_grace: float | None = None,
    ) -> RunRecord | None:
        """The next run for ``agent``, already marked running, or None when the sweep has none.

        In one write transaction: reap lost runs (see ``reap``); claim the oldest pending run;
        else, unless the sweep is finished or has ``run_cap`` runs, call ``propose`` with every
        run of the sweep (with history) and insert its values as a new run (None from it:
        nothing left). ``propose`` runs inside the lock so that no two agents get the same
        point: import the engine before the first call. A busy lock is retried with backoff;
        a lost connection is reopened, and the retry first takes back a run the lost attempt
        claimed for ``agent`` (its commit may have landed unacknowledged).
        """
        attempt = 0
        lost_attempt_at: float | None = None
        while True:
            started = time.time()
            try:
                with self._transaction():
                    run = self._hand_out_locked(
                        sweep_id,
                        agent,
                        propose,
                        requeue_crashed,
                        self.options.heartbeat_timeout
                        if heartbeat_grace is None
                        else heartbeat_grace,
                        lost_attempt_at,
                    )
            except StoreLocked:
                attempt += 1
                if attempt >= HAND_OUT_ATTEMPTS:
                    raise
                time.sleep(0.1 * 2**attempt)
                continue
            except StoreDisconnected as error:
                self._reconnect(error, lost_attempt_at is not None)
                lost_attempt_at = lost_attempt_at or started
                continue
            self._back()
            return run

    @_reconnecting
    def reap(
        self,
        sweep_id: str,
        *,
        requeue_crashed: bool = False,
        heartbeat_grace: float | None = None,
    ) -> list[str]:
        """End the sweep's lost runs; returns their ids.

        A running run is lost when its agent is of this machine and dead (PID gone or
        reused), or of another machine and silent: its heartbeat older than
        ``heartbeat_grace`` seconds by the store's clock. It becomes crashed, or pending
        again with ``requeue_crashed`` (same id and values, history cleared), or stopped when
        a stop was requested for it. A pending run whose stop was requested becomes stopped.
        """
        if self.read_only:
            return []
        with self._transaction():
            self._require_sweep(sweep_id)
            return self._reap_locked(
                sweep_id,
                time.time(),
                requeue_crashed,
                self.options.heartbeat_timeout if heartbeat_grace is None else heartbeat_grace,
                self.options.agent_name,
            )

    # The holding agent's writes. Each returns False when the run is no longer ``agent``'s
    # to write (reaped and requeued, handed to another, or ended), so that it can give the
    # trial up.

    @_reconnecting
    def heartbeat(self, run_id: str, agent: AgentIdentity) -> bool:
        with self._transaction("HOLDER"):
            return self._touch(run_id, agent)

    @_reconnecting
    def log_metrics(self, run_id: str, agent: AgentIdentity, rows: Sequence[LoggedRow]) -> bool:
        """Append history rows; a row already written (same ``n``) is skipped. Like
        ``finish``, a run the reaper marked crashed takes its holder's rows."""
        with self._transaction("HOLDER") as db:
            if not self._touch(run_id, agent, (RunState.running, RunState.crashed)):
                return False
            db.execute_many(
                "INSERT INTO history (run_id, step, logged_at, metrics, n)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(run_id, row.step, row.logged_at, json.dumps(row.values), row.n) for row in rows],
            )
        return True

    @_reconnecting
    def finish(
        self,
        run_id: str,
        agent: AgentIdentity,
        state: RunState,
        summary: dict[str, Any],
        notebook: str | None,
        error: str | None = None,
    ) -> bool:
        """Record the run's end, and ``error``: why it did not finish. A run the reaper
        marked crashed is accepted too: its agent was alive after all, and its real result
        beats the reaper's guess."""
        if state not in ENDED_STATES:
            raise ValueError(f"finish needs an ended state, not {state!r}")
        now = time.time()
        with self._transaction("HOLDER") as db:
            changed = db.execute(
                "UPDATE runs SET state = ?, summary = ?, notebook = ?, error = ?, finished_at = ?,"
                f" heartbeat_at = {db.now} WHERE run_id = ? AND state IN ('running', 'crashed')"
                f" AND {_HELD_BY}",
                (
                    RunState(state).value,
                    json.dumps(summary),
                    notebook,
                    error,
                    now,
                    run_id,
                    *_holder(agent),
                ),
            ).rowcount
            if not changed:
                self._require_run(run_id)
        return bool(changed)

    @_reconnecting
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

    @_reconnecting
    def stop_requested(self, run_id: str) -> bool:
        with self._transaction("DEFERRED"):
            return bool(self._require_run(run_id)["stop_requested"])

    @_reconnecting
    def runs(self, sweep_id: str, *, with_history: bool = False) -> list[RunRecord]:
        """The sweep's runs in creation order."""
        with self._transaction("DEFERRED"):
            self._require_sweep(sweep_id)
            return self._select_runs(sweep_id, with_history)

    @_reconnecting
    def run(self, run_id: str, *, with_history: bool = False) -> RunRecord:
        """One run, with its history rows in the order they were logged if asked."""
        with self._transaction("DEFERRED"):
            run = _run_from_row(self._require_run(run_id))
            if with_history:
                for row in self._db.execute(
                    f"SELECT * FROM history WHERE run_id = ? ORDER BY {self._db.history_order}",
                    (run_id,),
                ):
                    run.history.append(_history_row(row))
            return run

    @_reconnecting
    def key_history(self, sweep_id: str, key: str, after: int, limit: int) -> KeyHistory:
        """``key``'s values in at most ``limit`` of the sweep's history rows written after the
        row numbered ``after`` (0: from the first), oldest first: a viewer asks again after
        ``last_row``. Rows are numbered as written, and writes are serialised, so none is
        skipped. Only the key's values are kept: a chart of a thousand runs reads a hundred
        thousand rows."""
        with self._transaction("DEFERRED"):
            self._require_sweep(sweep_id)
            order = self._db.history_order
            rows = self._db.execute(
                f"SELECT {order} AS row_number, history.run_id, step, metrics FROM history"
                f" JOIN runs USING (run_id) WHERE sweep_id = ? AND {order} > ?"
                f" ORDER BY {order} LIMIT ?",
                (sweep_id, after, limit),
            ).fetchall()
        # raw_decode skips json.loads's checks, a third of its time per row; the store's own
        # json.dumps wrote these texts, with nothing around the object.
        decode = _DECODER.raw_decode
        values = []
        for row in rows:
            value = decode(row["metrics"])[0].get(key)
            if value is not None:
                values.append((row["run_id"], row["step"], value))
        last_row = rows[-1]["row_number"] if rows else after
        return KeyHistory(last_row, len(rows), values)

    # Inside a transaction

    def _hand_out_locked(
        self,
        sweep_id: str,
        agent: AgentIdentity,
        propose: Propose,
        requeue: bool,
        grace: float,
        lost_attempt_at: float | None,
    ) -> RunRecord | None:
        sweep = _sweep_from_row(self._require_sweep(sweep_id))
        now = time.time()
        if lost_attempt_at is not None:
            claimed = self._db.execute(
                f"SELECT run_id FROM runs WHERE sweep_id = ? AND state = 'running' AND {_HELD_BY}"
                " AND started_at >= ? ORDER BY seq LIMIT 1",
                (sweep_id, *_holder(agent), lost_attempt_at),
            ).fetchone()
            if claimed is not None:
                return _run_from_row(self._require_run(claimed["run_id"]))
        self._reap_locked(sweep_id, now, requeue, grace, agent.host)
        holder = (*_holder(agent), now)
        if sweep.state is not SweepState.RUNNING:  # paused, or ended: nothing new, nothing requeued
            return None
        pending = self._db.execute(
            "SELECT run_id FROM runs WHERE sweep_id = ? AND state = 'pending'"
            " AND stop_requested = 0 ORDER BY seq LIMIT 1",
            (sweep_id,),
        ).fetchone()
        if pending is not None:
            self._db.execute(
                "UPDATE runs SET state = 'running', agent_host = ?, agent_pid = ?,"
                f" agent_started = ?, started_at = ?, heartbeat_at = {self._db.now}"
                " WHERE run_id = ?",
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
            f" VALUES (?, ?, 'running', ?, ?, ?, ?, ?, {self._db.now}, ?, '{{}}')",
            (run_id, sweep_id, json.dumps(values), *holder, now),
        )
        return _run_from_row(self._require_run(run_id))

    def _reap_locked(
        self, sweep_id: str, now: float, requeue: bool, grace: float, here: str
    ) -> list[str]:
        reaped = []
        # Heartbeats are written and judged on the store's clock (judged_at): on PostgreSQL
        # the server's, one for every machine, so that an agent whose clock is ahead by more
        # than the grace does not find every live run silent.
        for row in self._db.execute(
            f"SELECT *, {self._db.now} AS judged_at FROM runs WHERE sweep_id = ?"
            " AND state IN ('running', 'pending') ORDER BY seq",
            (sweep_id,),
        ).fetchall():
            if row["state"] == RunState.pending:
                lost = bool(row["stop_requested"])  # never to be run
            elif (agent := _agent_from_row(row)) is not None and agent.host == here:
                # This machine's agent: its process says for sure where a heartbeat only
                # suggests (on SQLite each agent stamps its own clock, which may be stepped).
                lost = not agent.is_alive(here)
            else:
                heartbeat = row["heartbeat_at"]
                lost = heartbeat is None or heartbeat < row["judged_at"] - grace
            if lost and self._end_lost_run(row, now, requeue):
                reaped.append(row["run_id"])
        return reaped

    def _end_lost_run(self, row: Any, now: float, requeue: bool) -> bool:
        """End the run as read in ``row``; False when it changed since (a PostgreSQL holder
        writes its own row without the store's lock: a heartbeat just landed, or the end)."""
        unchanged = f"run_id = ? AND state = ? AND heartbeat_at {self._db.same_as} ?"
        read = (row["run_id"], row["state"], row["heartbeat_at"])
        if requeue and not row["stop_requested"]:
            changed = self._db.execute(
                "UPDATE runs SET state = 'pending', agent_host = NULL, agent_pid = NULL,"
                " agent_started = NULL, started_at = NULL, heartbeat_at = NULL,"
                f" summary = '{{}}', notebook = NULL, error = NULL WHERE {unchanged}",
                read,
            ).rowcount
            if changed:  # a fresh start: hyperband counts history rows, so the lost attempt's go
                self._db.execute("DELETE FROM history WHERE run_id = ?", (row["run_id"],))
            return bool(changed)
        state = RunState.stopped if row["stop_requested"] else RunState.crashed
        return bool(
            self._db.execute(
                f"UPDATE runs SET state = ?, finished_at = ? WHERE {unchanged}",
                (state.value, now, *read),
            ).rowcount
        )

    def _touch(
        self, run_id: str, agent: AgentIdentity, states: tuple[RunState, ...] = (RunState.running,)
    ) -> bool:
        placeholders = ", ".join("?" for _ in states)
        changed = self._db.execute(
            f"UPDATE runs SET heartbeat_at = {self._db.now} WHERE run_id = ?"
            f" AND state IN ({placeholders}) AND {_HELD_BY}",
            (run_id, *(state.value for state in states), *_holder(agent)),
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
                runs[row["run_id"]].history.append(_history_row(row))
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
            found = self._check_schema(db)
            if found < SCHEMA_VERSION:  # in place, in this one transaction: all or nothing
                for version in range(found, SCHEMA_VERSION):
                    for statement in UPGRADES[version]:
                        db.execute(statement)
                db.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
                )

    def _check_schema(self, db: Sqlite | Postgres) -> int:
        """The store's schema version, if this nbsweep can read it."""
        if "meta" not in db.tables():
            kind = "an SQLite file" if isinstance(db, Sqlite) else "a database"
            raise StoreError(
                f"{str(self.path)!r} is {kind} but not an nbsweep sweep store; choose another path"
            )
        version = int(
            db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"sweep store {str(self.path)!r} has schema version {version}, newer than "
                f"this nbsweep reads ({SCHEMA_VERSION}); upgrade nbsweep"
            )
        return version

    def _reconnect(self, lost: StoreDisconnected, retried: bool) -> None:
        """Reopen the connection, with backoff; StoreUnreachable once the server has been
        away for ``reconnect_timeout`` seconds (counted from the first loss). ``retried``:
        this call lost its connection before, after a reconnect that worked."""
        if not isinstance(self._db, Postgres):
            raise lost
        reason, delay = str(lost), 0.05
        with self._thread_lock:
            if self._down_since is None:
                self._down_since = time.monotonic()
                if self.on_retry is not None:
                    self.on_retry(f"{lost}; reconnecting")
            down_since = self._down_since
            if retried:
                # A server that takes connections but drops each call (a proxy in front of
                # a dead one) must not be retried for ever. A new call tries once first.
                self._give_up_if_due(down_since, reason)
            if self._db.usable():
                return  # another thread has reconnected since this call lost its connection
            while True:
                try:
                    self._db.reconnect()
                except StoreError as error:
                    reason = str(error)
                else:
                    if self.on_retry is not None:
                        self.on_retry(f"sweep store {str(self.path)!r} is back")
                    return
                self._give_up_if_due(down_since, reason)
                self._stop_waiting.wait(delay)
                delay = min(delay * 2, 2.0)

    def _give_up_if_due(self, down_since: float, reason: str) -> None:
        if self._stop_waiting.is_set():
            raise StoreUnreachable(
                f"sweep store {str(self.path)!r} unreachable ({reason}); stopped waiting for "
                "it, as told"
            )
        if time.monotonic() - down_since >= self.reconnect_timeout:
            raise StoreUnreachable(
                f"sweep store {str(self.path)!r} unreachable for over "
                f"{self.reconnect_timeout:g}s ({reason}); start the agent again once it is "
                f"back (or raise {RECONNECT_TIMEOUT_ENV})"
            )

    def _back(self) -> None:
        with self._thread_lock:
            self._down_since = None

    def stop_waiting(self) -> None:
        """Have a wait for a lost server (now or later) end at once with StoreUnreachable."""
        self._stop_waiting.set()

    @contextlib.contextmanager
    def _transaction(self, mode: str = "IMMEDIATE") -> Iterator[Sqlite | Postgres]:
        """IMMEDIATE: a write, which holds the store's write lock from its start, so a write
        never fails half-way for want of it; DEFERRED is for reads, which never wait.
        HOLDER: a run's holder writing its own row; the store's lock on SQLite (its only
        lock), row locks on PostgreSQL: heartbeats of many agents do not queue behind
        hand-outs (the reaper re-checks the row it ends)."""
        with self._thread_lock, self._translated_errors():
            try:
                # Inside the try: a lock timeout at BEGIN must roll back too, else a
                # PostgreSQL connection is left in a failed transaction.
                self._db.begin(write=mode != "DEFERRED", serialised=mode == "IMMEDIATE")
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


def _refuse_folder(path: Path) -> None:
    # SQLite says only "unable to open database file" of a folder.
    if path.is_dir():
        raise StoreError(
            f"sweep store {str(path)!r} is a folder; pass a file in it, such as "
            f"{str(path / 'sweeps.db')!r}"
        )


_HELD_BY = "agent_host = ? AND agent_pid = ? AND agent_started = ?"


def _holder(agent: AgentIdentity) -> tuple[str, int, float]:
    return (agent.host, agent.pid, agent.started)


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
        # A read-only store is read as it is, perhaps from before version 3. (``in`` on an
        # sqlite3.Row looks at its values, not its names.)
        error=row["error"] if "error" in row.keys() else None,  # noqa: SIM118
    )


_DECODER = json.JSONDecoder()


def _history_row(row: Any) -> dict[str, Any]:
    """A history row as logged plus ``_step`` and ``_timestamp`` (W&B's names)."""
    return {**json.loads(row["metrics"]), "_step": row["step"], "_timestamp": row["logged_at"]}


def _sweep_from_row(row: Any) -> SweepRecord:
    return SweepRecord(
        **{name: row[name] for name in ("sweep_id", "created_at", "name")},
        state=SweepState(row["state"]),
        config=json.loads(row["config"]),
    )
