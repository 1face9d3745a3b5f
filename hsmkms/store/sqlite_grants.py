"""The embedded store's tags and grants of key records (a record's ref, store/base.py key_ref)."""

from __future__ import annotations

import json
from typing import Any

from hsmkms.store.base import GrantRecord
from hsmkms.store.sqlite_connections import SQLiteConnections
from hsmkms.store.sqlite_rows import _grant


class SQLiteGrants(SQLiteConnections):
    # -- tags --------------------------------------------------------------------------
    def get_tags(self, key_id: str) -> dict[str, str]:
        rows = self._query(
            "SELECT tag_key, tag_value FROM tags WHERE key_id = ? ORDER BY tag_key", (key_id,)
        )
        return {r[0]: r[1] for r in rows}

    def set_tags(self, key_id: str, tags: dict[str, str]) -> None:
        with self._tx() as conn:
            for k, v in tags.items():
                conn.execute("DELETE FROM tags WHERE key_id = ? AND tag_key = ?", (key_id, k))
                conn.execute(
                    "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?, ?, ?)",
                    (key_id, k, v),
                )

    def remove_tags(self, key_id: str, tag_keys: list[str]) -> None:
        with self._tx() as conn:
            conn.executemany(
                "DELETE FROM tags WHERE key_id = ? AND tag_key = ?",
                [(key_id, k) for k in tag_keys],
            )

    # -- grants ------------------------------------------------------------------------
    def create_grant(self, grant: GrantRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO grants (grant_id, key_id, name, grantee_principal, "
                "retiring_principal, issuing_account, operations, grant_constraints, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    grant.grant_id,
                    grant.key_id,
                    grant.name,
                    grant.grantee_principal,
                    grant.retiring_principal,
                    grant.issuing_account,
                    json.dumps(list(grant.operations)),
                    json.dumps(grant.constraints, sort_keys=True),
                    grant.created_at.timestamp(),
                ),
            )

    def get_grant(self, grant_id: str) -> GrantRecord | None:
        rows = self._query("SELECT * FROM grants WHERE grant_id = ?", (grant_id,))
        return _grant(rows[0]) if rows else None

    def list_grants(
        self, key_id: str, after: str | None, limit: int, grantee: str | None = None
    ) -> list[GrantRecord]:
        sql = "SELECT * FROM grants WHERE key_id = ? AND grant_id > ?"
        args: tuple[Any, ...] = (key_id, after or "")
        if grantee is not None:
            sql += " AND grantee_principal = ?"
            args += (grantee,)
        rows = self._query(sql + " ORDER BY grant_id LIMIT ?", (*args, limit))
        return [_grant(r) for r in rows]

    def grants_for_grantees(self, key_id: str, grantees: list[str]) -> list[GrantRecord]:
        if not grantees:
            return []
        marks = ", ".join("?" for _ in grantees)
        rows = self._query(
            f"SELECT * FROM grants WHERE key_id = ? AND grantee_principal IN ({marks}) "
            "ORDER BY grant_id",
            (key_id, *grantees),
        )
        return [_grant(r) for r in rows]

    def grants_named(self, key_id: str, name: str) -> list[GrantRecord]:
        rows = self._query(
            "SELECT * FROM grants WHERE key_id = ? AND name = ? ORDER BY grant_id",
            (key_id, name),
        )
        return [_grant(r) for r in rows]

    def retirable_grants(
        self, retiring_principal: str, after: str | None, limit: int
    ) -> list[GrantRecord]:
        rows = self._query(
            "SELECT * FROM grants WHERE retiring_principal = ? AND grant_id > ? "
            "ORDER BY grant_id LIMIT ?",
            (retiring_principal, after or "", limit),
        )
        return [_grant(r) for r in rows]

    def delete_grant(self, grant_id: str) -> bool:
        with self._tx() as conn:
            cursor = conn.execute("DELETE FROM grants WHERE grant_id = ?", (grant_id,))
            return cursor.rowcount > 0
