"""The embedded store's custom key stores (portable SQL, as the rest)."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from hsmkms.store.base import KeyRecord, StoreError
from hsmkms.store.records import CustomKeyStoreRecord
from hsmkms.store.sqlite_connections import SQLiteConnections
from hsmkms.store.sqlite_rows import _key

_COLUMNS = [f.name for f in fields(CustomKeyStoreRecord)]


def _record(row: Any) -> CustomKeyStoreRecord:
    values = {c: row[c] for c in _COLUMNS}
    values["created_at"] = datetime.fromtimestamp(values["created_at"], UTC)
    return CustomKeyStoreRecord(**values)


class SQLiteKeyStores(SQLiteConnections):
    def create_custom_key_store(self, record: CustomKeyStoreRecord) -> None:
        values = [getattr(record, c) for c in _COLUMNS]
        values[_COLUMNS.index("created_at")] = record.created_at.timestamp()
        with self._tx() as conn:
            conn.execute(
                f"INSERT INTO custom_key_stores ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                values,
            )

    def get_custom_key_store(self, store_id: str) -> CustomKeyStoreRecord | None:
        rows = self._query("SELECT * FROM custom_key_stores WHERE store_id = ?", (store_id,))
        return _record(rows[0]) if rows else None

    def list_custom_key_stores(self, account_id: str, region: str) -> list[CustomKeyStoreRecord]:
        rows = self._query(
            "SELECT * FROM custom_key_stores WHERE account_id = ? AND region = ? "
            "ORDER BY created_at, store_id",
            (account_id, region),
        )
        return [_record(r) for r in rows]

    def update_custom_key_store(self, store_id: str, **changes: object) -> CustomKeyStoreRecord:
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown custom key store columns: {unknown}")
        with self._tx() as conn:
            if changes:
                conn.execute(
                    f"UPDATE custom_key_stores SET {', '.join(f'{c} = ?' for c in changes)} "
                    "WHERE store_id = ?",
                    (*changes.values(), store_id),
                )
            row = conn.execute(
                "SELECT * FROM custom_key_stores WHERE store_id = ?", (store_id,)
            ).fetchone()
        if row is None:
            raise StoreError(f"custom key store {store_id} vanished during update")
        return _record(row)

    def delete_custom_key_store(self, store_id: str) -> bool:
        with self._tx() as conn:
            deleted = conn.execute(
                "DELETE FROM custom_key_stores WHERE store_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM keys WHERE custom_key_store_id = ?)",
                (store_id, store_id),
            ).rowcount
        return bool(deleted)

    def keys_in_custom_key_store(self, store_id: str) -> list[KeyRecord]:
        rows = self._query(
            "SELECT * FROM keys WHERE custom_key_store_id = ? ORDER BY key_id", (store_id,)
        )
        return [_key(r) for r in rows]
