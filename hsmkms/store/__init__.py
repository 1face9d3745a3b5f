"""The metadata store: keys, materials, aliases, tags, grants. SQLite by default."""

from __future__ import annotations

from hsmkms.store.base import (
    EXPIRING,
    SHARED_COLUMNS,
    AliasRecord,
    Conflict,
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
    """A store for ``location``: a SQLite file path (PostgreSQL URLs come later).

    ``busy_timeout``: seconds a write waits for another writer's lock before it fails with
    :class:`StoreBusy`."""
    if location.startswith(("postgres://", "postgresql://")):
        raise StoreError("the PostgreSQL store is not built yet: use a SQLite path")
    from hsmkms.store.sqlite import SQLiteStore

    return SQLiteStore(location, busy_timeout_s=busy_timeout)


__all__ = [
    "EXPIRING",
    "SHARED_COLUMNS",
    "AliasRecord",
    "Conflict",
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
