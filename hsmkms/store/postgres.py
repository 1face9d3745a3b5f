"""The PostgreSQL store (``store = "postgresql://..."``): the embedded store's queries on the
connections of :mod:`hsmkms.store.postgres_connections`, for several nodes sharing one store.

Every public method is one transaction (or a read), so a method PostgreSQL aborted to keep
transactions serializable runs again whole (:func:`retrying`)."""

from __future__ import annotations

import inspect

from hsmkms.store.postgres_connections import PostgresConnections, retrying
from hsmkms.store.sqlite import SQLiteStore


class PostgresStore(PostgresConnections, SQLiteStore):  # type: ignore[misc]
    """The :class:`~hsmkms.store.base.Store` on PostgreSQL (psycopg 3, a connection pool)."""


for _name, _method in inspect.getmembers(SQLiteStore, inspect.isfunction):
    if not _name.startswith("_") and _name not in vars(PostgresConnections):
        setattr(PostgresStore, _name, retrying(_method))
