"""The store's part of imported material (issue 16): an expired material is claimed by one
store connection alone (two stores on one file stand for two processes), and the import
parameters round-trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hsmkms.specs import ExpirationModel, ImportState, KeyState
from hsmkms.store import EXPIRING, ImportParametersRecord, KeyRecord, MaterialRecord, open_store

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def _external_key(store, key_id: str) -> None:
    store.create_key(
        KeyRecord(key_id, "111122223333", "us-east-1", "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT",
                  "EXTERNAL", "CUSTOMER", KeyState.PENDING_IMPORT, NOW, "{}"),
        None,
        {},
    )  # fmt: skip


def test_an_expired_material_is_claimed_exactly_once(tmp_path):
    path = str(tmp_path / "s.sqlite3")
    first, second = open_store(path), open_store(path)
    key_id = "00000000-0000-4000-8000-000000000001"
    _external_key(first, key_id)
    mid = "ab" * 32
    material = MaterialRecord(
        mid, key_id, NOW, import_state=ImportState.IMPORTED,
        expiration_model=ExpirationModel.KEY_MATERIAL_EXPIRES, valid_to=NOW + timedelta(hours=1),
    )  # fmt: skip
    key = first.put_imported_material(
        material, if_state=(KeyState.PENDING_IMPORT,), state=KeyState.ENABLED, make_current=True
    )
    assert (key.state, key.current_material_id) == (KeyState.ENABLED, mid)
    assert second.list_expired_materials(NOW) == []
    later = NOW + timedelta(hours=2)
    assert [m.material_id for m in second.list_expired_materials(later)] == [mid]
    claims = [first.claim_expired_material(mid, later), second.claim_expired_material(mid, later)]
    assert claims == [True, False]
    assert first.get_key(key_id).state == KeyState.PENDING_IMPORT
    assert [m.import_state for m in second.materials(key_id)] == [EXPIRING]
    # A claimer that crashed before finishing leaves it listed for the next sweep.
    assert [m.material_id for m in second.list_expired_materials(later)] == [mid]
    second.finish_expiry(mid)
    assert second.list_expired_materials(later) == []
    assert [(m.import_state, m.valid_to) for m in first.materials(key_id)] == [
        (ImportState.PENDING_IMPORT, None)
    ]


def test_import_parameters_round_trip_and_go_with_their_key(tmp_path):
    store = open_store(str(tmp_path / "s.sqlite3"))
    key_id = "00000000-0000-4000-8000-000000000002"
    _external_key(store, key_id)
    parameters = ImportParametersRecord(
        "57" + "cd" * 32, key_id, "RSAES_OAEP_SHA_256", "RSA_4096", b"spki", NOW,
        NOW + timedelta(hours=24),
    )  # fmt: skip
    store.add_import_parameters(parameters)
    assert store.get_import_parameters(parameters.import_id) == parameters
    assert store.list_import_parameters_due(NOW) == []
    assert store.list_import_parameters_due(NOW + timedelta(days=1)) == [parameters]
    store.mark_import_parameters_destroyed(parameters.import_id)
    assert store.list_import_parameters_due(NOW + timedelta(days=1)) == []
    assert store.list_import_parameters_of(key_id) == []
    store.delete_key(key_id)
    assert store.get_import_parameters(parameters.import_id) is None
