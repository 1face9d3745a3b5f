"""The embedded store's queries for imported key material (Origin EXTERNAL): a material's
import, deletion and expiry, the rotation to NEW material, and the import parameters. A mixin
of :class:`~hsmkms.store.sqlite.SQLiteStore`, on its connections and row mapping."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from hsmkms.specs import ImportState, KeyState, RotationType
from hsmkms.store.base import (
    EXPIRING,
    ImportParametersRecord,
    KeyRecord,
    MaterialRecord,
    StateChanged,
)
from hsmkms.store.sqlite_connections import SQLiteConnections
from hsmkms.store.sqlite_rows import DELETING, _import_parameters, _key, _material


class _NotApplied(Exception):
    """A conditional write found its condition false: roll the transaction back."""


class SQLiteImports(SQLiteConnections):
    """The imported-material part of the :class:`~hsmkms.store.base.Store` interface, and
    the material insert every part shares."""

    @staticmethod
    def _insert_material(
        conn: sqlite3.Connection, m: MaterialRecord, due: datetime | None = None
    ) -> None:
        conn.execute(
            "INSERT INTO key_materials (material_id, key_id, created_at, rotation_type, "
            "rotation_due, public_key, sealed_private, import_state, pending_rotation, "
            "expiration_model, valid_to, description) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                m.material_id,
                m.key_id,
                m.created_at.timestamp(),
                m.rotation_type,
                None if due is None else due.timestamp(),
                m.public_key,
                m.sealed_private,
                m.import_state,
                int(m.pending_rotation),
                m.expiration_model,
                None if m.valid_to is None else m.valid_to.timestamp(),
                m.description,
            ),
        )

    @staticmethod
    def _key_in_state(conn: sqlite3.Connection, key_id: str, states: tuple[str, ...]) -> None:
        row = conn.execute("SELECT state FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            raise StateChanged(f"key {key_id} was deleted, not {states}")
        if row["state"] not in states:
            raise StateChanged(f"key {key_id} is {row['state']} now, not {states}")

    @staticmethod
    def _set_key(conn: sqlite3.Connection, key_id: str, **changes: object) -> sqlite3.Row:
        if changes:
            sets = ", ".join(f"{c} = ?" for c in changes)
            conn.execute(
                f"UPDATE keys SET {sets}, updated_at = ? WHERE key_id = ?",
                (*changes.values(), datetime.now(UTC).timestamp(), key_id),
            )
        row: sqlite3.Row = conn.execute("SELECT * FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        return row

    # -- imported material ---------------------------------------------------------------
    def put_imported_material(
        self,
        material: MaterialRecord,
        *,
        if_state: tuple[str, ...],
        state: str | None = None,
        make_current: bool = False,
    ) -> KeyRecord:
        m = material
        with self._tx() as conn:
            self._key_in_state(conn, m.key_id, if_state)
            cursor = conn.execute(
                "UPDATE key_materials SET import_state = ?, pending_rotation = ?, "
                "expiration_model = ?, valid_to = ?, description = ?, public_key = ? "
                "WHERE material_id = ? AND key_id = ?",
                (
                    m.import_state,
                    int(m.pending_rotation),
                    m.expiration_model,
                    None if m.valid_to is None else m.valid_to.timestamp(),
                    m.description,
                    m.public_key,
                    m.material_id,
                    m.key_id,
                ),
            )
            if cursor.rowcount == 0:
                self._insert_material(conn, m)
            changes: dict[str, object] = {}
            if state is not None:
                changes["state"] = state
            if make_current:
                changes["current_material_id"] = m.material_id
            row = self._set_key(conn, m.key_id, **changes)
        return _key(row)

    def remove_imported_material(
        self,
        key_id: str,
        material_id: str,
        *,
        if_state: tuple[str, ...],
        state: str | None,
        forget: bool,
    ) -> KeyRecord:
        with self._tx() as conn:
            self._key_in_state(conn, key_id, if_state)
            if forget:
                conn.execute(
                    "DELETE FROM key_materials WHERE material_id = ? AND key_id = ?",
                    (material_id, key_id),
                )
            else:
                conn.execute(
                    "UPDATE key_materials SET import_state = ?, valid_to = NULL "
                    "WHERE material_id = ? AND key_id = ?",
                    (ImportState.PENDING_IMPORT, material_id, key_id),
                )
            row = self._set_key(conn, key_id, **({"state": state} if state else {}))
        return _key(row)

    def list_expired_materials(self, now: datetime) -> list[MaterialRecord]:
        rows = self._query(
            "SELECT * FROM key_materials WHERE (import_state = ? AND valid_to <= ?) "
            "OR import_state = ? ORDER BY valid_to, material_id",
            (ImportState.IMPORTED, now.timestamp(), EXPIRING),
        )
        return [_material(r) for r in rows]

    def claim_expired_material(self, material_id: str, now: datetime) -> bool:
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE key_materials SET import_state = ? "
                "WHERE material_id = ? AND import_state = ? AND valid_to <= ?",
                (EXPIRING, material_id, ImportState.IMPORTED, now.timestamp()),
            )
            if cursor.rowcount != 1:
                return False
            conn.execute(
                "UPDATE keys SET state = ?, updated_at = ? WHERE key_id = "
                "(SELECT key_id FROM key_materials WHERE material_id = ?) "
                "AND state NOT IN (?, ?)",
                (
                    KeyState.PENDING_IMPORT,
                    datetime.now(UTC).timestamp(),
                    material_id,
                    KeyState.PENDING_DELETION,
                    DELETING,
                ),
            )
            return True

    def finish_expiry(self, material_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE key_materials SET import_state = ?, valid_to = NULL "
                "WHERE material_id = ? AND import_state = ?",
                (ImportState.PENDING_IMPORT, material_id, EXPIRING),
            )

    def rotate_to_imported(self, key_id: str, material_id: str, now: datetime, limit: int) -> bool:
        try:
            with self._tx() as conn:
                key = conn.execute("SELECT state FROM keys WHERE key_id = ?", (key_id,)).fetchone()
                count = conn.execute(
                    "SELECT COUNT(*) FROM key_materials WHERE key_id = ? AND rotation_type = ?",
                    (key_id, RotationType.ON_DEMAND),
                ).fetchone()[0]
                if key is None or key["state"] != KeyState.ENABLED or count >= limit:
                    raise _NotApplied
                cursor = conn.execute(
                    "UPDATE key_materials SET pending_rotation = 0, rotation_type = ?, "
                    "created_at = ? WHERE material_id = ? AND key_id = ? "
                    "AND pending_rotation = 1 AND import_state = ?",
                    (
                        RotationType.ON_DEMAND,
                        now.timestamp(),
                        material_id,
                        key_id,
                        ImportState.IMPORTED,
                    ),
                )
                if cursor.rowcount != 1:
                    raise _NotApplied
                self._set_key(conn, key_id, current_material_id=material_id)
        except _NotApplied:
            return False
        return True

    def add_import_parameters(self, parameters: ImportParametersRecord) -> None:
        p = parameters
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO import_parameters (import_id, key_id, wrapping_algorithm, "
                "wrapping_spec, public_key, created_at, expires_at, destroyed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    p.import_id,
                    p.key_id,
                    p.wrapping_algorithm,
                    p.wrapping_spec,
                    p.public_key,
                    p.created_at.timestamp(),
                    p.expires_at.timestamp(),
                    int(p.destroyed),
                ),
            )

    def get_import_parameters(self, import_id: str) -> ImportParametersRecord | None:
        rows = self._query("SELECT * FROM import_parameters WHERE import_id = ?", (import_id,))
        return _import_parameters(rows[0]) if rows else None

    def list_import_parameters_due(self, now: datetime) -> list[ImportParametersRecord]:
        rows = self._query(
            "SELECT * FROM import_parameters WHERE destroyed = 0 AND expires_at <= ? "
            "ORDER BY expires_at",
            (now.timestamp(),),
        )
        return [_import_parameters(r) for r in rows]

    def list_import_parameters_of(self, key_id: str) -> list[ImportParametersRecord]:
        rows = self._query(
            "SELECT * FROM import_parameters WHERE key_id = ? AND destroyed = 0", (key_id,)
        )
        return [_import_parameters(r) for r in rows]

    def mark_import_parameters_destroyed(self, import_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE import_parameters SET destroyed = 1 WHERE import_id = ?", (import_id,)
            )
