"""The store's faults, from the store alone up to a real server: another process holds its
lock past the busy timeout, a write races another, the disk is full.

* The store and the operation layer: DependencyTimeoutException for a lock held too long, a
  state decided again after a lost race, no master key left behind by a refused CreateKey.
* A real server (``hsmkms serve``) whose store is locked or whose disk is full: writes answer
  a 5xx KMS error that says what is wrong (no traceback), reads and cryptography go on,
  nothing is corrupted, and writes work again once the cause is gone.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from faults import doctor_report
from server import ServerProcess

from hsmkms.store import AliasRecord, StateChanged, StoreBusy, StoreError, open_store
from hsmkms.store.base import KeyRecord, MaterialRecord


def _key(store_path: str, key_id: str = "00000000-0000-4000-8000-000000000001") -> KeyRecord:
    now = datetime.now(UTC)
    key = KeyRecord(
        key_id=key_id,
        account_id="111122223333",
        region="us-east-1",
        key_usage="ENCRYPT_DECRYPT",
        key_spec="SYMMETRIC_DEFAULT",
        origin="AWS_KMS",
        key_manager="CUSTOMER",
        state="Enabled",
        created_at=now,
        policy="{}",
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
            store.create_alias(
                AliasRecord("111122223333", "us-east-1", "alias/a", key.key_id, now, now)
            )
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
            real_update(
                kid,
                state="PendingDeletion",
                deletion_date=datetime.now(UTC) + timedelta(days=7),
                pending_window_days=7,
            )
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


@pytest.mark.token_objects  # the wrapped mode's own: tests/features/test_wrapped_mode.py
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


# -- a real server -----------------------------------------------------------------------------
BUSY_TIMEOUT = 0.5


def _integrity(store: Path) -> str:
    with sqlite3.connect(store) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def test_a_store_locked_past_the_busy_timeout(tmp_path: Path):
    home = tmp_path / "home"
    env = {"HSMKMS_STORE_BUSY_TIMEOUT": str(BUSY_TIMEOUT)}
    with ServerProcess(home, env=env) as srv:
        kms = srv.client()
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        blob = base64.b64encode(kms.encrypt(KeyId=key_id, Plaintext=b"locked")["CiphertextBlob"])
        holder = sqlite3.connect(home / "hsmkms.sqlite3", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's writer that does not let go
        try:
            for op, params in (
                ("CreateKey", {}),
                ("CreateAlias", {"AliasName": "alias/locked", "TargetKeyId": key_id}),
                ("DisableKey", {"KeyId": key_id}),
            ):
                started = time.monotonic()
                answer = srv.post(op, params)
                waited = time.monotonic() - started
                assert answer.status == 500, (op, answer)
                kind, message = answer.error
                assert kind == "DependencyTimeoutException", (op, answer)
                assert "busy" in message and "retry" in message
                assert BUSY_TIMEOUT * 0.8 < waited < BUSY_TIMEOUT + 5, waited
            # Readers do not wait for a writer (WAL): cryptography goes on.
            answer = srv.post("Decrypt", {"CiphertextBlob": blob.decode()})
            assert answer.status == 200 and base64.b64decode(answer.json["Plaintext"]) == b"locked"
            assert srv.post("Encrypt", {"KeyId": key_id, "Plaintext": "eA=="}).status == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The lock is gone: writes work at once.
        kms.create_alias(AliasName="alias/locked", TargetKeyId=key_id)
        kms.disable_key(KeyId=key_id)
        assert kms.describe_key(KeyId="alias/locked")["KeyMetadata"]["KeyState"] == "Disabled"
        assert kms.create_key()["KeyMetadata"]["KeyState"] == "Enabled"
        log = srv.log()
    assert "Traceback" not in log
    assert "another writer held the store's lock" in log  # what the operator reads
    assert _integrity(home / "hsmkms.sqlite3") == "ok"
    code, report = doctor_report(home)
    # The refused CreateKey destroyed the master key it had made: not even an orphan.
    assert code == 0 and report["missing"] == [] and report["orphans"] == [], report


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB filesystem of its own (tmpfs): needs root, or skips."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small filesystem of its own: mounting one needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    with open(path, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == 28  # ENOSPC


def test_a_full_disk_refuses_writes_clearly_and_recovers_when_space_returns(
    tiny_disk: Path, tmp_path: Path
):
    home = tiny_disk / "home"  # the token and the store on the small disk
    srv = ServerProcess(home)
    srv.log_path = tmp_path / "server.log"  # not on the full disk: we want to read it
    with srv:
        kms = srv.client()
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        sealed = {os.urandom(16): b"" for _ in range(5)}
        for data in sealed:
            sealed[data] = kms.encrypt(KeyId=key_id, Plaintext=data)["CiphertextBlob"]
        kms.create_alias(AliasName="alias/before", TargetKeyId=key_id)
        _fill(tiny_disk / "filler")

        answer = srv.post("CreateKey", {})
        assert answer.status == 500 and answer.error[0] == "KMSInternalException", answer
        # The token's files are full (token mode), or the store is (a wrap goes there first).
        assert any(
            why in answer.error[1]
            for why in ("no room to store a new key", "store is out of disk space")
        ), answer
        acked = ["alias/before"]
        refused = 0
        for i in range(20):
            name = f"alias/full-{i}"
            answer = srv.post("CreateAlias", {"AliasName": name, "TargetKeyId": key_id})
            if answer.status == 200:
                acked.append(name)  # room left in the WAL: fine, and durable
                continue
            assert (answer.status, answer.error[0]) == (500, "KMSInternalException"), answer
            assert "out of disk space" in answer.error[1]
            refused += 1
        assert refused, "the full disk refused no write"
        # What needs no new space goes on.
        for data, blob in sealed.items():
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == data
        assert kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")["KeyId"].endswith(key_id)
        assert srv.get("/health").status == 200

        (tiny_disk / "filler").unlink()
        new_key = kms.create_key()["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName="alias/after", TargetKeyId=new_key)
        for name in [*acked, "alias/after"]:
            assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] in (key_id, new_key)
        log = srv.log()
    assert "Traceback" not in log
    assert "is full" in log
    # The token mode's CreateKey met the token's full disk; the wrapped mode's writes its wrap
    # to the store first and never stores on the token.
    assert "has no room" in log or os.environ.get("HSMKMS_TEST_MASTER_KEYS") == "wrapped"
    assert _integrity(home / "hsmkms.sqlite3") == "ok"
    code, report = doctor_report(home)
    assert code == 0 and report["missing"] == [], report
