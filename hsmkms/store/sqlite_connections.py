"""The embedded store's database: SQLite in WAL mode, synchronous=FULL so a commit is on disk on
return; its connections, transactions, schema migrations, and the classification of sqlite3's
errors into the store's (busy, full, unavailable, fault).

One connection per thread (sqlite3 connections are not shared across threads); several
processes share the file, serialised by SQLite's own locking with a busy timeout.

One more connection, which never writes, answers :meth:`SQLiteStore.change_marker` with
``PRAGMA data_version``: SQLite changes that value for every commit made on *another*
connection, so it moves for a commit by another process and for one by another thread of
this process alike (each thread writes on its own connection), and reading it reads no table.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from hsmkms.store.base import (
    Conflict,
    StoreBusy,
    StoreError,
    StoreFull,
    StoreUnavailable,
)
from hsmkms.store.migrations import MIGRATIONS

# SQLite's primary result codes (the low byte of the extended code sqlite3 errors carry).
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 10, 13, 14


class SQLiteConnections:
    """The connections of one SQLite store and how they fail;
    :class:`~hsmkms.store.sqlite.SQLiteStore` adds the queries."""

    def __init__(self, path: str, busy_timeout_s: float = 10.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # change_marker's connection, shared by every thread under its own lock, and how many
        # such connections were opened (a marker names the connection it was read on).
        self._marker_conn: sqlite3.Connection | None = None
        self._marker_opened = 0
        self._marker_lock = threading.Lock()
        if path != ":memory:" and not os.path.exists(path):
            # Create it private (0600) before SQLite does. Only a missing file: closing a
            # descriptor of a database this process has open through SQLite drops every POSIX
            # lock the process holds on it, and another process that closes its last connection
            # then deletes the WAL and shared-memory files under this one's feet ("disk I/O
            # error" on the next connection opened here).
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        self._migrate()

    # -- connections -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        """A new connection, remembered for :meth:`close`."""
        conn = None
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            # Close what was opened: a store that stays unreadable would otherwise cost
            # the process a few descriptors per request until it runs out.
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            raise self._failure(exc, f"open {self.path}") from None
        with self._lock:
            self._all.append(conn)
        return conn

    def change_marker(self) -> object:
        """A value that changes whenever a connection other than this store's marker
        connection commits (see :meth:`Store.change_marker`): ``PRAGMA data_version`` on a
        connection that never writes, paired with which such connection it is, so that a
        marker read after :meth:`close` never equals one read before."""
        if self.path == ":memory:":
            return object()  # every connection is a database of its own: nothing to watch
        with self._marker_lock:
            try:
                conn = self._marker_conn
                if conn is None:
                    conn = self._marker_conn = self._open()
                    self._marker_opened += 1
                row = conn.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error as exc:
                raise self._failure(exc, "read the change marker") from None
            return (self._marker_opened, row[0])

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; BEGIN IMMEDIATE takes the write lock up front (no upgrade
        deadlocks between processes), COMMIT makes it durable before we answer."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._failure(exc, "begin a write") from None
        try:
            yield conn
        except sqlite3.IntegrityError as exc:
            self._rollback(conn)
            raise Conflict(str(exc)) from None
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise self._failure(exc, "write") from None
        except BaseException:
            self._rollback(conn)
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise self._failure(exc, "commit") from None

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Undo what is left of a failed transaction. After SQLITE_FULL or an I/O error SQLite
        may have rolled back already, and a ROLLBACK then fails with "no transaction is
        active": that must not replace the error that says what went wrong."""
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _failure(self, exc: sqlite3.Error, doing: str) -> StoreError:
        """The store error for a sqlite3 error: busy, full and unreachable are conditions that
        pass (the operation layer answers them as retryable); the rest is a fault."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StoreBusy(
                f"could not {doing}: another writer held the store's lock for more than "
                f"{self.busy_timeout_s:g} s ({exc})"
            )
        if primary == _SQLITE_FULL:
            return StoreFull(f"could not {doing}: the disk of {self.path} is full ({exc})")
        if primary in (_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CANTOPEN):
            return StoreUnavailable(f"could not {doing}: {self.path} is not writable ({exc})")
        return StoreError(f"could not {doing}: {exc}")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._failure(exc, "read") from None

    def _migrate(self) -> None:
        with self._tx() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, datetime.now(UTC).timestamp()),
                )

    def close(self) -> None:
        with self._marker_lock:
            self._marker_conn = None  # closed below with the others
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
