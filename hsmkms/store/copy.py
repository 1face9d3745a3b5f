"""``hsmkms store copy``: move a store to another backend (an embedded home's SQLite file to
PostgreSQL, or back) without loss.

Both stores are opened (and so migrated to the same schema) first; the destination must hold
no keys. Every table is copied row by row in one transaction of the destination, so an
interrupted copy leaves the destination as it was; then each table's rows are counted on both
sides. Leases are not copied (they name processes of the old store). The token is not touched:
the copy names the same token objects, so the store and the token must stay together (the
nodes of the new store use the token the old one did).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hsmkms.store.base import Store, StoreError

# In an order that satisfies the foreign keys (keys first).
TABLES = (
    "keys",
    "key_materials",
    "aliases",
    "tags",
    "deleted_keys",
    "grants",
    "import_parameters",
    "custom_key_stores",
    "domain_keys",  # the wrapped mode: the domain keys' states, and every material's wrap
    "wrapped_materials",
)


@dataclass(frozen=True)
class Copied:
    counts: dict[str, int]  # rows per table, equal on both sides


def copy_store(source: Store, destination: Store) -> Copied:
    src: Any = source
    dst: Any = destination
    if dst._query("SELECT COUNT(*) FROM keys")[0][0]:
        raise StoreError("the destination store already holds keys: copy into an empty store")
    counts: dict[str, int] = {}
    with dst._tx() as conn:
        for table in TABLES:
            rows = src._query(f"SELECT * FROM {table}")
            counts[table] = len(rows)
            if not rows:
                continue
            columns = list(rows[0].keys())
            marks = ", ".join("?" for _ in columns)
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                [tuple(_value(row[c]) for c in columns) for row in rows],
            )
        # When each migration first ran (migration 8's is when last-use tracking began).
        for version, applied in src._query("SELECT version, applied_at FROM schema_migrations"):
            conn.execute(
                "UPDATE schema_migrations SET applied_at = ? WHERE version = ?", (applied, version)
            )
    for table, count in counts.items():
        there = dst._query(f"SELECT COUNT(*) FROM {table}")[0][0]
        if there != count:
            raise StoreError(f"{table}: {count} rows read, {there} in the destination")
    # Last uses live beside a SQLite store (Store.usage_store): copied last, best kept.
    uses = source.usage_store().all_key_usage()
    destination.usage_store().record_key_usage(uses)
    counts["key_usage"] = len(uses)
    return Copied(counts)


def _value(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value
