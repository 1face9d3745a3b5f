"""The PostgreSQL store's database: a psycopg 3 connection pool, transactions, migrations, and
the classification of PostgreSQL's errors into the store's.

The queries are the embedded store's (:mod:`hsmkms.store.sqlite` and its mixins keep their SQL
portable); this module gives them connections that speak it: ``?`` placeholders become
``%s``, rows answer by index and by column name as sqlite3's do, and the schema's REAL and
BLOB become DOUBLE PRECISION and BYTEA.

Every write transaction runs at SERIALIZABLE isolation, so that a store method's reads and
writes are one step against every other node's, as SQLite's single writer makes them: the
conditional writes, the counts checked before an insert (ten on-demand rotations at most),
the last record of a multi-Region key taking its materials. A transaction PostgreSQL aborts
for that (serialization failure 40001, deadlock 40P01) has changed nothing, so the whole store
method runs again after a jittered backoff (:func:`retrying`), a few times, then answers
:class:`StoreBusy`. Invariants are constraints as well (primary keys, the unique index of a
material's rotation due date).

A PostgreSQL that is down, or slower than ``busy_timeout`` (the pool's wait, the statement
timeout), answers :class:`StoreBusy`, which the operation layer answers
DependencyTimeoutException; the pool checks a connection before lending it, so a node
recovers by itself once PostgreSQL is back.

The change marker is a change counter and the transactions in flight: statement triggers on
every table but ``key_usage`` and ``leases`` draw from the sequence ``store_changes`` (a
sequence never waits and never aborts a transaction), and the marker is its last value with
the ids of the transactions the server's snapshot shows in flight. A write that began before
a marker was read moves the in-flight set when it ends; one that begins after moves the
counter: either way the next marker differs, while a batch of last-use times (or a lease
renewed) changes nothing that a cache holds, and moves the marker only if it happens to be in
flight at the instant a marker is read.
"""

from __future__ import annotations

import functools
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from hsmkms.store.base import Conflict, StoreBusy, StoreError, StoreUnavailable, redacted
from hsmkms.store.migrations import MIGRATIONS

F = TypeVar("F", bound=Callable[..., Any])
# Serialization failures and deadlocks: the transaction changed nothing; run it again.
_RETRY_STATES = frozenset({"40001", "40P01"})
# SERIALIZABLE's predicate locks cover pages, so writes to different keys abort each other
# too (the bench's TagResource over 128 keys at c=8 lost 8 races in a row now and then): more
# attempts, with a backoff that grows to ~50 ms.
_ATTEMPTS = 16
_DIALECT = ((re.compile(r"\bREAL\b"), "DOUBLE PRECISION"), (re.compile(r"\bBLOB\b"), "BYTEA"))


class _Retry(Exception):
    """A transaction PostgreSQL aborted to keep transactions serializable."""


class Row(tuple):  # type: ignore[type-arg]
    """A row by index or by column name, as sqlite3.Row answers."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = [c.name for c in cursor.description or ()]
    index = {n: i for i, n in enumerate(names)}
    return lambda values: Row(values, index)


def _sql(statement: str) -> str:
    return statement.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A psycopg connection that takes the portable SQL of the queries."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.raw.execute(_sql(sql), tuple(args))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self.raw.cursor() as cur:
                cur.executemany(_sql(sql), rows)


def retrying(method: F) -> F:
    """Run a store method again, after a jittered backoff, while PostgreSQL aborts its
    transaction to keep transactions serializable (it changed nothing)."""

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(_ATTEMPTS):
            try:
                return method(self, *args, **kwargs)
            except _Retry:
                time.sleep(random.uniform(0, min(0.05, 0.002 * 2**attempt)))
        raise StoreBusy(
            f"{method.__name__} lost {_ATTEMPTS} races in a row to other writers; retry"
        )

    return run  # type: ignore[return-value]


class PostgresConnections:
    """The connections of one PostgreSQL store and how they fail."""

    def __init__(self, url: str, busy_timeout_s: float = 10.0, pool_size: int = 8) -> None:
        self.path = redacted(url)
        self.busy_timeout_s = busy_timeout_s
        self._closed = False
        self._lock = threading.Lock()
        timeout_ms = int(busy_timeout_s * 1000)
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            timeout=busy_timeout_s,
            open=False,
            check=ConnectionPool.check_connection,
            kwargs={
                "autocommit": True,
                "row_factory": _row_factory,
                "options": f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}",
                "connect_timeout": max(1, int(busy_timeout_s)),
            },
            name="hsmkms-store",
        )
        try:
            self._pool.open(wait=True, timeout=busy_timeout_s)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreBusy(
                f"could not connect to {self.path} within {busy_timeout_s:g} s"
            ) from exc
        self._migrate()

    # -- connections -------------------------------------------------------------------
    @contextmanager
    def _connection(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise StoreBusy(
                f"could not {doing}: no connection to {self.path} within "
                f"{self.busy_timeout_s:g} s (is PostgreSQL up?)"
            ) from None

    def change_marker(self) -> object:
        with self._connection("read the change marker") as conn:
            try:
                row = conn.execute(
                    "SELECT (SELECT last_value FROM store_changes)::text || ':' || "
                    "array_to_string(ARRAY(SELECT x FROM "
                    "pg_snapshot_xip(pg_current_snapshot()) AS x ORDER BY x), ',')"
                ).fetchone()
            except psycopg.Error as exc:
                raise self._failure(exc, "read the change marker") from None
        return row[0] if row else object()

    @contextmanager
    def _tx(self) -> Iterator[_Connection]:
        """A serializable write transaction, committed (durably: synchronous_commit) before
        the store method returns; aborted for serializability, it raises :class:`_Retry`."""
        with self._connection("write") as conn:
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                    yield _Connection(conn)
            except psycopg.IntegrityError as exc:
                raise Conflict(str(exc).splitlines()[0]) from None
            except psycopg.Error as exc:
                if getattr(exc, "sqlstate", None) in _RETRY_STATES:
                    raise _Retry() from None
                raise self._failure(exc, "write") from None

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._connection("read") as conn:
            try:
                return conn.execute(_sql(sql), args).fetchall()
            except psycopg.Error as exc:
                raise self._failure(exc, "read") from None

    def _failure(self, exc: psycopg.Error, doing: str) -> StoreError:
        """Timeouts and a lost server pass (retryable); disk full and read-only do not
        change anything either; the rest is a fault."""
        state = getattr(exc, "sqlstate", None) or ""
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, psycopg.OperationalError) or state in ("57014", "55P03"):
            return StoreBusy(f"could not {doing}: {self.path} did not answer in time ({first})")
        if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
            return StoreBusy(f"could not {doing}: {self.path} is unreachable ({first})")
        if state in ("53100", "25006"):  # disk full, read-only transaction (a standby)
            return StoreUnavailable(f"could not {doing}: {self.path} cannot write ({first})")
        return StoreError(f"could not {doing}: {first}")

    def _migrate(self) -> None:
        """Apply what is missing, one node at a time (an advisory lock while migrating)."""
        with self._connection("migrate") as conn:
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(7368017)")  # 'hsmkms' migrations
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                    )
                    done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
                    for version, statements in enumerate(MIGRATIONS, start=1):
                        if version in done:
                            continue
                        for statement in statements:
                            for pattern, replacement in _DIALECT:
                                statement = pattern.sub(replacement, statement)
                            conn.execute(statement)  # type: ignore[call-overload]
                        conn.execute(
                            "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                            (version, datetime.now(UTC).timestamp()),
                        )
                    for statement in _change_counter():
                        conn.execute(statement)  # type: ignore[call-overload]
            except psycopg.Error as exc:
                raise self._failure(exc, "migrate") from None

    def usage_store(self) -> Any:
        """This store: last uses go to its key_usage table, whose writes move no change
        marker (no trigger on it; see :meth:`change_marker`)."""
        return self

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.close()


# The tables whose changes a cache of key records must see (not key_usage, not leases).
_WATCHED = (
    "keys",
    "key_materials",
    "aliases",
    "tags",
    "grants",
    "deleted_keys",
    "import_parameters",
    "custom_key_stores",
)


def _change_counter() -> list[str]:
    """The change counter's sequence, function and statement triggers (idempotent: run at
    every start, after the migrations, so that a table a later migration adds is watched)."""
    out = [
        "CREATE SEQUENCE IF NOT EXISTS store_changes",
        "CREATE OR REPLACE FUNCTION store_changed() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM nextval('store_changes'); RETURN NULL; END $$",
    ]
    for table in _WATCHED:
        out.append(  # only where missing: no lock on a table other nodes write to
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger "
            f"WHERE tgname = '{table}_changed') THEN "
            f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION store_changed(); END IF; END $$"
        )
    return out
