"""The SQLite store when another process holds its lock, when a write races another, and the
operation layer's answers to both (DependencyTimeoutException, a state decided again)."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hsmkms.store import AliasRecord, StateChanged, StoreBusy, StoreError, open_store
from hsmkms.store.base import KeyRecord, MaterialRecord


def _key(store_path: str, key_id: str = "00000000-0000-4000-8000-000000000001") -> KeyRecord:
    now = datetime.now(UTC)
    key = KeyRecord(
        key_id=key_id, account_id="111122223333", region="us-east-1",
        key_usage="ENCRYPT_DECRYPT", key_spec="SYMMETRIC_DEFAULT", origin="AWS_KMS",
        key_manager="CUSTOMER", state="Enabled", created_at=now, policy="{}",
        current_material_id="ab" * 32,
    )
    store = open_store(store_path)
    store.create_key(key, MaterialRecord("ab" * 32, key_id, now), {})
    store.close()
    return key


def test_a_write_behind_a_held_lock_is_busy_after_the_timeout_and_reads_go_on(tmp_path: Path):
    path = str(tmp_path / "s.sqlite3")
    key = _key(path)
    store = open_store(path, busy_timeout=0.3)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's writer, holding on
    try:
        now = datetime.now(UTC)
        started = time.monotonic()
        with pytest.raises(StoreBusy, match="lock for more than 0.3 s"):
            store.create_alias(AliasRecord("111122223333", "us-east-1", "alias/a", key.key_id,
                                           now, now))
        assert 0.25 < time.monotonic() - started < 5
        assert store.get_key(key.key_id) is not None  # WAL: readers do not wait for writers
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    now = datetime.now(UTC)
    store.create_alias(AliasRecord("111122223333", "us-east-1", "alias/a", key.key_id, now, now))
    assert store.get_alias("111122223333", "us-east-1", "alias/a") is not None
    store.close()


def test_a_store_that_cannot_be_opened_costs_no_descriptors(tmp_path: Path):
    path = tmp_path / "s.sqlite3"
    _key(str(path))
    store = open_store(str(path))
    store.close()
    path.write_bytes(b"not a database, " * 512)  # opens, then fails at the first statement

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = descriptors()
    for _ in range(50):
        with pytest.raises(StoreError):
            store.get_key("00000000-0000-4000-8000-000000000001")
    assert descriptors() <= before + 2


def test_a_conditional_update_writes_only_in_the_state_it_was_decided_on(tmp_path: Path):
    path = str(tmp_path / "s.sqlite3")
    key = _key(path)
    store = open_store(path)
    store.update_key(key.key_id, if_state=("Enabled",), state="Disabled")
    with pytest.raises(StateChanged):
        store.update_key(key.key_id, if_state=("Enabled",), state="PendingDeletion")
    after = store.get_key(key.key_id)
    assert after is not None and after.state == "Disabled"
    store.close()


def test_a_lost_race_is_decided_again(library, monkeypatch: pytest.MonkeyPatch):
    """EnableKey read the key, then a ScheduleKeyDeletion committed: the EnableKey must not
    undo the deletion it never saw. It reads again and answers as for a pending deletion."""
    from hsmkms import errors

    key_id = library.create_key()["KeyMetadata"]["KeyId"]
    library.disable_key(KeyId=key_id)
    store = library.service.store
    real_update = store.update_key
    raced = []

    def update_key(kid: str, **changes: object):  # type: ignore[no-untyped-def]
        if not raced:
            raced.append(1)
            real_update(kid, state="PendingDeletion",
                        deletion_date=datetime.now(UTC) + timedelta(days=7), pending_window_days=7)
        return real_update(kid, **changes)

    monkeypatch.setattr(store, "update_key", update_key)
    with pytest.raises(errors.KMSInvalidStateException, match="pending deletion"):
        library.enable_key(KeyId=key_id)
    monkeypatch.undo()
    meta = library.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    library.cancel_key_deletion(KeyId=key_id)
    assert library.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


def test_a_locked_store_answers_dependency_timeout(library, monkeypatch: pytest.MonkeyPatch):
    from hsmkms import errors

    def busy(*args: object, **kwargs: object) -> None:
        raise StoreBusy("could not begin a write: another writer held the store's lock")

    monkeypatch.setattr(library.service.store, "create_alias", busy)
    key_id = library.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(errors.DependencyTimeoutException, match="retry"):
        library.create_alias(AliasName="alias/busy-store", TargetKeyId=key_id)


def test_a_create_key_the_store_refused_leaves_no_master_key(
    library, monkeypatch: pytest.MonkeyPatch
):
    from hsmkms import errors
    from hsmkms.store import StoreFull

    store, token = library.service.store, library.service.masters.token
    made: list[bytes] = []
    real_create = token.create_master_key

    def create_master_key(material_id: bytes, label: str) -> None:
        made.append(material_id)
        real_create(material_id, label)

    def full(*args: object, **kwargs: object) -> None:
        raise StoreFull("could not commit: the disk is full")

    monkeypatch.setattr(token, "create_master_key", create_master_key)
    monkeypatch.setattr(store, "create_key", full)
    with pytest.raises(errors.KMSInternalException, match="out of disk space"):
        library.create_key()
    monkeypatch.undo()
    assert len(made) == 1
    assert not token.has_master_key(made[0])
