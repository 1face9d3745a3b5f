"""The metadata store: keys, materials, aliases, tags. SQLite by default."""

from __future__ import annotations

from hsmkms.store.base import (
    AliasRecord,
    Conflict,
    KeyRecord,
    MaterialRecord,
    Store,
    StoreError,
)


def open_store(location: str) -> Store:
    """A store for ``location``: a SQLite file path (PostgreSQL URLs come later)."""
    if location.startswith(("postgres://", "postgresql://")):
        raise StoreError("the PostgreSQL store is not built yet: use a SQLite path")
    from hsmkms.store.sqlite import SQLiteStore

    return SQLiteStore(location)


__all__ = [
    "AliasRecord",
    "Conflict",
    "KeyRecord",
    "MaterialRecord",
    "Store",
    "StoreError",
    "open_store",
]
