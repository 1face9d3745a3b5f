"""Seeded keys (issue 16): ``hsmkms serve --seed FILE`` makes the keys of a YAML or TOML file
exist with their fixed KeyIds and material, idempotently, before it serves.

What a user relies on is checked as they would see it: the file is read and checked whole
(every problem names the entry and the field, and nothing is applied); a blob made by a
seeded key on one fresh home decrypts on another fresh home seeded with the same file (and a
seeded HMAC key gives the same MAC, a seeded private key the file's public key); applying a
file twice changes nothing; a key that exists with other material is an error naming the entry,
and nothing of that run stays behind. The loading tests need no token and are fast; the rest
make keys on the token, start servers or use two homes, and are slow.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from faults import clean_env
from helpers import offline_verify

from hsmkms import errors, seed
from hsmkms.seed import SeedError, applying

REPO = Path(__file__).resolve().parents[2]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pkcs8(private: Any, encoding: Any = serialization.Encoding.DER) -> bytes:
    return private.private_bytes(
        encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_file(path: Path, data: bytes | str) -> Path:
    """``data`` in ``path``, mode 0600 (a file holding material must be)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return path


def seed_file(directory: Path, *entries: dict[str, Any], name: str = "seed.yaml") -> Path:
    return private_file(directory / name, yaml.safe_dump({"keys": list(entries)}))


def new_id() -> str:
    return str(uuid.uuid4())


def problems(path: Path) -> str:
    with pytest.raises(SeedError) as info:
        seed.load(path)
    message = str(info.value)
    assert "nothing applied" in message or "is not valid" in message, message
    return message


# -- loading: no token, fast ---------------------------------------------------------------------
def test_a_yaml_and_a_toml_file_read_the_same(tmp_path):
    key_id, material = new_id(), os.urandom(32)
    yaml_path = seed_file(
        tmp_path,
        {
            "KeyId": key_id,
            "Description": "app",
            "Tags": {"team": "infra"},
            "Aliases": ["alias/app"],
            "material": b64(material),
        },
    )
    toml_path = private_file(
        tmp_path / "seed.toml",
        f'[[keys]]\nKeyId = "{key_id}"\nDescription = "app"\nAliases = ["alias/app"]\n'
        f'material = "{b64(material)}"\n[keys.Tags]\nteam = "infra"\n',
    )
    a, b = seed.load(yaml_path).entries, seed.load(toml_path).entries
    assert a == b and len(a) == 1
    assert a[0].material == material and a[0].spec == "SYMMETRIC_DEFAULT"
    assert a[0].usage == "ENCRYPT_DECRYPT" and a[0].tags == {"team": "infra"}
    assert repr(material) not in repr(a[0])  # never printed


def test_defaults_policy_mappings_and_private_keys_in_pem_or_der(tmp_path):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(65537, 2048)
    private_file(tmp_path / "ec.pem", pkcs8(ec_key, serialization.Encoding.PEM))
    text = (
        "keys:\n"
        f"  - KeyId: {new_id()}\n    KeySpec: ECC_NIST_P256\n    material_file: ec.pem\n"
        f"  - KeyId: {new_id()}\n    KeySpec: RSA_2048\n    KeyUsage: SIGN_VERIFY\n"
        f"    material: {b64(pkcs8(rsa_key))}\n"
        f"  - KeyId: {new_id()}\n    KeySpec: HMAC_256\n"
        "    Policy:\n      Version: 2012-10-17\n      Statement:\n"
        "        - {Effect: Allow, Principal: {AWS: '*'}, Action: 'kms:*', Resource: '*'}\n"
    )
    entries = seed.load(private_file(tmp_path / "seed.yml", text)).entries
    assert entries[0].usage == "SIGN_VERIFY" and entries[0].material == pkcs8(ec_key)
    assert entries[1].material == pkcs8(rsa_key)
    assert entries[2].usage == "GENERATE_VERIFY_MAC" and entries[2].material is None
    assert '"Version": "2012-10-17"' in (entries[2].policy or "")  # YAML's date, as text


BAD_ENTRIES = [
    ("unknown field", {"Colour": "blue"}, "Colour", "unknown field"),
    ("bad base64", {"material": "not*base64"}, "material", "not base64"),
    ("material length", {"material": b64(os.urandom(16))}, "material", "32 bytes, not 16"),
    ("bad KeyId", {"KeyId": "KEY-1"}, "KeyId", "not a lower-case UUID"),
    ("KeySpec", {"KeySpec": "AES_128"}, "KeySpec", "not a KeySpec"),
    ("KeyUsage", {"KeyUsage": "SIGN_VERIFY"}, "KeyUsage", "not allowed with SYMMETRIC_DEFAULT"),
    ("HMAC length", {"KeySpec": "HMAC_384", "material": b64(os.urandom(32))}, "material",
     "48 to 128 bytes"),
    ("wrong curve", {"KeySpec": "ECC_NIST_P384",
                     "material": b64(pkcs8(ec.generate_private_key(ec.SECP256R1())))},
     "material", "secp384r1"),
    ("not importable", {"KeySpec": "ECC_NIST_EDWARDS25519", "KeyUsage": "SIGN_VERIFY",
                        "material": b64(os.urandom(32))}, "material", "cannot be imported"),
    ("both materials", {"material": b64(os.urandom(32)), "material_file": "k"}, "material",
     "not both"),
    ("missing file", {"material_file": "absent.bin"}, "material_file", "cannot read"),
    ("reserved tag", {"Tags": {"aws:x": "y"}}, "Tags", "reserved"),
    ("tag type", {"Tags": {"n": 1}}, "Tags", "strings"),
    ("alias prefix", {"Aliases": ["app"]}, "Aliases", "alias/"),
    ("policy", {"Policy": "{not json"}, "Policy", ""),
    ("account", {"account_id": "12"}, "account_id", "12 digits"),
    ("description type", {"Description": False}, "Description", "must be a string"),
]  # fmt: skip


@pytest.mark.parametrize(
    "fields, field, what", [b[1:] for b in BAD_ENTRIES], ids=[b[0] for b in BAD_ENTRIES]
)
def test_a_bad_entry_is_named_with_its_field(tmp_path, fields, field, what):
    good, key_id = {"KeyId": new_id()}, new_id()
    message = problems(seed_file(tmp_path, good, {"KeyId": key_id, **fields}))
    entry = f"keys[1] (KeyId {fields.get('KeyId', key_id)})"
    assert f"{entry}: {field}: " in message and what in message, message
    assert "keys[0]" not in message


def test_every_problem_is_listed_at_once(tmp_path):
    key_id = new_id()
    path = seed_file(
        tmp_path,
        {"Description": "no id"},
        {"KeyId": key_id, "material": "%%%"},
        {"KeyId": key_id, "Aliases": ["alias/a"]},
        {"KeyId": new_id(), "Aliases": ["alias/a"]},
    )
    message = problems(path)
    assert "keys[0] (no KeyId): KeyId: missing" in message
    assert f"keys[1] (KeyId {key_id}): material: not base64" in message
    assert f"keys[2] (KeyId {key_id}): KeyId: also the KeyId of keys[1]" in message
    assert "keys[3]" in message and "alias/a is also an alias of keys[2]" in message
    assert "4 problem(s)" in message


def test_the_file_itself_must_be_a_seed_file(tmp_path):
    with pytest.raises(SeedError, match=r"\*\.yaml, \*\.yml or \*\.toml"):
        seed.load(private_file(tmp_path / "seed.json", "{}"))
    with pytest.raises(SeedError, match="not valid YAML.*given twice"):
        seed.load(private_file(tmp_path / "twice.yaml", "keys: []\nkeys: []\n"))
    with pytest.raises(SeedError, match="not valid TOML"):
        seed.load(private_file(tmp_path / "bad.toml", "keys = [\n"))
    with pytest.raises(SeedError, match="unknown top-level field 'key'"):
        seed.load(private_file(tmp_path / "top.yaml", "key: []\nkeys: []\n"))
    with pytest.raises(SeedError, match="cannot read seed file"):
        seed.load(tmp_path / "absent.yaml")
    assert seed.load(private_file(tmp_path / "empty.yaml", "keys: []\n")).entries == ()


def test_material_readable_by_others_is_refused(tmp_path):
    path = seed_file(tmp_path, {"KeyId": new_id(), "material": b64(os.urandom(32))})
    os.chmod(path, 0o644)
    with pytest.raises(SeedError, match=f"holds key material.*chmod 600 {path}"):
        seed.load(path)
    private_file(tmp_path / "k.bin", os.urandom(32))
    os.chmod(tmp_path / "k.bin", 0o640)
    with pytest.raises(SeedError, match="material_file: .*k.bin holds key material"):
        seed.load(seed_file(tmp_path, {"KeyId": new_id(), "material_file": "k.bin"}))
    # A file that only names keys (or material files) is no secret.
    os.chmod(tmp_path / "k.bin", 0o600)
    plain = seed_file(tmp_path, {"KeyId": new_id()}, {"KeyId": new_id(), "material_file": "k.bin"})
    os.chmod(plain, 0o644)
    assert len(seed.load(plain).entries) == 2


def test_the_schema_is_documented_field_by_field():
    text = (REPO / "docs" / "seeding.md").read_text()
    for f in seed.FIELDS:
        assert f"`{f.name}`" in text, f.name


def test_the_seed_setting_comes_from_the_environment_or_the_settings_file(tmp_path):
    from hsmkms.config import Settings

    assert Settings.load(env={}).seed is None
    assert Settings.load(env={"HSMKMS_SEED": "keys.yaml"}).seed == "keys.yaml"
    (tmp_path / "hsmkms.toml").write_text('seed = "ci/keys.toml"\n')
    assert Settings.load(tmp_path / "hsmkms.toml", env={}).seed == "ci/keys.toml"


# -- applying in-process: keys on the session's token (slow) -------------------------------------
@pytest.fixture
def account(library) -> str:
    return library.caller.account_id


def run(service, account: str, path: Path) -> seed.Outcome:
    return seed.apply(service, seed.load(path), account)


@pytest.mark.slow
def test_a_seed_makes_its_keys_and_applying_it_again_changes_nothing(
    service, library, account, tmp_path
):
    sym, mac, ecc, generated = new_id(), new_id(), new_id(), new_id()
    material, mac_material = os.urandom(32), os.urandom(40)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    alias = f"alias/seed-{sym[:8]}"
    path = seed_file(
        tmp_path,
        {"KeyId": sym, "Description": "app", "material": b64(material), "Aliases": [alias],
         "Tags": {"team": "infra"}},
        {"KeyId": mac, "KeySpec": "HMAC_256", "material": b64(mac_material)},
        {"KeyId": ecc, "KeySpec": "ECC_NIST_P256", "material": b64(pkcs8(ec_key))},
        {"KeyId": generated, "KeySpec": "ECC_NIST_P256", "KeyUsage": "KEY_AGREEMENT"},
    )  # fmt: skip
    outcome = run(service, account, path)
    assert outcome.created == [sym, mac, ecc, generated] and outcome.changed == []
    meta = library.describe_key(KeyId=alias)["KeyMetadata"]
    assert (meta["KeyId"], meta["Origin"], meta["KeyState"]) == (sym, "EXTERNAL", "Enabled")
    assert meta["Description"] == "app"
    assert library.list_resource_tags(KeyId=sym)["Tags"] == [
        {"TagKey": "team", "TagValue": "infra"}
    ]
    got = library.generate_mac(KeyId=mac, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert got == hmac.new(mac_material, b"m", hashlib.sha256).digest()
    public = library.get_public_key(KeyId=ecc)["PublicKey"]
    assert serialization.load_der_public_key(public).public_numbers() == (
        ec_key.public_key().public_numbers()
    )
    assert library.describe_key(KeyId=generated)["KeyMetadata"]["Origin"] == "AWS_KMS"
    blob = library.encrypt(KeyId=sym, Plaintext=b"seeded")["CiphertextBlob"]

    before = {k: library.describe_key(KeyId=k)["KeyMetadata"] for k in outcome.created}
    materials = {k: service.store.inner.materials(k) for k in outcome.created}
    again = run(service, account, path)
    assert again.created == [] and again.changed == []
    assert again.unchanged == [sym, mac, ecc, generated]
    assert {k: library.describe_key(KeyId=k)["KeyMetadata"] for k in outcome.created} == before
    assert {k: service.store.inner.materials(k) for k in outcome.created} == materials
    assert library.decrypt(CiphertextBlob=blob)["Plaintext"] == b"seeded"


@pytest.mark.slow
def test_an_existing_keys_description_tags_aliases_and_policy_are_made_to_match(
    service, library, account, tmp_path
):
    from helpers import policy, statement

    key_id = new_id()
    first = {"KeyId": key_id, "Description": "one", "Tags": {"a": "1", "b": "2"}}
    run(service, account, seed_file(tmp_path, first))
    text = policy(statement("Allow", f"arn:aws:iam::{account}:root", "kms:*"))
    changed = {**first, "Description": "two", "Tags": {"a": "9"}, "Policy": text,
               "Aliases": [f"alias/seed-{key_id[:8]}"]}  # fmt: skip
    outcome = run(service, account, seed_file(tmp_path, changed))
    assert outcome.changed == [key_id]
    assert library.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "two"
    tags = library.list_resource_tags(KeyId=key_id)["Tags"]
    assert tags == [{"TagKey": "a", "TagValue": "9"}]
    assert library.get_key_policy(KeyId=key_id)["Policy"] == text
    assert library.describe_key(KeyId=f"alias/seed-{key_id[:8]}")["KeyMetadata"]["KeyId"] == key_id
    assert run(service, account, seed_file(tmp_path, changed)).unchanged == [key_id]
    # Fields the file leaves out are left alone.
    assert run(service, account, seed_file(tmp_path, {"KeyId": key_id})).unchanged == [key_id]
    assert library.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "two"


@pytest.mark.slow
def test_other_material_for_an_existing_key_names_the_entry_and_leaves_nothing(
    service, library, account, tmp_path
):
    key_id, fresh = new_id(), new_id()
    run(service, account, seed_file(tmp_path, {"KeyId": key_id, "material": b64(os.urandom(32))}))
    blob = library.encrypt(KeyId=key_id, Plaintext=b"kept")["CiphertextBlob"]
    path = seed_file(
        tmp_path,
        {"KeyId": fresh, "Aliases": [f"alias/seed-{fresh[:8]}"]},
        {"KeyId": key_id, "material": b64(os.urandom(32))},
    )
    with pytest.raises(SeedError) as info:
        run(service, account, path)
    message = str(info.value)
    assert f"keys[1] (KeyId {key_id}): material: not the key material" in message
    assert "IncorrectKeyMaterialException" in message
    assert service.store.inner.get_key(fresh) is None  # nothing of the run stays
    assert not service.store.inner.was_deleted(fresh)  # nor was ever made
    assert service.store.inner.get_alias(account, service.region, f"alias/seed-{fresh[:8]}") is None
    assert library.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"


@pytest.mark.slow
def test_a_failure_after_keys_were_made_deletes_them_with_their_token_objects(
    service, library, account, tmp_path, token, monkeypatch
):
    made, failing = new_id(), new_id()
    path = seed_file(
        tmp_path,
        {"KeyId": made, "material": b64(os.urandom(32)), "Aliases": [f"alias/seed-{made[:8]}"]},
        {"KeyId": failing, "Policy": library_policy(account)},
    )
    seen: list[str] = []
    real = applying._put_policy

    def failing_policy(svc, plan):
        if plan.entry.key_id == failing:
            seen.extend(m.material_id for m in svc.store.inner.materials(made))
            raise errors.KMSInternalException("the store went away")
        real(svc, plan)

    monkeypatch.setattr(applying, "_put_policy", failing_policy)
    with pytest.raises(SeedError) as info:
        run(service, account, path)
    message = str(info.value)
    assert f"keys[1] (KeyId {failing}): KMSInternalException: the store went away" in message
    assert "the 2 key(s) this run created were deleted again" in message
    for key_id in (made, failing):
        assert service.store.inner.get_key(key_id) is None
    assert service.store.inner.get_alias(account, service.region, f"alias/seed-{made[:8]}") is None
    assert len(seen) == 1 and not token.has_master_key(bytes.fromhex(seen[0]))
    # No tombstone: once the cause is mended, the same file seeds those KeyIds.
    assert not service.store.inner.was_deleted(made)
    monkeypatch.setattr(applying, "_put_policy", real)
    assert len(run(service, account, path).created) == 2


def library_policy(account: str) -> str:
    from helpers import policy, statement

    return policy(statement("Allow", f"arn:aws:iam::{account}:root", "kms:*"))


@pytest.mark.slow
def test_what_an_existing_key_or_alias_forbids_is_named(service, library, account, tmp_path):
    other = library.create_key()["KeyMetadata"]["KeyId"]
    alias = f"alias/taken-{other[:8]}"
    library.create_alias(AliasName=alias, TargetKeyId=other)
    key_id = new_id()
    cases = [
        ({"KeyId": key_id, "Aliases": [alias]}, f"Aliases: {alias} already points to another"),
        ({"KeyId": other, "material": b64(os.urandom(32))}, "material generated on the token"),
        ({"KeyId": other, "KeySpec": "HMAC_256"}, "exists as SYMMETRIC_DEFAULT/ENCRYPT_DECRYPT"),
        ({"KeyId": other, "account_id": "111122223333"}, f"exists in account {account}"),
        ({"KeyId": key_id, "Policy": library_policy("111122223333")}, "Policy: "),
    ]
    for fields, what in cases:
        with pytest.raises(SeedError) as info:
            run(service, account, seed_file(tmp_path, fields))
        assert f"keys[0] (KeyId {fields['KeyId']}): " in str(info.value)
        assert what in str(info.value), str(info.value)
    assert service.store.inner.get_key(key_id) is None
    library.schedule_key_deletion(KeyId=other, PendingWindowInDays=7)
    with pytest.raises(SeedError, match="pending deletion"):
        run(service, account, seed_file(tmp_path, {"KeyId": other}))


# -- hsmkms serve --seed: two fresh homes, real servers (slow) ----------------------------------
def serve_once(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``hsmkms serve --home HOME ARGS`` that is expected to stop by itself."""
    return subprocess.run(
        [sys.executable, "-m", "hsmkms", "serve", "--home", str(home), "--port", "1", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        cwd=REPO,
    )


@pytest.mark.slow
def test_two_fresh_homes_seeded_with_one_file_share_blobs_macs_and_keys(tmp_path):
    from server import ServerProcess

    sym, mac, signer, rsa_id = new_id(), new_id(), new_id(), new_id()
    mac_material = os.urandom(64)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(65537, 2048)
    files = tmp_path / "seed"
    files.mkdir()
    private_file(files / "signer.pem", pkcs8(ec_key, serialization.Encoding.PEM))
    private_file(files / "mac.bin", mac_material)
    entries = [
        {"KeyId": sym, "Description": "fixtures", "material": b64(os.urandom(32)),
         "Aliases": ["alias/fixtures"]},
        {"KeyId": mac, "KeySpec": "HMAC_512", "material_file": "mac.bin"},
        {"KeyId": signer, "KeySpec": "ECC_NIST_P256", "material_file": "signer.pem"},
        {"KeyId": rsa_id, "KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY",
         "material": pkcs8(rsa_key, serialization.Encoding.PEM).decode()},
    ]  # fmt: skip
    path = seed_file(files, *entries)

    with ServerProcess(tmp_path / "a", extra_args=("--seed", str(path))) as a:
        assert "4 key(s) created" in a.log()
        kms = a.client()
        blob = kms.encrypt(KeyId="alias/fixtures", Plaintext=b"checked in",
                           EncryptionContext={"app": "ci"})["CiphertextBlob"]  # fmt: skip
        mac_a = kms.generate_mac(KeyId=mac, Message=b"m", MacAlgorithm="HMAC_SHA_512")["Mac"]
        signature = kms.sign(KeyId=signer, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    assert mac_a == hmac.new(mac_material, b"m", hashlib.sha512).digest()

    # Another fresh home (two workers: the seed is applied once, before they start).
    with ServerProcess(tmp_path / "b", workers=2, extra_args=("--seed", str(path))) as b:
        assert "4 key(s) created" in b.log()
        kms = b.client()
        back = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"app": "ci"})
        assert back["Plaintext"] == b"checked in" and back["KeyId"].endswith(sym)
        assert (
            kms.generate_mac(KeyId=mac, Message=b"m", MacAlgorithm="HMAC_SHA_512")["Mac"] == mac_a
        )
        assert kms.verify(KeyId=signer, Message=b"m", Signature=signature["Signature"],
                          SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]  # fmt: skip
        for key_id, private in ((signer, ec_key), (rsa_id, rsa_key)):
            public = serialization.load_der_public_key(
                kms.get_public_key(KeyId=key_id)["PublicKey"]
            )
            assert public.public_numbers() == private.public_key().public_numbers()
        signed = kms.sign(KeyId=rsa_id, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
        offline_verify(rsa_key.public_key(), "RSASSA_PSS_SHA_256", b"m", signed["Signature"])

    # Home A again, with other material for the first key: start-up stops, naming the entry.
    entries[0] = {**entries[0], "material": b64(os.urandom(32))}
    entries.insert(0, {"KeyId": new_id()})  # a new key before it, never left behind
    changed = seed_file(files, *entries, name="changed.yaml")
    result = serve_once(tmp_path / "a", "--seed", str(changed))
    assert result.returncode == 1, result
    assert f"keys[1] (KeyId {sym}): material: not the key material" in result.stderr
    assert "Traceback" not in result.stderr
    with ServerProcess(tmp_path / "a", extra_args=("--seed", str(path))) as a:
        assert "0 key(s) created, 0 updated, 4 unchanged" in a.log()
        assert len(a.client().list_keys()["Keys"]) == 4


BAD_FILES = {
    "unknown field": ({"Colour": "blue"}, "Colour: unknown field"),
    "bad base64": ({"material": "not base64!"}, "material: not base64"),
    "wrong length": ({"material": b64(os.urandom(31))}, "material: symmetric key material"),
    "missing KeyId": ({"KeyId": None}, "KeyId: missing"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_seed_file_stops_serve_naming_the_entry(tmp_path, case):
    fields, what = BAD_FILES[case]
    key_id = new_id()
    entry = {k: v for k, v in {"KeyId": key_id, **fields}.items() if v is not None}
    path = seed_file(tmp_path, {"KeyId": new_id()}, entry)
    result = serve_once(tmp_path / "home", "--seed", str(path))
    assert result.returncode == 1, result
    named = f"keys[1] (KeyId {key_id})" if "KeyId" in entry else "keys[1] (no KeyId)"
    assert f"{named}: {what}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home").exists()  # checked before anything was made


@pytest.mark.slow
def test_the_library_face_applies_a_seed_and_leaves_no_wrapping_key(settings, tmp_path):
    from hsmkms.kms import KMS

    key_id = new_id()
    material = os.urandom(32)
    path = seed_file(tmp_path, {"KeyId": key_id, "material": b64(material)})
    kms = KMS(settings, seed=path)
    try:
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"seeded")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"seeded"
        assert kms.service.store.inner.list_import_parameters_of(key_id) == []
    finally:
        kms.close()
    bad = seed_file(tmp_path, {"KeyId": "not-a-uuid"}, name="bad.yaml")
    with pytest.raises(errors.ValidationException, match="keys\\[0\\]"):
        KMS(settings, seed=bad)
