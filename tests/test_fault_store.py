"""A real server whose store is locked by another process past the busy timeout, or whose disk
is full: writes answer a 5xx KMS error that says what is wrong (no traceback), reads and
cryptography go on, nothing is corrupted, and writes work again once the cause is gone."""

from __future__ import annotations

import base64
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults import doctor_report
from server import ServerProcess

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
        capture_output=True, text=True, check=False,
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
        assert "no room to store a new key" in answer.error[1]
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
    assert "is full" in log and "has no room" in log
    assert _integrity(home / "hsmkms.sqlite3") == "ok"
    code, report = doctor_report(home)
    assert code == 0 and report["missing"] == [], report
