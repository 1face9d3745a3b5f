"""The embedded store's record of each key's last use (GetKeyLastUsage), written in batches by
:mod:`hsmkms.service.usage`: one upsert per key per batch, the later use winning, so that
processes sharing the store may flush in any order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hsmkms.store.base import KeyUsageRecord
from hsmkms.store.sqlite_connections import SQLiteConnections

# The migration that created key_usage: when it ran is when tracking began.
_USAGE_MIGRATION = 8


class SQLiteUsage(SQLiteConnections):
    def record_key_usage(self, uses: list[KeyUsageRecord]) -> None:
        if not uses:
            return
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO key_usage (key_id, operation, used_at, request_id, event_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id) DO UPDATE SET "
                "operation = excluded.operation, used_at = excluded.used_at, "
                "request_id = excluded.request_id, event_id = excluded.event_id "
                "WHERE excluded.used_at > key_usage.used_at",
                [
                    (u.key_id, u.operation, u.used_at.timestamp(), u.request_id, u.event_id)
                    for u in uses
                ],
            )

    def get_key_usage(self, key_id: str) -> KeyUsageRecord | None:
        rows = self._query("SELECT * FROM key_usage WHERE key_id = ?", (key_id,))
        return _usage(rows[0]) if rows else None

    def all_key_usage(self) -> list[KeyUsageRecord]:
        return [_usage(r) for r in self._query("SELECT * FROM key_usage ORDER BY key_id")]

    def get_usage_tracking_start(self) -> datetime:
        rows = self._query(
            "SELECT applied_at FROM schema_migrations WHERE version = ?", (_USAGE_MIGRATION,)
        )
        return datetime.fromtimestamp(rows[0][0], UTC)


def _usage(row: Any) -> KeyUsageRecord:
    return KeyUsageRecord(
        key_id=row["key_id"],
        operation=row["operation"],
        used_at=datetime.fromtimestamp(row["used_at"], UTC),
        request_id=row["request_id"],
        event_id=row["event_id"],
    )
