"""The SQLite store: schema, durability settings, and no key material in it."""

from __future__ import annotations

import sqlite3

from hsmkms.store import open_store


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


def test_no_key_material_reaches_the_store(settings, library):
    key = library.create_key()["KeyMetadata"]["KeyId"]
    secrets = []
    for _ in range(5):
        out = library.generate_data_key(KeyId=key, KeySpec="AES_256")
        secrets.append(out["Plaintext"])
        pair = library.generate_data_key_pair(KeyId=key, KeyPairSpec="ECC_NIST_P256")
        secrets.append(pair["PrivateKeyPlaintext"][-32:])
    secrets.append(library.encrypt(KeyId=key, Plaintext=b"canary-plaintext-123")
                   ["CiphertextBlob"] and b"canary-plaintext-123")
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
