"""The embedded store's queries: :class:`SQLiteStore`, the :class:`~hsmkms.store.base.Store`
operations as SQL, on the connections of :mod:`hsmkms.store.sqlite_connections` with the row
mapping of :mod:`hsmkms.store.sqlite_rows`.

The SQL is kept portable (no SQLite-only types or upserts beyond the standard) for the
PostgreSQL backend. Key states and rotation types are bound as parameters from the enums of
:mod:`hsmkms.specs`, never spelled in the SQL (the plans are those of the literals: an index
equality either way).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsmkms.specs import KeyState, RotationType
from hsmkms.store.base import (
    SHARED_COLUMNS,
    AliasRecord,
    Conflict,
    KeyRecord,
    LeaseRecord,
    MaterialRecord,
    StateChanged,
    Store,
    StoreError,
    key_ref,
)
from hsmkms.store.sqlite_connections import SQLiteConnections
from hsmkms.store.sqlite_grants import SQLiteGrants
from hsmkms.store.sqlite_imports import SQLiteImports, _NotApplied
from hsmkms.store.sqlite_keystores import SQLiteKeyStores
from hsmkms.store.sqlite_rows import (
    _KEY_COLUMNS,
    DELETING,
    _alias,
    _key,
    _material,
    _to_sql,
    bare_key_id,
)
from hsmkms.store.sqlite_usage import SQLiteUsage
from hsmkms.store.sqlite_wraps import SQLiteWraps

# A multi-Region key's primary record among its records (a single-Region key's one record).
_PRIMARY = "(primary_region IS NULL OR region = primary_region)"


class SQLiteStore(
    SQLiteGrants,
    SQLiteKeyStores,
    SQLiteUsage,
    SQLiteImports,
    SQLiteWraps,
    SQLiteConnections,
    Store,
):
    """The embedded :class:`~hsmkms.store.base.Store`, on one SQLite file (and the last uses
    of keys on a second one beside it, :meth:`usage_store`)."""

    _usage: SQLiteStore | None = None

    def usage_store(self) -> Store:
        """``<name>.usage<suffix>`` beside the store's file: a commit there leaves this file's
        ``PRAGMA data_version``, which every process's cache watches, as it was."""
        if self.path == ":memory:":
            return self
        if self._usage is None:
            path = Path(self.path)
            self._usage = SQLiteStore(
                str(path.with_name(f"{path.stem}.usage{path.suffix}")), self.busy_timeout_s
            )
        return self._usage

    def close(self) -> None:
        if self._usage is not None:
            self._usage.close()
        super().close()

    # -- keys --------------------------------------------------------------------------
    def create_key(
        self, key: KeyRecord, material: MaterialRecord | None, tags: dict[str, str]
    ) -> None:
        with self._tx() as conn:
            self._insert_key(conn, key, tags)
            if material is not None:
                self._insert_material(conn, material)

    @staticmethod
    def _insert_key(conn: Any, key: KeyRecord, tags: dict[str, str]) -> None:
        cols = ", ".join(_KEY_COLUMNS)
        marks = ", ".join("?" for _ in _KEY_COLUMNS)
        values = [_to_sql(c, getattr(key, c)) for c in _KEY_COLUMNS]
        values[_KEY_COLUMNS.index("key_id")] = key.ref
        conn.execute(
            f"INSERT INTO keys ({cols}, family, updated_at) VALUES ({marks}, ?, ?)",
            (*values, key.key_id, key.created_at.timestamp()),
        )
        conn.executemany(
            "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?, ?, ?)",
            [(key.ref, k, v) for k, v in tags.items()],
        )

    def create_replica(self, replica: KeyRecord, tags: dict[str, str]) -> None:
        with self._tx() as conn:
            self._insert_key(conn, replica, tags)

    def get_key(self, key_id: str) -> KeyRecord | None:
        if key_id.startswith("mrk-") and "~" not in key_id:
            rows = self._query(
                f"SELECT * FROM keys WHERE family = ? ORDER BY {_PRIMARY} DESC, region LIMIT 1",
                (key_id,),
            )
        else:
            rows = self._query("SELECT * FROM keys WHERE key_id = ?", (key_id,))
        return _key(rows[0]) if rows else None

    def keys_in_family(self, key_id: str) -> list[KeyRecord]:
        rows = self._query(
            "SELECT * FROM keys WHERE family = ? ORDER BY region", (bare_key_id(key_id),)
        )
        return [_key(r) for r in rows]

    def set_primary_region(self, key_id: str, region: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE keys SET primary_region = ?, updated_at = ? WHERE family = ?",
                (region, datetime.now(UTC).timestamp(), bare_key_id(key_id)),
            )

    def update_key(
        self, key_id: str, *, if_state: tuple[str, ...] | None = None, **changes: object
    ) -> KeyRecord:
        unknown = set(changes) - set(_KEY_COLUMNS)
        if unknown:
            raise ValueError(f"unknown key columns: {unknown}")
        sets = ", ".join(f"{c} = ?" for c in changes)
        where = "key_id = ?"
        condition: tuple[str, ...] = ()
        if if_state is not None:
            # Compare and set in one statement: the check and the write are one step.
            where += f" AND state IN ({', '.join('?' for _ in if_state)})"
            condition = tuple(if_state)
        with self._tx() as conn:
            cursor = conn.execute(
                f"UPDATE keys SET {sets}, updated_at = ? WHERE {where}",
                (
                    *(_to_sql(c, v) for c, v in changes.items()),
                    datetime.now(UTC).timestamp(),
                    key_id,
                    *condition,
                ),
            )
            row = conn.execute("SELECT * FROM keys WHERE key_id = ?", (key_id,)).fetchone()
            if row is not None and cursor.rowcount == 0:
                raise StateChanged(f"key {key_id} is {row['state']} now, not {if_state}")
            shared = {c: v for c, v in changes.items() if c in SHARED_COLUMNS}
            if row is not None and shared:  # the other records of a multi-Region key
                conn.execute(
                    f"UPDATE keys SET {', '.join(f'{c} = ?' for c in shared)} "
                    "WHERE family = ? AND key_id <> ?",
                    (*(_to_sql(c, v) for c, v in shared.items()), row["family"], key_id),
                )
        if row is None:
            if if_state is not None:
                # Deleted since it was read (the deletion sweep): decide again, on nothing.
                raise StateChanged(f"key {key_id} was deleted, not {if_state}")
            raise StoreError(f"key {key_id} vanished during update")
        return _key(row)

    def list_keys(
        self, account_id: str, region: str, after: str | None, limit: int
    ) -> list[KeyRecord]:
        rows = self._query(
            "SELECT * FROM keys WHERE account_id = ? AND region = ? AND key_id > ? "
            "ORDER BY key_id LIMIT ?",
            (account_id, region, "" if after is None else key_ref(after, region), limit),
        )
        return [_key(r) for r in rows]

    def delete_key(self, key_id: str, *, tombstone: bool = True) -> None:
        family = bare_key_id(key_id)
        with self._tx() as conn:
            conn.execute("DELETE FROM grants WHERE key_id = ?", (key_id,))
            conn.execute("DELETE FROM tags WHERE key_id = ?", (key_id,))
            conn.execute("DELETE FROM aliases WHERE key_id = ?", (key_id,))
            conn.execute("DELETE FROM key_usage WHERE key_id = ?", (key_id,))
            others = conn.execute(
                "SELECT COUNT(*) FROM keys WHERE family = ? AND key_id <> ?", (family, key_id)
            ).fetchone()[0]
            if not others:  # the key's last record: its materials go with it
                conn.execute("DELETE FROM key_materials WHERE key_id = ?", (family,))
                conn.execute("DELETE FROM import_parameters WHERE key_id = ?", (family,))
                if tombstone:
                    conn.execute(
                        "INSERT INTO deleted_keys (key_id, account_id, region, deleted_at) "
                        "SELECT family, account_id, region, ? FROM keys WHERE key_id = ?",
                        (datetime.now(UTC).timestamp(), key_id),
                    )
            conn.execute("DELETE FROM keys WHERE key_id = ?", (key_id,))

    def was_deleted(self, key_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM deleted_keys WHERE key_id = ?", (key_id,)))

    def keys_due_for_deletion(self, now: datetime) -> list[KeyRecord]:
        rows = self._query(
            "SELECT * FROM keys WHERE state IN (?, ?) AND deletion_date <= ?",
            (KeyState.PENDING_DELETION, DELETING, now.timestamp()),
        )
        return [_key(r) for r in rows]

    def claim_for_deletion(self, key_id: str, now: datetime) -> bool:
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE keys SET state = ?, updated_at = ? "
                "WHERE key_id = ? AND state IN (?, ?) AND deletion_date <= ?",
                (
                    DELETING,
                    datetime.now(UTC).timestamp(),
                    key_id,
                    KeyState.PENDING_DELETION,
                    DELETING,
                    now.timestamp(),
                ),
            )
            return cursor.rowcount == 1

    # -- materials ---------------------------------------------------------------------
    def materials(self, key_id: str) -> list[MaterialRecord]:
        rows = self._query(
            "SELECT * FROM key_materials WHERE key_id = ? ORDER BY created_at, material_id",
            (key_id,),
        )
        return [_material(r) for r in rows]

    def add_material(self, material: MaterialRecord, make_current: bool = True) -> None:
        with self._tx() as conn:
            self._insert_material(conn, material)
            if make_current:
                conn.execute(
                    "UPDATE keys SET current_material_id = ?, updated_at = ? WHERE family = ?",
                    (material.material_id, datetime.now(UTC).timestamp(), material.key_id),
                )

    def all_material_ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT material_id FROM key_materials")}

    def all_materials(self) -> list[MaterialRecord]:
        rows = self._query("SELECT * FROM key_materials ORDER BY key_id, created_at")
        return [_material(r) for r in rows]

    # -- rotation ----------------------------------------------------------------------
    def keys_due_for_rotation(self, now: datetime, limit: int) -> list[KeyRecord]:
        rows = self._query(
            "SELECT * FROM keys WHERE rotation_enabled = 1 AND state = ? "
            f"AND next_rotation <= ? AND {_PRIMARY} ORDER BY next_rotation, key_id LIMIT ?",
            (KeyState.ENABLED, now.timestamp(), limit),
        )
        return [_key(r) for r in rows]

    def add_automatic_rotation(
        self,
        material: MaterialRecord,
        due: datetime,
        period_days: int,
        next_rotation: datetime,
        now: datetime,
    ) -> bool:
        try:
            with self._tx() as conn:
                # The unique (key_id, rotation_due) index refuses a second material for one
                # due date: the loser of a race raises here and its transaction rolls back.
                self._insert_material(conn, material, due)
                updated = conn.execute(
                    "UPDATE keys SET current_material_id = ?, next_rotation = ?, updated_at = ? "
                    "WHERE family = ? AND state = ? AND rotation_enabled = 1 "
                    f"AND rotation_period_days = ? AND next_rotation <= ? AND {_PRIMARY}",
                    (
                        material.material_id,
                        next_rotation.timestamp(),
                        now.timestamp(),
                        material.key_id,
                        KeyState.ENABLED,
                        period_days,
                        now.timestamp(),
                    ),
                ).rowcount
                if updated != 1:
                    raise _NotApplied
                conn.execute(  # a multi-Region key's replicas share it
                    "UPDATE keys SET current_material_id = ?, next_rotation = ? WHERE family = ?",
                    (material.material_id, next_rotation.timestamp(), material.key_id),
                )
        except (_NotApplied, Conflict):
            return False
        return True

    def add_on_demand_rotation(self, material: MaterialRecord, limit: int) -> bool:
        with self._tx() as conn:
            inserted = conn.execute(
                "INSERT INTO key_materials (material_id, key_id, created_at, rotation_type) "
                "SELECT ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM key_materials "
                "WHERE key_id = ? AND rotation_type = ?) < ? "
                f"AND EXISTS (SELECT 1 FROM keys WHERE family = ? AND state = ? AND {_PRIMARY})",
                (
                    material.material_id,
                    material.key_id,
                    material.created_at.timestamp(),
                    material.rotation_type,
                    material.key_id,
                    RotationType.ON_DEMAND,
                    limit,
                    material.key_id,
                    KeyState.ENABLED,
                ),
            ).rowcount
            if inserted != 1:
                return False
            conn.execute(
                "UPDATE keys SET current_material_id = ?, updated_at = ? WHERE family = ?",
                (material.material_id, material.created_at.timestamp(), material.key_id),
            )
        return True

    # -- leases ------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, now: datetime, ttl: float) -> bool:
        at, until = now.timestamp(), now.timestamp() + ttl
        try:
            with self._tx() as conn:
                # SET reads the row's old values: a renewal keeps its acquired_at.
                taken = conn.execute(
                    "UPDATE leases SET acquired_at = CASE WHEN holder = ? THEN acquired_at "
                    "ELSE ? END, holder = ?, expires_at = ? "
                    "WHERE name = ? AND (holder = ? OR expires_at <= ?)",
                    (holder, at, holder, until, name, holder, at),
                ).rowcount
                if taken == 1:
                    return True
                taken = conn.execute(
                    "INSERT INTO leases (name, holder, acquired_at, expires_at) "
                    "SELECT ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM leases WHERE name = ?)",
                    (name, holder, at, until, name),
                ).rowcount
                return taken == 1
        except Conflict:
            # Another writer inserted it first (impossible under SQLite's single writer; a
            # database whose transactions overlap answers a unique violation here).
            return False

    def release_lease(self, name: str, holder: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def get_lease(self, name: str, now: datetime) -> LeaseRecord | None:
        rows = self._query(
            "SELECT * FROM leases WHERE name = ? AND expires_at > ?", (name, now.timestamp())
        )
        if not rows:
            return None
        row = rows[0]
        return LeaseRecord(
            name=row["name"],
            holder=row["holder"],
            acquired_at=datetime.fromtimestamp(row["acquired_at"], UTC),
            expires_at=datetime.fromtimestamp(row["expires_at"], UTC),
        )

    # -- aliases -----------------------------------------------------------------------
    def create_alias(self, alias: AliasRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO aliases (account_id, region, alias_name, key_id, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    alias.account_id,
                    alias.region,
                    alias.alias_name,
                    key_ref(alias.key_id, alias.region),
                    alias.created_at.timestamp(),
                    alias.updated_at.timestamp(),
                ),
            )

    def get_alias(self, account_id: str, region: str, alias_name: str) -> AliasRecord | None:
        rows = self._query(
            "SELECT * FROM aliases WHERE account_id = ? AND region = ? AND alias_name = ?",
            (account_id, region, alias_name),
        )
        return _alias(rows[0]) if rows else None

    def update_alias(
        self, account_id: str, region: str, alias_name: str, key_id: str, now: datetime
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                "UPDATE aliases SET key_id = ?, updated_at = ? "
                "WHERE account_id = ? AND region = ? AND alias_name = ?",
                (key_ref(key_id, region), now.timestamp(), account_id, region, alias_name),
            )

    def delete_alias(self, account_id: str, region: str, alias_name: str) -> None:
        with self._tx() as conn:
            conn.execute(
                "DELETE FROM aliases WHERE account_id = ? AND region = ? AND alias_name = ?",
                (account_id, region, alias_name),
            )

    def list_aliases(
        self,
        account_id: str,
        region: str,
        key_id: str | None,
        after: str | None,
        limit: int,
    ) -> list[AliasRecord]:
        sql = "SELECT * FROM aliases WHERE account_id = ? AND region = ? AND alias_name > ?"
        args: tuple[Any, ...] = (account_id, region, after or "")
        if key_id is not None:
            sql += " AND key_id = ?"
            args += (key_ref(key_id, region),)
        rows = self._query(sql + " ORDER BY alias_name LIMIT ?", (*args, limit))
        return [_alias(r) for r in rows]

    def aliases_of(self, key_id: str) -> list[AliasRecord]:
        rows = self._query("SELECT * FROM aliases WHERE key_id = ? ORDER BY alias_name", (key_id,))
        return [_alias(r) for r in rows]
