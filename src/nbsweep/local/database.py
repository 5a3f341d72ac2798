"""The two databases a local sweep store can live in, behind one small interface: SQLite (a
file, one machine) and PostgreSQL (a server, any number of machines). ``Store`` holds every
rule; this module only speaks each dialect: connecting, transactions and their lock, the
schema's types, its clock, listing tables, and turning driver errors into one-line errors.
Statements are written once, with ``?`` placeholders.

The errors, by exit code::

    StoreError (UsageError, 2)   the path or URL never was a usable store
    StoreFault (1)               a store that was fine broke while in use: deleted, replaced,
                                 damaged, refusing statements
    StoreDisconnected (1)        the connection to the server was lost (the store reconnects)
    StoreUnreachable (1)         ... and stayed lost for longer than the reconnect timeout
    StoreLocked (1)              another process held the write lock too long
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from nbsweep.errors import (
    NbsweepError,
    StoreDisconnected,
    StoreError,
    StoreFault,
    StoreLocked,
    UsageError,
)
from nbsweep.notebook.redaction import url_passwords

# Every write transaction on PostgreSQL takes this advisory lock first, so writes are
# serialised as SQLite's BEGIN IMMEDIATE serialises them: one hand-out at a time.
_WRITE_LOCK = 0x6E627377  # "nbsw"
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_NOTADB = 5, 6, 11, 26

HISTORY_ONCE = "CREATE UNIQUE INDEX history_once ON history (run_id, n)"
SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE sweeps (sweep_id TEXT PRIMARY KEY, config TEXT NOT NULL,
        state TEXT NOT NULL, created_at {real} NOT NULL, name TEXT)""",
    # seq is the creation order; "values" is an SQL keyword, hence run_values.
    """CREATE TABLE runs (seq {serial}, run_id TEXT NOT NULL UNIQUE,
        sweep_id TEXT NOT NULL REFERENCES sweeps (sweep_id), state TEXT NOT NULL,
        run_values TEXT NOT NULL, agent_host TEXT, agent_pid INTEGER, agent_started {real},
        created_at {real} NOT NULL, started_at {real}, finished_at {real},
        heartbeat_at {real}, summary TEXT NOT NULL, notebook TEXT,
        stop_requested INTEGER NOT NULL DEFAULT 0, error TEXT)""",
    "CREATE INDEX runs_by_sweep ON runs (sweep_id, state)",
    # n: the row's place in its run, as the agent counted; a write retried after a lost
    # connection may arrive twice, and the second is ignored.
    """CREATE TABLE history ({history_seq}run_id TEXT NOT NULL REFERENCES runs (run_id),
        step INTEGER NOT NULL, logged_at {real} NOT NULL, metrics TEXT NOT NULL, n INTEGER)""",
    "CREATE INDEX history_by_run ON history (run_id)",
    HISTORY_ONCE,
)
"""One schema for both; each database fills in its types. JSON columns are TEXT: JSON as
Python writes it holds NaN and the infinities, real metric values."""
UPGRADES = {
    1: ("ALTER TABLE history ADD COLUMN n INTEGER", HISTORY_ONCE),
    2: ("ALTER TABLE runs ADD COLUMN error TEXT",),
}
"""Statements that take a store from the version it is keyed by to the next. Version 2:
history rows are numbered (rows of version 1 have no n, and are never written again).
Version 3: a run has why it failed or stopped (runs ended before have none)."""


def without_password(url: str) -> str:
    """The URL to show: the password (and any password= parameter) replaced by ***.

    Read from the raw text, not a URL parser: a password with an unencoded ``#``, ``?``,
    ``/`` or ``@`` would make a parser find no password at all, and print it."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials, host = rest.rsplit("@", 1)
        if ":" in credentials:
            rest = credentials.split(":", 1)[0] + ":***@" + host
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", f"{scheme}{sep}{rest}")


def _scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's message, which may quote the URL) with no secret of ``url``."""
    for secret in sorted(url_passwords(url), key=len, reverse=True):
        text = text.replace(secret, "***")
        decoded = unquote(secret)
        if decoded != secret:
            text = text.replace(decoded, "***")
    return text


class Sqlite:
    """One SQLite file in WAL mode; ``BEGIN IMMEDIATE`` is the write lock."""

    history_order = "history.rowid"
    same_as = "IS"  # equal, NULL to NULL too (IS NOT DISTINCT FROM needs SQLite 3.39)
    now = "nbsweep_now()"  # this machine's clock, in seconds, to the microsecond

    def __init__(self, connection: sqlite3.Connection, path: Path, busy_timeout: float) -> None:
        self.connection = connection
        self.connection.row_factory = sqlite3.Row
        self.connection.create_function("nbsweep_now", 0, time.time)
        self.path = path
        self.where = repr(str(path))
        self.busy_timeout = busy_timeout
        self._file: tuple[int, int] | None = None  # device and inode, once the store is sound

    @classmethod
    def open(cls, path: Path, busy_timeout: float) -> Sqlite:
        # An agent calls in from its event loop and from worker threads, one at a time:
        # the store serialises them, so the connection may cross threads.
        connection = sqlite3.connect(
            path, busy_timeout, isolation_level=None, check_same_thread=False
        )
        return cls(connection, path, busy_timeout)

    @classmethod
    def open_immutable(cls, path: Path) -> Sqlite:
        try:
            connection = sqlite3.connect(
                f"{path.resolve().as_uri()}?immutable=1", uri=True, check_same_thread=False
            )
        except sqlite3.Error as error:
            raise StoreError(f"cannot read sweep store {str(path)!r}: {error}") from None
        return cls(connection, path, 0.0)

    def prepare(self) -> None:
        mode = self.connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        # With WAL this cannot corrupt the file; a power cut may lose the last commits.
        self.connection.execute("PRAGMA synchronous = NORMAL")
        if mode != "wal":
            raise StoreError(
                f"sweep store {self.where} cannot use WAL mode; put it on a local disk"
            )

    def opened(self) -> None:
        """The store is open and sound: from now on a fault is the store's, not the path's."""
        stat = os.stat(self.path)
        self._file = (stat.st_dev, stat.st_ino)

    def _check_file(self) -> None:
        """StoreFault unless the path is still the file we opened, whole. SQLite cannot tell:
        it writes on to a deleted or replaced file, and serves the pages it holds in memory
        over damage on disk."""
        try:
            stat = os.stat(self.path)  # never open() it: see _first_page_readable
        except FileNotFoundError:
            raise StoreFault(f"sweep store {self.where} was deleted while in use") from None
        except OSError as error:
            raise StoreFault(f"cannot read sweep store {self.where}: {error.strerror}") from None
        if (stat.st_dev, stat.st_ino) != self._file:
            raise StoreFault(
                f"sweep store {self.where} was replaced by another file while in use; "
                "start the agents again to use it"
            )
        # Once in WAL mode the file always holds its first page (512 bytes at least).
        damage = "emptied" if stat.st_size < 512 else None
        if damage is None and not _first_page_readable(self.path):
            damage = "overwritten: no longer an SQLite file"
        if damage is not None:
            raise StoreFault(
                f"sweep store {self.where} was damaged while in use ({damage}); move it aside "
                "and start a new sweep"
            )

    def schema(self) -> list[str]:
        types = {"real": "REAL", "serial": "INTEGER PRIMARY KEY", "history_seq": ""}
        return [statement.format(**types) for statement in SCHEMA]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.connection.execute(sql, params)

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.connection.executemany(sql, rows)

    def tables(self) -> set[str]:
        return {row[0] for row in self.execute("SELECT name FROM sqlite_master")}

    def begin(self, write: bool, serialised: bool = True) -> None:
        """A write takes the file's write lock at BEGIN, so it never fails half-way for want
        of it (SQLite has no other lock: every write is serialised); a read needs no lock
        (WAL never blocks readers)."""
        if self._file is not None:
            self._check_file()
        self.execute("BEGIN IMMEDIATE" if write else "BEGIN DEFERRED")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        if self.connection.in_transaction:
            self.execute("ROLLBACK")

    def close(self) -> None:
        self.connection.close()

    def translate(self, error: Exception) -> NbsweepError | None:
        """The one-line error for a driver error; None for our own bugs (re-raised)."""
        if isinstance(error, (sqlite3.ProgrammingError, sqlite3.IntegrityError)):
            return None
        if not isinstance(error, sqlite3.DatabaseError):
            return None
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF  # Python 3.11+; else the text says
        text, where = str(error), self.where
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text:
            return StoreLocked(
                f"sweep store {where} stayed locked for over {self.busy_timeout:g}s; retry, or "
                f"look for a stuck process holding it (fuser {where})"
            )
        damaged = code in (_SQLITE_NOTADB, _SQLITE_CORRUPT) or bool(
            re.search("not a database|malformed", text)
        )
        if self._file is not None:  # it was a sound store when we opened it
            said = "was damaged while in use" if damaged else "failed while in use"
            return StoreFault(
                f"sweep store {where} {said} ({text}); check the disk, or move it aside and "
                "start a new sweep"
            )
        if damaged:
            return StoreError(
                f"{where} is not a readable sweep store ({text}); move it aside and nbsweep "
                "starts a new one"
            )
        return StoreError(
            f"cannot use sweep store {where}: {text}; check the disk and the file's permissions"
        )


class Postgres:
    """A PostgreSQL database (psycopg 3); an advisory lock serialises writes."""

    history_order = "history.seq"
    same_as = "IS NOT DISTINCT FROM"
    # The server's clock, in seconds: the one clock every machine's agents share.
    now = "extract(epoch FROM clock_timestamp())::float8"

    def __init__(self, connection: Any, url: str, busy_timeout: float) -> None:
        self.connection = connection
        self.url = url
        self.where = repr(without_password(url))
        self.busy_timeout = busy_timeout
        self._in_transaction = False
        self._opened = False

    def opened(self) -> None:
        """The store is open and sound: from now on a fault is the store's, not the URL's."""
        self._opened = True

    @classmethod
    def open(cls, url: str, busy_timeout: float) -> Postgres:
        return cls(_connect(url, busy_timeout), url, busy_timeout)

    def usable(self) -> bool:
        return not (self.connection.closed or self.connection.broken)

    def reconnect(self) -> None:
        """A new connection in place of a lost one; StoreError while the server is away."""
        with contextlib.suppress(Exception):
            self.connection.close()
        self._in_transaction = False
        self.connection = _connect(self.url, self.busy_timeout)

    def prepare(self) -> None:
        pass

    def schema(self) -> list[str]:
        types = {
            "real": "DOUBLE PRECISION",
            "serial": "BIGSERIAL PRIMARY KEY",
            "history_seq": "seq BIGSERIAL PRIMARY KEY, ",
        }
        return [statement.format(**types) for statement in SCHEMA]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.connection.execute(sql.replace("?", "%s"), tuple(params))

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), [tuple(row) for row in rows])

    def tables(self) -> set[str]:
        rows = self.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return {row[0] for row in rows}

    def begin(self, write: bool, serialised: bool = True) -> None:
        """``serialised`` writes take the store's one lock; others rely on row locks."""
        self.execute("BEGIN")
        self._in_transaction = True
        if write and serialised:
            self.execute("SELECT pg_advisory_xact_lock(?)", (_WRITE_LOCK,))

    def commit(self) -> None:
        self.execute("COMMIT")
        self._in_transaction = False

    def rollback(self) -> None:
        if self._in_transaction:
            self._in_transaction = False
            with contextlib.suppress(Exception):  # a dropped connection has nothing to undo
                self.execute("ROLLBACK")

    def close(self) -> None:
        self.connection.close()

    def translate(self, error: Exception) -> NbsweepError | None:
        import psycopg

        # Every statement names only the schema's tables: a missing one was dropped under us.
        dropped = getattr(error, "sqlstate", None) == "42P01"  # undefined_table
        if isinstance(error, (psycopg.ProgrammingError, psycopg.IntegrityError)) and not (
            dropped and self._opened
        ):
            return None
        if not isinstance(error, psycopg.Error):
            return None
        if isinstance(error, psycopg.OperationalError) and (
            self.connection.closed or self.connection.broken
        ):  # pg_terminate_backend, a server restart, a network cut
            return StoreDisconnected(
                f"lost the connection to sweep store {self.where}: "
                f"{_scrubbed(_first_line(error), self.url)}"
            )
        if getattr(error, "sqlstate", None) == "55P03":  # lock_not_available
            return StoreLocked(
                f"sweep store {self.where} stayed locked for over {self.busy_timeout:g}s; "
                "retry, or look for a stuck agent holding it (pg_stat_activity)"
            )
        said = _scrubbed(_first_line(error), self.url)
        if self._opened:
            return StoreFault(f"sweep store {self.where} failed while in use: {said}")
        return StoreError(f"cannot use sweep store {self.where}: {said}")


def _connect(url: str, busy_timeout: float) -> Any:
    try:
        import psycopg
    except ImportError:
        raise UsageError(
            "a PostgreSQL store needs psycopg: pip install 'nbsweep[postgres]'"
        ) from None
    connection = None
    try:
        connection = psycopg.connect(
            url,
            autocommit=True,
            row_factory=_row_factory,
            connect_timeout=max(1, round(busy_timeout)),
            application_name="nbsweep",
        )
        connection.execute(f"SET lock_timeout = '{int(busy_timeout * 1000)}ms'")
    except psycopg.Error as error:
        if connection is not None:
            connection.close()
        raise StoreError(
            f"cannot connect to sweep store {without_password(url)!r}: "
            f"{_scrubbed(_first_line(error), url)}; check the URL, the server and the password"
        ) from None
    return connection


def _first_page_readable(path: Path) -> bool:
    """Whether the file's first page, as on disk, is a database's. Read by a connection of
    SQLite's own: closing a plain open() of the file would drop every lock this process holds
    on it (POSIX), and another process would then delete the WAL under our connection. SQLite
    closes its own descriptor only once the process holds no lock on the file."""
    probe = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)  # no WAL
    try:
        # A header that counts pages a checkpoint is still writing is no damage.
        probe.execute("PRAGMA writable_schema = ON")
        probe.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError:
        return False
    finally:
        probe.close()
    return True


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class _Row(dict):
    """A row read by name, like sqlite3.Row, and by position."""

    def __init__(self, names: Sequence[str], values: Sequence[Any]) -> None:
        super().__init__(zip(names, values, strict=True))
        self._values = tuple(values)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return self._values[key]
        return super().__getitem__(key)


def _row_factory(cursor: Any) -> Any:
    names = [column.name for column in cursor.description or ()]
    return lambda values: _Row(names, values)
