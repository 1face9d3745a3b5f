"""The metadata store: keys, materials, aliases, tags, grants. SQLite by default."""

from __future__ import annotations

from hsmkms.store.base import (
    EXPIRING,
    SHARED_COLUMNS,
    AliasRecord,
    Conflict,
    CustomKeyStoreRecord,
    GrantRecord,
    ImportParametersRecord,
    KeyRecord,
    KeyUsageRecord,
    MaterialRecord,
    StateChanged,
    Store,
    StoreBusy,
    StoreError,
    StoreFull,
    StoreUnavailable,
    key_ref,
)


def open_store(location: str, *, busy_timeout: float = 10.0) -> Store:
    """A store for ``location``: a SQLite file path (or ``sqlite:///path``), or a PostgreSQL
    URL (``postgresql://user@host:port/db``; the password from the URL, ``PGPASSWORD`` or
    ``~/.pgpass``, as libpq reads them).

    ``busy_timeout``: seconds a write waits for another writer's lock before it fails with
    :class:`StoreBusy`."""
    if location.startswith(("postgres://", "postgresql://")):
        from hsmkms.store.postgres import PostgresStore

        return PostgresStore(location, busy_timeout_s=busy_timeout)
    if location.startswith("sqlite:///"):
        location = location[len("sqlite://") :]
    from hsmkms.store.sqlite import SQLiteStore

    return SQLiteStore(location, busy_timeout_s=busy_timeout)


__all__ = [
    "EXPIRING",
    "SHARED_COLUMNS",
    "AliasRecord",
    "Conflict",
    "CustomKeyStoreRecord",
    "GrantRecord",
    "ImportParametersRecord",
    "KeyRecord",
    "KeyUsageRecord",
    "MaterialRecord",
    "StateChanged",
    "Store",
    "StoreBusy",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "key_ref",
    "open_store",
]
