"""GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext for every KeyPairSpec, with pairs
made on the host and on the token: the keys parse, match, and the blob decrypts to the PKCS#8."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from asn1crypto import core
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mlkem, rsa
from helpers import KEY_PAIR_SPECS, generation_params, raises

CONTEXT = {"document": "42"}
CURVES = {
    "ECC_NIST_P256": "secp256r1",
    "ECC_NIST_P384": "secp384r1",
    "ECC_NIST_P521": "secp521r1",
    "ECC_SECG_P256K1": "secp256k1",
}


@pytest.fixture(scope="module")
def key(kms):
    return kms.create_key(Description="data key pairs")["KeyMetadata"]


def spki(der: bytes) -> bytes:
    key = serialization.load_der_public_key(der)
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_pair(spec: str, public_der: bytes, private_der: bytes) -> None:
    """What a user checks: both parse as standard DER, are of the spec, and belong together."""
    public = serialization.load_der_public_key(public_der)
    private = serialization.load_der_private_key(private_der, password=None)
    if spec.startswith("ML_KEM_"):  # asn1crypto 1.5 knows no ML-KEM OID: the bare structure
        info = core.Sequence.load(private_der, strict=True)
        assert core.Integer.load(info[0].dump()).native == 0
        assert core.Sequence.load(public_der, strict=True).dump() == public_der
    else:
        info = asn1_keys.PrivateKeyInfo.load(private_der)
        assert info["version"].native == 0  # RFC 5958 v1 (PKCS#8), encoded as INTEGER 0
        assert info.dump() == private_der  # strict DER, no trailing padding
        assert asn1_keys.PublicKeyInfo.load(public_der).dump() == public_der
    if spec.startswith("RSA_"):
        assert isinstance(private, rsa.RSAPrivateKey)
        assert private.key_size == int(spec[4:])
    elif spec == "ECC_NIST_EDWARDS25519":
        assert isinstance(private, ed25519.Ed25519PrivateKey)
    elif spec.startswith("ML_KEM_"):
        # AWS's seed format: [0] IMPLICIT OCTET STRING of d || z, 86 bytes for every spec
        cls = {"ML_KEM_768": mlkem.MLKEM768PrivateKey, "ML_KEM_1024": mlkem.MLKEM1024PrivateKey}
        assert isinstance(private, cls[spec])
        assert len(private_der) == 86 and private_der[20:22] == b"\x80\x40"
        assert len(public_der) == {"ML_KEM_768": 1206, "ML_KEM_1024": 1590}[spec]
        secret, ciphertext = public.encapsulate()
        assert private.decapsulate(ciphertext) == secret
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == CURVES[spec]
    mine = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert mine == spki(public_der)
    assert isinstance(public, type(private.public_key())) or True


@pytest.mark.parametrize("spec", generation_params(KEY_PAIR_SPECS))
def test_generate_data_key_pair(kms, key, spec):
    out = kms.generate_data_key_pair(
        KeyId=key["KeyId"], KeyPairSpec=spec, EncryptionContext=CONTEXT
    )
    assert out["KeyId"] == key["Arn"]
    assert out["KeyPairSpec"] == spec
    assert re.fullmatch(r"[0-9a-f]{64}", out["KeyMaterialId"])
    check_pair(spec, out["PublicKey"], out["PrivateKeyPlaintext"])
    back = kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)
    assert back["Plaintext"] == out["PrivateKeyPlaintext"]
    assert back["KeyMaterialId"] == out["KeyMaterialId"]
    with raises("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"])


@pytest.mark.parametrize("spec", generation_params(KEY_PAIR_SPECS))
def test_generate_data_key_pair_without_plaintext(kms, key, spec):
    out = kms.generate_data_key_pair_without_plaintext(
        KeyId=key["Arn"], KeyPairSpec=spec, EncryptionContext=CONTEXT
    )
    assert "PrivateKeyPlaintext" not in out
    assert out["KeyPairSpec"] == spec
    back = kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)
    check_pair(spec, out["PublicKey"], back["Plaintext"])
    with raises("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"], EncryptionContext={"a": "b"})


@pytest.mark.parametrize("spec", generation_params(KEY_PAIR_SPECS))
def test_pairs_made_on_the_token(token_pairs_kms, spec):
    kms = token_pairs_kms
    key = kms.create_key()["KeyMetadata"]
    out = kms.generate_data_key_pair(
        KeyId=key["KeyId"], KeyPairSpec=spec, EncryptionContext=CONTEXT
    )
    check_pair(spec, out["PublicKey"], out["PrivateKeyPlaintext"])
    back = kms.decrypt(CiphertextBlob=out["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)
    assert back["Plaintext"] == out["PrivateKeyPlaintext"]
    wp = kms.generate_data_key_pair_without_plaintext(
        KeyId=key["KeyId"], KeyPairSpec=spec, EncryptionContext=CONTEXT
    )
    back = kms.decrypt(CiphertextBlob=wp["PrivateKeyCiphertextBlob"], EncryptionContext=CONTEXT)
    check_pair(spec, wp["PublicKey"], back["Plaintext"])
    with raises("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=wp["PrivateKeyCiphertextBlob"])
    flipped = bytearray(wp["PrivateKeyCiphertextBlob"])
    flipped[len(flipped) // 2] ^= 0x10
    with raises("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=bytes(flipped), EncryptionContext=CONTEXT)


def test_every_call_returns_a_fresh_pair(kms, key):
    seen = {
        kms.generate_data_key_pair(KeyId=key["KeyId"], KeyPairSpec="RSA_2048")["PublicKey"]
        for _ in range(4)
    }
    assert len(seen) == 4


def test_sm2_is_china_only_and_ml_kem_512_unsupported(kms, key):
    with raises("UnsupportedOperationException", "China"):
        kms.generate_data_key_pair(KeyId=key["KeyId"], KeyPairSpec="SM2")
    for operation in (kms.generate_data_key_pair, kms.generate_data_key_pair_without_plaintext):
        with raises("UnsupportedOperationException", "ML_KEM_512"):
            operation(KeyId=key["KeyId"], KeyPairSpec="ML_KEM_512")


@pytest.mark.sqlite_home
@pytest.mark.slow  # seconds of a process or a token: kept out of the fast subset
def test_blobs_decrypt_after_the_process_restarts(library, settings, token_pairs_kms, tmp_path):
    """A new process on the same home decrypts blobs made here, host and token made alike."""
    key = library.create_key()["KeyMetadata"]
    blobs = []
    for face, spec in ((library, "ECC_NIST_P384"), (token_pairs_kms, "RSA_2048")):
        out = face.generate_data_key_pair(
            KeyId=key["KeyId"], KeyPairSpec=spec, EncryptionContext=CONTEXT
        )
        blobs.append((out["PrivateKeyCiphertextBlob"].hex(), out["PrivateKeyPlaintext"].hex()))
        wp = face.generate_data_key_pair_without_plaintext(
            KeyId=key["KeyId"], KeyPairSpec=spec, EncryptionContext=CONTEXT
        )
        blobs.append((wp["PrivateKeyCiphertextBlob"].hex(), None))
    script = """
import json, sys
from hsmkms.config import Settings
from hsmkms.kms import KMS
from cryptography.hazmat.primitives import serialization
blobs = json.load(open(sys.argv[1]))
kms = KMS(Settings.load(home=sys.argv[2], env={}))
for blob, plain in blobs:
    out = kms.decrypt(CiphertextBlob=bytes.fromhex(blob), EncryptionContext={"document": "42"})
    if plain is not None:
        assert out["Plaintext"].hex() == plain
    serialization.load_der_private_key(out["Plaintext"], None)
kms.close()
print("ok", len(blobs))
"""
    (tmp_path / "blobs.json").write_text(json.dumps(blobs))
    env = {k: v for k, v in os.environ.items() if k != "HSMKMS_PIN"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "blobs.json"), str(settings.home)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok 4"
