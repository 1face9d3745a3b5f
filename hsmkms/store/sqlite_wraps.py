"""The embedded store's wrapped materials and domain keys (portable SQL, as the rest)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from hsmkms.store.sqlite_connections import SQLiteConnections
from hsmkms.store.wraps import (
    ACTIVE,
    DESTROYED,
    RETIRED,
    RETIRING,
    DomainKeyRecord,
    Rewrap,
    WrappedMaterialRecord,
)

_WRAP_COLUMNS = (
    "material_id, key_id, spec, key_use, domain_id, mechanism, wrapped, public_key, created_at"
)


def _wrap(row: Any) -> WrappedMaterialRecord:
    return WrappedMaterialRecord(
        material_id=row["material_id"],
        key_id=row["key_id"],
        spec=row["spec"],
        use=row["key_use"],
        domain_id=row["domain_id"],
        mechanism=row["mechanism"],
        wrapped=bytes(row["wrapped"]),
        public_key=None if row["public_key"] is None else bytes(row["public_key"]),
        created_at=datetime.fromtimestamp(row["created_at"], UTC),
    )


class SQLiteWraps(SQLiteConnections):
    def domain_keys(self) -> list[DomainKeyRecord]:
        rows = self._query(
            "SELECT * FROM domain_keys WHERE state <> ? ORDER BY created_at, domain_id",
            (DESTROYED,),
        )
        return [
            DomainKeyRecord(
                r["domain_id"], r["state"], datetime.fromtimestamp(r["created_at"], UTC)
            )
            for r in rows
        ]

    def add_domain_key(self, domain_id: str, created_at: datetime, *, first: bool = False) -> bool:
        with self._tx() as conn:
            if first:
                active = conn.execute(
                    "SELECT 1 FROM domain_keys WHERE state = ? LIMIT 1", (ACTIVE,)
                ).fetchone()
                if active is not None:
                    return False
            conn.execute("UPDATE domain_keys SET state = ? WHERE state = ?", (RETIRING, ACTIVE))
            conn.execute(
                "INSERT INTO domain_keys (domain_id, state, created_at) VALUES (?, ?, ?)",
                (domain_id, ACTIVE, created_at.timestamp()),
            )
        return True

    def set_domain_key_state(self, domain_id: str, state: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE domain_keys SET state = ? WHERE domain_id = ?", (state, domain_id))

    def retire_domain_key(self, domain_id: str) -> bool:
        with self._tx() as conn:
            changed = conn.execute(
                "UPDATE domain_keys SET state = ? WHERE domain_id = ? AND state = ? "
                "AND NOT EXISTS (SELECT 1 FROM wrapped_materials WHERE domain_id = ?)",
                (RETIRED, domain_id, RETIRING, domain_id),
            ).rowcount
        return bool(changed)

    def put_wrap(self, wrap: WrappedMaterialRecord) -> bool:
        with self._tx() as conn:
            added = conn.execute(
                f"INSERT INTO wrapped_materials ({_WRAP_COLUMNS}) "
                "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS "
                "(SELECT 1 FROM domain_keys WHERE domain_id = ? AND state = ?)",
                (
                    wrap.material_id, wrap.key_id, wrap.spec, wrap.use, wrap.domain_id,
                    wrap.mechanism, wrap.wrapped, wrap.public_key, wrap.created_at.timestamp(),
                    wrap.domain_id, ACTIVE,
                ),
            ).rowcount  # fmt: skip
        return bool(added)

    def get_wrap(self, material_id: str) -> WrappedMaterialRecord | None:
        rows = self._query("SELECT * FROM wrapped_materials WHERE material_id = ?", (material_id,))
        return _wrap(rows[0]) if rows else None

    def delete_wrap(self, material_id: str) -> bool:
        with self._tx() as conn:
            deleted = conn.execute(
                "DELETE FROM wrapped_materials WHERE material_id = ?", (material_id,)
            ).rowcount
        return bool(deleted)

    def wraps(
        self, *, after: str = "", limit: int = 1000, domain_id: str | None = None
    ) -> list[WrappedMaterialRecord]:
        if domain_id is None:
            rows = self._query(
                "SELECT * FROM wrapped_materials WHERE material_id > ? "
                "ORDER BY material_id LIMIT ?",
                (after, limit),
            )
        else:
            rows = self._query(
                "SELECT * FROM wrapped_materials WHERE domain_id = ? AND material_id > ? "
                "ORDER BY material_id LIMIT ?",
                (domain_id, after, limit),
            )
        return [_wrap(r) for r in rows]

    def count_wraps(self, domain_id: str | None = None) -> int:
        if domain_id is None:
            rows = self._query("SELECT COUNT(*) AS n FROM wrapped_materials")
        else:
            rows = self._query(
                "SELECT COUNT(*) AS n FROM wrapped_materials WHERE domain_id = ?", (domain_id,)
            )
        return int(rows[0]["n"])

    def rewrap(self, moves: Sequence[Rewrap]) -> int:
        if not moves:
            return 0
        applied = 0
        with self._tx() as conn:
            for move in moves:
                applied += conn.execute(
                    "UPDATE wrapped_materials SET domain_id = ?, mechanism = ?, wrapped = ? "
                    "WHERE material_id = ? AND domain_id = ?",
                    (
                        move.new_domain, move.mechanism, move.wrapped, move.material_id,
                        move.old_domain,
                    ),
                ).rowcount  # fmt: skip
        return applied


__all__ = ["ACTIVE", "DESTROYED", "RETIRED", "RETIRING", "SQLiteWraps"]
