"""The SQLite store: schema, durability settings, and no key material in it."""

from __future__ import annotations

import sqlite3

import pytest

from hsmkms.store import open_store


@pytest.mark.sqlite_home
def test_store_uses_wal_and_full_sync(settings, kms):
    store = open_store(settings.store_path)
    conn = store._conn()  # type: ignore[attr-defined]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == sorted(versions) and versions[0] == 1
    store.close()


def test_reopening_the_store_keeps_the_schema(tmp_path):
    path = str(tmp_path / "s.sqlite3")
    open_store(path).close()
    open_store(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] >= 1


@pytest.mark.sqlite_home
def test_no_key_material_reaches_the_store(settings, library):
    key = library.create_key()["KeyMetadata"]["KeyId"]
    secrets = []
    for _ in range(5):
        out = library.generate_data_key(KeyId=key, KeySpec="AES_256")
        secrets.append(out["Plaintext"])
        pair = library.generate_data_key_pair(KeyId=key, KeyPairSpec="ECC_NIST_P256")
        secrets.append(pair["PrivateKeyPlaintext"][-32:])
    secrets.append(
        library.encrypt(KeyId=key, Plaintext=b"canary-plaintext-123")["CiphertextBlob"]
        and b"canary-plaintext-123"
    )
    library.service.store.close()
    data = b""
    for suffix in ("", "-wal"):
        try:
            with open(settings.store_path + suffix, "rb") as fh:
                data += fh.read()
        except FileNotFoundError:
            pass
    assert data
    for secret in secrets:
        assert secret not in data
        assert secret.hex().encode() not in data


def test_opening_the_store_again_leaves_the_locks_of_open_connections_alone(tmp_path):
    """A second store on a file this process has open must not close a descriptor of it (that
    drops every POSIX lock of the process): another process closing its last connection would
    then delete the WAL and shared memory under this one's, and break its next connection."""
    import subprocess
    import sys
    import threading
    from datetime import UTC, datetime

    path = str(tmp_path / "s.sqlite3")
    first = open_store(path)
    assert first.acquire_lease("a", "here", datetime.now(UTC), 60)  # a write: a WAL in use
    open_store(path).close()
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hsmkms.store import open_store; open_store(sys.argv[1]).close()",
            path,
        ],
        check=True,
        timeout=60,
    )
    assert (tmp_path / "s.sqlite3-shm").exists()
    errors: list[BaseException] = []

    def write_from_a_new_thread() -> None:  # a new thread: a new connection
        try:
            assert first.acquire_lease("b", "here", datetime.now(UTC), 60)
        except BaseException as exc:  # reported below
            errors.append(exc)

    for _ in range(2):
        t = threading.Thread(target=write_from_a_new_thread)
        t.start()
        t.join()
    assert not errors, errors
    first.close()


def test_a_store_made_before_multi_region_keys_migrates_without_loss(tmp_path):
    """Migration 7 rebuilds key_materials (no foreign key to keys: a multi-Region key's
    materials belong to all its records) and adds the family column: every key, material,
    alias and tag of an older store reads back the same."""
    from datetime import UTC, datetime

    from hsmkms.store.migrations import MIGRATIONS

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    for version, statements in enumerate(MIGRATIONS[:6], start=1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (version,))
    key_id, material = "1234abcd-12ab-34cd-56ef-1234567890ab", "ab" * 32
    conn.execute(
        "INSERT INTO keys (key_id, account_id, region, key_usage, key_spec, origin, "
        "key_manager, state, created_at, updated_at, policy, current_material_id) "
        "VALUES (?, '111122223333', 'eu-west-1', 'ENCRYPT_DECRYPT', 'SYMMETRIC_DEFAULT', "
        "'AWS_KMS', 'CUSTOMER', 'Enabled', 1.0, 1.0, '{}', ?)",
        (key_id, material),
    )
    conn.execute(
        "INSERT INTO key_materials (material_id, key_id, created_at, rotation_due) "
        "VALUES (?, ?, 1.0, 9.0)",
        (material, key_id),
    )
    conn.execute(
        "INSERT INTO aliases VALUES ('111122223333', 'eu-west-1', 'alias/old', ?, 1.0, 1.0)",
        (key_id,),
    )
    conn.execute("INSERT INTO tags VALUES (?, 'team', 'blue')", (key_id,))
    conn.commit()
    conn.close()

    store = open_store(str(path))
    try:
        key = store.get_key(key_id)
        assert key is not None and key.region == "eu-west-1" and key.primary_region is None
        assert key.current_material_id == material and not key.multi_region
        (m,) = store.materials(key_id)
        assert m.material_id == material and m.created_at == datetime.fromtimestamp(1.0, UTC)
        assert store.get_alias("111122223333", "eu-west-1", "alias/old").key_id == key_id
        assert store.get_tags(key_id) == {"team": "blue"}
        assert [k.key_id for k in store.keys_in_family(key_id)] == [key_id]
        store.delete_key(key_id)
        assert store.was_deleted(key_id) and store.materials(key_id) == []
    finally:
        store.close()
