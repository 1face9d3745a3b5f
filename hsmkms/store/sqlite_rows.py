"""The embedded store's rows: the columns of a key, and each table's row to its frozen record
(times as epoch seconds, booleans as 0/1, grant operations and constraints as JSON)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from hsmkms.specs import KeyState
from hsmkms.store.base import (
    AliasRecord,
    GrantRecord,
    ImportParametersRecord,
    KeyRecord,
    MaterialRecord,
)

_KEY_COLUMNS = (
    "key_id account_id region key_usage key_spec origin key_manager state created_at policy "
    "description current_material_id deletion_date pending_window_days multi_region "
    "rotation_enabled rotation_period_days next_rotation primary_region custom_key_store_id "
    "xks_key_id"
).split()
_TIME_COLUMNS = {"created_at", "deletion_date", "next_rotation", "updated_at"}
_BOOL_COLUMNS = {"multi_region", "rotation_enabled"}


def _to_sql(name: str, value: Any) -> Any:
    if name in _TIME_COLUMNS:
        return None if value is None else value.timestamp()
    if name in _BOOL_COLUMNS:
        return int(bool(value))
    return value


def _from_sql(name: str, value: Any) -> Any:
    if name in _TIME_COLUMNS:
        return None if value is None else datetime.fromtimestamp(value, UTC)
    if name in _BOOL_COLUMNS:
        return bool(value)
    return value


# The state a claimed key is stored in: hsmkms's own, never shown (it reads PendingDeletion),
# so that the compare-and-set of every write that expects PendingDeletion fails once claimed.
DELETING = "Deleting"


def _key(row: sqlite3.Row) -> KeyRecord:
    fields = {c: _from_sql(c, row[c]) for c in _KEY_COLUMNS}
    fields["key_id"] = bare_key_id(row["key_id"])
    if fields["state"] == DELETING:
        fields["state"] = KeyState.PENDING_DELETION
        fields["deletion_claimed"] = True
    return KeyRecord(**fields)


def bare_key_id(ref: str) -> str:
    """The key id of a record's ref (store/base.py key_ref)."""
    return ref.split("~", 1)[0]


def _alias(row: sqlite3.Row) -> AliasRecord:
    return AliasRecord(
        account_id=row["account_id"],
        region=row["region"],
        alias_name=row["alias_name"],
        key_id=bare_key_id(row["key_id"]),
        created_at=datetime.fromtimestamp(row["created_at"], UTC),
        updated_at=datetime.fromtimestamp(row["updated_at"], UTC),
    )


def _grant(row: sqlite3.Row) -> GrantRecord:
    return GrantRecord(
        grant_id=row["grant_id"],
        key_id=row["key_id"],
        grantee_principal=row["grantee_principal"],
        operations=tuple(json.loads(row["operations"])),
        issuing_account=row["issuing_account"],
        created_at=datetime.fromtimestamp(row["created_at"], UTC),
        name=row["name"],
        retiring_principal=row["retiring_principal"],
        constraints=json.loads(row["grant_constraints"]),
    )


def _material(row: sqlite3.Row) -> MaterialRecord:
    return MaterialRecord(
        material_id=row["material_id"],
        key_id=row["key_id"],
        created_at=datetime.fromtimestamp(row["created_at"], UTC),
        rotation_type=row["rotation_type"],
        public_key=None if row["public_key"] is None else bytes(row["public_key"]),
        sealed_private=None if row["sealed_private"] is None else bytes(row["sealed_private"]),
        import_state=row["import_state"],
        pending_rotation=bool(row["pending_rotation"]),
        expiration_model=row["expiration_model"],
        valid_to=None if row["valid_to"] is None else datetime.fromtimestamp(row["valid_to"], UTC),
        description=row["description"],
    )


def _import_parameters(row: sqlite3.Row) -> ImportParametersRecord:
    return ImportParametersRecord(
        import_id=row["import_id"],
        key_id=row["key_id"],
        wrapping_algorithm=row["wrapping_algorithm"],
        wrapping_spec=row["wrapping_spec"],
        public_key=bytes(row["public_key"]),
        created_at=datetime.fromtimestamp(row["created_at"], UTC),
        expires_at=datetime.fromtimestamp(row["expires_at"], UTC),
        destroyed=bool(row["destroyed"]),
    )
