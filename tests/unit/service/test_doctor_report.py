"""``hsmkms doctor``'s report names the kind of each token object it finds wrong (issue 14):
a master key, an RSA/EC/EDWARDS private key, an HMAC key, and what the key can no longer do."""

from __future__ import annotations

import json

import pytest

from hsmkms.service import doctor
from hsmkms.service.doctor import Missing, Orphan, Report, Unsealed


def _missing(spec: str, usage: str, kind: str, *, due: bool = False) -> Missing:
    return Missing(f"key-{spec}", f"mid-{spec}-{usage}", "Enabled", due, spec, usage, kind)


def test_missing_materials_are_named_by_kind_with_what_is_lost():
    report = Report(
        keys=6,
        materials=6,
        master_keys=1,
        kinds={"AES": 1, "RSA": 2, "EC": 1, "EDWARDS": 1, "HMAC": 1},
        missing=[
            _missing("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "AES"),
            _missing("RSA_2048", "ENCRYPT_DECRYPT", "RSA"),
            _missing("RSA_3072", "SIGN_VERIFY", "RSA"),
            _missing("ECC_NIST_P384", "KEY_AGREEMENT", "EC"),
            _missing("HMAC_256", "GENERATE_VERIFY_MAC", "HMAC"),
            _missing("ECC_NIST_EDWARDS25519", "SIGN_VERIFY", "EDWARDS", due=True),
        ],
    )
    lines = report.lines()
    assert lines[0] == (
        "store: 6 keys, 6 key materials (1 AES, 1 EC, 1 EDWARDS, 1 HMAC, 2 RSA); "
        "token: 1 key objects"
    )
    expected = {
        "SYMMETRIC_DEFAULT": "master key mid-SYMMETRIC_DEFAULT-ENCRYPT_DECRYPT is not on the "
        "token: its ciphertexts cannot be decrypted",
        "RSA_2048": "RSA private key mid-RSA_2048-ENCRYPT_DECRYPT is not on the token: its "
        "ciphertexts cannot be decrypted",
        "RSA_3072": "RSA private key mid-RSA_3072-SIGN_VERIFY is not on the token: the key "
        "cannot sign",
        "ECC_NIST_P384": "EC private key mid-ECC_NIST_P384-KEY_AGREEMENT is not on the token: "
        "the key cannot derive shared secrets",
        "HMAC_256": "HMAC key mid-HMAC_256-GENERATE_VERIFY_MAC is not on the token: the key "
        "cannot make or verify MACs",
    }
    for spec, text in expected.items():
        [line] = [line for line in lines if line.startswith(f"MISSING: key key-{spec} ")]
        assert f"(Enabled, {spec})" in line and text in line, line
    [in_progress] = [line for line in lines if line.startswith("deletion in progress")]
    assert "EDWARDS private key mid-ECC_NIST_EDWARDS25519-SIGN_VERIFY is gone" in in_progress
    assert report.drift and lines[-1].startswith("drift:")


def test_unsealed_and_orphan_key_objects_and_the_deep_summary():
    unsealed = Unsealed("mid-1", "key-1", "CKA_SENSITIVE false", "ECC_NIST_P256", "EC")
    orphan = Orphan("mid-2", "not-ours", None, None, None, False)
    report = Report(unsealed=[unsealed], orphans=[orphan], checked_attributes=True, checked=3)
    lines = report.lines()
    assert "UNSEALED: key key-1 (ECC_NIST_P256) EC private key mid-1: CKA_SENSITIVE false" in lines
    assert "orphan: key object mid-2 of label 'not-ours', age unknown: left" in lines
    assert not any(line.startswith("deep:") for line in lines)  # not all sealed
    sound = Report(checked_attributes=True, checked=3).lines()
    assert any(line.startswith("deep: 3 key objects checked, all sealed") for line in sound)
    assert not any(line.startswith("deep:") for line in Report().lines())  # not --deep


def test_the_json_report_carries_the_kind_and_spec():
    report = Report(
        missing=[_missing("HMAC_512", "GENERATE_VERIFY_MAC", "HMAC")],
        unsealed=[Unsealed("mid-1", "key-1", "why", "RSA_4096", "RSA")],
        kinds={"HMAC": 1, "RSA": 1},
        checked=1,
    )
    out = json.loads(json.dumps(report.to_dict()))
    assert out["missing"][0]["kind"] == "HMAC" and out["missing"][0]["key_spec"] == "HMAC_512"
    assert out["missing"][0]["key_usage"] == "GENERATE_VERIFY_MAC"
    assert out["unsealed"][0]["kind"] == "RSA" and out["unsealed"][0]["key_spec"] == "RSA_4096"
    assert out["kinds"] == {"HMAC": 1, "RSA": 1} and out["checked"] == 1
    assert out["drift"] is True


@pytest.mark.parametrize(
    "spec,kind",
    [
        ("SYMMETRIC_DEFAULT", "AES"),
        ("RSA_4096", "RSA"),
        ("ECC_SECG_P256K1", "EC"),
        ("ECC_NIST_EDWARDS25519", "EDWARDS"),
        ("HMAC_224", "HMAC"),
        ("ML_DSA_65", "AES"),  # a post-quantum key's material: the master key sealing its seed
        ("ML_KEM_1024", "AES"),
        ("NO_SUCH_SPEC", ""),
        ("", ""),
    ],
)
def test_the_kind_of_token_object_each_key_spec_has(spec, kind):
    assert doctor._kind(spec) == kind
