"""``hsmkms doctor`` with asymmetric and HMAC keys beside a running server (issue 14): their
token objects (private keys, HMAC keys) are key materials like master keys, cross-checked,
checked in depth, reported as orphans and fixed, missing, unsealed, and gone after deletion.

Each test looks only at the materials it made: the module shares one server and home.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError
from faults import doctor, doctor_report, on_token, wait_for
from server import ServerProcess

KINDS = {
    ("RSA_2048", "SIGN_VERIFY"): "RSA",
    ("RSA_2048", "ENCRYPT_DECRYPT"): "RSA",
    ("ECC_NIST_P256", "SIGN_VERIFY"): "EC",
    ("ECC_NIST_P384", "KEY_AGREEMENT"): "EC",
    ("ECC_SECG_P256K1", "SIGN_VERIFY"): "EC",
    ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY"): "EDWARDS",
    ("HMAC_256", "GENERATE_VERIFY_MAC"): "HMAC",
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"): "AES",
    ("ML_DSA_44", "SIGN_VERIFY"): "AES",  # its seed sealed under a master key (issue 15)
}


# The token mode's asymmetric and HMAC token objects; the wrapped mode's doctor checks are in
# tests/features/test_wrapped_mode.py.
pytestmark = pytest.mark.token_objects


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    # A quick scheduler: a key whose deletion is due is swept within a fraction of a second.
    env = {"HSMKMS_SCHEDULER_INTERVAL": "0.1"}
    with ServerProcess(tmp_path_factory.mktemp("doctor-asymmetric"), env=env) as server:
        yield server


def _key(srv: ServerProcess, spec: str, usage: str) -> tuple[str, str]:
    meta = srv.client().create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
    return meta["KeyId"], meta["CurrentKeyMaterialId"]


def _mine(report: dict[str, Any], name: str, materials: set[str]) -> list[dict[str, Any]]:
    return [f for f in report[name] if f["material_id"] in materials]


def _delete_now(srv: ServerProcess, key_id: str) -> None:
    """ScheduleKeyDeletion, then its date moved to the past; the server's sweep does the rest."""
    kms = srv.client()
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with sqlite3.connect(srv.home / "hsmkms.sqlite3") as db:
        db.execute("UPDATE keys SET deletion_date = ? WHERE key_id = ?", (time.time() - 1, key_id))

    def gone() -> bool:
        try:
            kms.describe_key(KeyId=key_id)
        except ClientError as exc:
            return exc.response["Error"]["Code"] == "NotFoundException"
        return False

    wait_for(gone, timeout=20)


def _on_token_now(srv: ServerProcess, materials: list[str]) -> dict[str, bool]:
    return on_token(
        srv.home,
        f"""
for mid in {materials!r}:
    out[mid] = tok.has_master_key(bytes.fromhex(mid))
""",
    )


@pytest.mark.slow  # seconds of a process or a token: kept out of the fast subset
def test_every_kind_of_key_is_on_the_token_and_sealed_in_depth(srv: ServerProcess):
    made = {_key(srv, spec, usage): kind for (spec, usage), kind in KINDS.items()}
    materials = {mid for _key_id, mid in made}
    code, report = doctor_report(srv.home, "--deep")
    assert code == 0, report
    assert report["drift"] is False and report["checked_attributes"] is True
    for name in ("missing", "orphans", "unsealed"):
        assert _mine(report, name, materials) == [], (name, report[name])
    assert report["checked"] >= len(made) and report["master_keys"] >= len(made)
    for kind in set(made.values()):
        expected = sum(1 for k in made.values() if k == kind)
        assert report["kinds"].get(kind, 0) >= expected, report["kinds"]
    text = doctor(srv.home, "--deep")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "ok: every key material" in text.stdout
    assert "all sealed" in text.stdout and "UNSEALED" not in text.stdout
    for kind in ("AES", "RSA", "EC", "EDWARDS", "HMAC"):
        assert f" {kind}" in text.stdout.splitlines()[0], text.stdout
    # The post-quantum key runs on the host, and doctor says so (issue 15); no other does.
    pq_key = next(key_id for (key_id, _mid), _kind in made.items() if key_id in report["host_keys"])
    assert "ML_DSA_44" in report["host_keys"][pq_key] and "host" in report["host_keys"][pq_key]
    assert sum(1 for key_id, _mid in made if key_id in report["host_keys"]) == 1
    assert f"host key: key {pq_key}: ML_DSA_44" in text.stdout


@pytest.mark.slow
def test_orphan_private_and_hmac_keys_are_reported_and_fix_destroys_the_old_ones(
    srv: ServerProcess,
):
    made = on_token(
        srv.home,
        r"""
import os, uuid
from hsmkms.modes.token_objects import material_label
ids = {}
for name, spec, use, age in (
    ("old_ec", "ECC_NIST_P256", "sign", timedelta(hours=2)),
    ("old_ed", "ECC_NIST_EDWARDS25519", "sign", timedelta(hours=3)),
    ("young_rsa", "RSA_2048", "decrypt", timedelta(seconds=5)),
):
    mid = os.urandom(32)
    tok.create_private_key(
        mid, material_label(str(uuid.uuid4()), mid, datetime.now(UTC) - age), spec, use
    )
    ids[name] = mid.hex()
mid = os.urandom(32)
tok.create_secret_key(
    mid, material_label(str(uuid.uuid4()), mid, datetime.now(UTC) - timedelta(hours=2)), 256
)
ids["old_hmac"] = mid.hex()
foreign = os.urandom(32)
tok.create_private_key(foreign, "not-ours", "ECC_NIST_P256", "derive")
ids["foreign"] = foreign.hex()
out.update(ids)
""",
    )
    mine = set(made.values())
    code, report = doctor_report(srv.home)
    assert code == 0  # orphans are no drift
    orphans = {o["material_id"]: o for o in _mine(report, "orphans", mine)}
    assert set(orphans) == mine
    assert orphans[made["old_ec"]]["age_seconds"] >= 7000
    assert orphans[made["old_hmac"]]["age_seconds"] >= 7000
    assert orphans[made["young_rsa"]]["age_seconds"] < 600
    assert orphans[made["foreign"]]["key_id"] is None
    assert all(o["key_exists"] is False for o in orphans.values())
    text = doctor(srv.home).stdout
    for mid in mine:
        assert f"orphan: key object {mid}" in text and f"{mid} of" in text
    assert "harmless" in text

    code, report = doctor_report(srv.home, "--fix")
    assert code == 0
    destroyed = {o["material_id"] for o in _mine(report, "orphans", mine) if o["destroyed"]}
    assert destroyed == {made["old_ec"], made["old_ed"], made["old_hmac"]}
    left = _on_token_now(srv, sorted(mine))
    assert {name: left[mid] for name, mid in made.items()} == {
        "old_ec": False, "old_ed": False, "old_hmac": False, "young_rsa": True, "foreign": True,
    }  # fmt: skip
    # --min-age 0 takes the young one too; an object hsmkms did not label is never touched.
    code, report = doctor_report(srv.home, "--fix", "--min-age", "0")
    assert {o["material_id"] for o in _mine(report, "orphans", mine) if o["destroyed"]} == {
        made["young_rsa"]
    }
    assert _on_token_now(srv, [made["young_rsa"], made["foreign"]]) == {
        made["young_rsa"]: False, made["foreign"]: True,
    }  # fmt: skip
    on_token(srv.home, f"tok.destroy_master_key(bytes.fromhex({made['foreign']!r}))")


@pytest.mark.slow
def test_a_missing_private_key_is_drift_named_by_its_kind_and_the_key_unavailable(
    srv: ServerProcess,
):
    kms = srv.client()
    key_id, material = _key(srv, "ECC_NIST_P256", "SIGN_VERIFY")
    hmac_id, hmac_material = _key(srv, "HMAC_256", "GENERATE_VERIFY_MAC")
    kms.sign(KeyId=key_id, Message=b"before", SigningAlgorithm="ECDSA_SHA_256")
    on_token(
        srv.home,
        f"""
for mid in ({material!r}, {hmac_material!r}):
    tok.destroy_master_key(bytes.fromhex(mid))
""",
    )
    code, report = doctor_report(srv.home)
    assert code == 1 and report["drift"] is True
    lost = {m["material_id"]: m for m in _mine(report, "missing", {material, hmac_material})}
    assert set(lost) == {material, hmac_material}
    assert lost[material]["kind"] == "EC" and lost[material]["key_spec"] == "ECC_NIST_P256"
    assert lost[hmac_material]["kind"] == "HMAC"
    assert not any(m["deletion_in_progress"] for m in lost.values())
    text = doctor(srv.home).stdout
    assert f"MISSING: key {key_id}" in text and "EC private key" in text
    assert "the key cannot sign" in text and "cannot make or verify MACs" in text
    # The server's cached handle is dead: it must look again and say the key is unavailable.
    for call in (
        lambda: kms.sign(KeyId=key_id, Message=b"after", SigningAlgorithm="ECDSA_SHA_256"),
        lambda: kms.generate_mac(KeyId=hmac_id, Message=b"after", MacAlgorithm="HMAC_SHA_256"),
    ):
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["Error"]["Code"] == "KeyUnavailableException"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    # Deleting the keys clears the drift: the sweep finds nothing to destroy and goes on.
    for kid in (key_id, hmac_id):
        _delete_now(srv, kid)
    code, report = doctor_report(srv.home)
    assert _mine(report, "missing", {material, hmac_material}) == []


@pytest.mark.slow
def test_an_unsealed_private_key_is_drift_in_depth_only(srv: ServerProcess):
    key_id, material = _key(srv, "ECC_NIST_P256", "SIGN_VERIFY")
    # Replace the sealed key object by one with the same CKA_ID that lets its secret out.
    on_token(
        srv.home,
        f"""
from pkcs11 import Attribute, KeyType
mid = bytes.fromhex({material!r})
label = tok.check_master_key(mid).label
tok.destroy_master_key(mid)
with tok._login.side_session() as session:
    params = session.create_domain_parameters(
        KeyType.EC, {{Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")}}, local=True
    )
    params.generate_keypair(
        store=True, capabilities=0,
        public_template={{Attribute.TOKEN: False}},
        private_template={{Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.ID: mid,
                           Attribute.LABEL: label, Attribute.SIGN: True,
                           Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}},
    )
""",
    )
    code, report = doctor_report(srv.home)
    assert code == 0 and _mine(report, "unsealed", {material}) == []  # not looked at
    code, report = doctor_report(srv.home, "--deep")
    assert code == 1 and report["drift"] is True
    [finding] = _mine(report, "unsealed", {material})
    assert finding["key_id"] == key_id and finding["kind"] == "EC"
    for reason in ("CKA_SENSITIVE false", "CKA_EXTRACTABLE true", "its value was readable"):
        assert reason in finding["why"], finding
    text = doctor(srv.home, "--deep")
    assert text.returncode == 1
    assert f"UNSEALED: key {key_id} (ECC_NIST_P256) EC private key {material}" in text.stdout
    _delete_now(srv, key_id)  # the sweep destroys the unsealed object with the key
    assert _on_token_now(srv, [material]) == {material: False}


@pytest.mark.slow
def test_deletion_over_the_wire_destroys_the_token_objects(srv: ServerProcess):
    kms = srv.client()
    made = [_key(srv, "ECC_NIST_P256", "SIGN_VERIFY"), _key(srv, "HMAC_384", "GENERATE_VERIFY_MAC")]
    materials = [mid for _key_id, mid in made]
    assert _on_token_now(srv, materials) == dict.fromkeys(materials, True)
    for key_id, _mid in made:
        _delete_now(srv, key_id)
    assert _on_token_now(srv, materials) == dict.fromkeys(materials, False)
    for call in (
        lambda: kms.sign(KeyId=made[0][0], Message=b"m", SigningAlgorithm="ECDSA_SHA_256"),
        lambda: kms.generate_mac(KeyId=made[1][0], Message=b"m", MacAlgorithm="HMAC_SHA_384"),
    ):
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["Error"]["Code"] == "NotFoundException"
    code, report = doctor_report(srv.home)
    for name in ("missing", "orphans"):
        assert _mine(report, name, set(materials)) == []


@pytest.mark.slow
def test_a_private_key_with_two_usages_is_drift_in_depth(srv: ServerProcess):
    key_id, material = _key(srv, "ECC_NIST_P256", "SIGN_VERIFY")
    # The same CKA_ID, sealed as hsmkms seals, but allowed to derive as well as sign.
    replaced = on_token(
        srv.home,
        f"""
from pkcs11 import Attribute, KeyType
mid = bytes.fromhex({material!r})
label = tok.check_master_key(mid).label
tok.destroy_master_key(mid)
with tok._login.side_session() as session:
    params = session.create_domain_parameters(
        KeyType.EC, {{Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")}}, local=True
    )
    params.generate_keypair(
        store=True, capabilities=0,
        public_template={{Attribute.TOKEN: False}},
        private_template={{Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.ID: mid,
                           Attribute.LABEL: label, Attribute.SIGN: True, Attribute.DERIVE: True,
                           Attribute.DECRYPT: False, Attribute.SENSITIVE: True,
                           Attribute.EXTRACTABLE: False, Attribute.MODIFIABLE: False}},
    )
check = tok.check_master_key(mid)
out.update(sealed=check.sealed, sign=check.sign, derive=check.derive)
""",
    )
    assert replaced == {"sealed": True, "sign": True, "derive": True}
    try:
        code, report = doctor_report(srv.home, "--deep")
        assert code == 1 and [u["key_id"] for u in _mine(report, "unsealed", {material})] == [
            key_id
        ]
    finally:
        _delete_now(srv, key_id)


@pytest.mark.slow
def test_imported_material_is_sealed_in_depth_and_deleted_material_is_not_missing(
    srv: ServerProcess,
):
    """Unwrapped into the token, imported material is never always-sensitive (PKCS#11): doctor
    checks the rest; material deleted on purpose is absent as it should be (issue 16)."""
    import os

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    kms = srv.client()
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    parameters = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    public = serialization.load_der_public_key(parameters["PublicKey"])
    mid = kms.import_key_material(
        KeyId=key_id,
        ImportToken=parameters["ImportToken"],
        EncryptedKeyMaterial=public.encrypt(
            os.urandom(32), padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
        ),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )["KeyMaterialId"]
    code, report = doctor_report(srv.home, "--deep")
    assert code == 0, {k: v for k, v in report.items() if v}
    for name in ("missing", "orphans", "unsealed"):
        assert _mine(report, name, {mid}) == [], (name, report[name])
    kms.delete_imported_key_material(KeyId=key_id)
    assert _on_token_now(srv, [mid]) == {mid: False}
    code, report = doctor_report(srv.home, "--deep")
    assert code == 0, {k: v for k, v in report.items() if v}
    assert _mine(report, "missing", {mid}) == []


@pytest.mark.slow
def test_the_server_scheduler_deletes_expired_material_from_the_token(srv: ServerProcess):
    """ValidTo passes; the server's own scheduler deletes the material from the token, and
    the key waits for the same material again (issue 16)."""
    import os
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    kms = srv.client()
    key_id = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    material = os.urandom(32)

    def import_it(**expiry: Any) -> str:
        parameters = kms.get_parameters_for_import(
            KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
        )
        public = serialization.load_der_public_key(parameters["PublicKey"])
        pad = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
        return kms.import_key_material(
            KeyId=key_id,
            ImportToken=parameters["ImportToken"],
            EncryptedKeyMaterial=public.encrypt(material, pad),
            **expiry,
        )["KeyMaterialId"]

    mid = import_it(ValidTo=datetime.now(UTC) + timedelta(seconds=2))
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    wait_for(
        lambda: kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport",
        timeout=20,
    )
    wait_for(lambda: _on_token_now(srv, [mid]) == {mid: False}, timeout=10, step=0.5)
    assert import_it(ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE") == mid
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
