"""Post-quantum KMS keys over both faces (issue 15): ML-DSA signing keys and ML-KEM keys with
Encapsulate and Decapsulate, every encoding checked against cryptography."""

from __future__ import annotations

import json
import os

import pytest
from asn1crypto import core
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from helpers import raises

DSA = {  # spec: (public class, SPKI bytes, signature bytes, OID)
    "ML_DSA_44": (mldsa.MLDSA44PublicKey, 1334, 2420, "2.16.840.1.101.3.4.3.17"),
    "ML_DSA_65": (mldsa.MLDSA65PublicKey, 1974, 3309, "2.16.840.1.101.3.4.3.18"),
    "ML_DSA_87": (mldsa.MLDSA87PublicKey, 2614, 4627, "2.16.840.1.101.3.4.3.19"),
}
KEM = {  # spec: (public class, SPKI bytes, ciphertext bytes, OID)
    "ML_KEM_768": (mlkem.MLKEM768PublicKey, 1206, 1088, "2.16.840.1.101.3.4.4.2"),
    "ML_KEM_1024": (mlkem.MLKEM1024PublicKey, 1590, 1568, "2.16.840.1.101.3.4.4.3"),
}
_keys: dict[tuple[int, str], str] = {}


def key_of(kms, spec: str) -> str:
    if (id(kms), spec) not in _keys:
        usage = "SIGN_VERIFY" if spec.startswith("ML_DSA") else "ENCAPSULATE_DECAPSULATE"
        meta = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
        _keys[(id(kms), spec)] = meta["KeyId"]
    return _keys[(id(kms), spec)]


def algorithm_oid(spki: bytes) -> str:
    algorithm = core.Sequence.load(spki)[0]
    return core.ObjectIdentifier.load(algorithm.dump()[2:]).dotted


@pytest.mark.parametrize("spec", sorted(DSA))
def test_ml_dsa_sign_raw_and_external_mu_verify_offline_and_back(kms, spec):
    public_class, spki_len, signature_len, oid = DSA[spec]
    key = key_of(kms, spec)
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert meta["KeySpec"] == spec and meta["SigningAlgorithms"] == ["ML_DSA_SHAKE_256"]
    der = kms.get_public_key(KeyId=key)["PublicKey"]
    assert len(der) == spki_len
    public = serialization.load_der_public_key(der)
    assert isinstance(public, public_class)
    message = os.urandom(4096)
    raw = kms.sign(KeyId=key, Message=message, SigningAlgorithm="ML_DSA_SHAKE_256")["Signature"]
    assert len(raw) == signature_len
    public.verify(raw, message)
    hasher = mldsa.MLDSAMuHasher(public)
    hasher.update(message)
    mu = hasher.finalize()
    assert len(mu) == 64
    public.verify_mu(raw, mu)
    via_mu = kms.sign(
        KeyId=key, Message=mu, MessageType="EXTERNAL_MU", SigningAlgorithm="ML_DSA_SHAKE_256"
    )["Signature"]
    public.verify(via_mu, message)  # an EXTERNAL_MU signature verifies as RAW
    for signature in (raw, via_mu):
        assert kms.verify(
            KeyId=key, Message=message, Signature=signature, SigningAlgorithm="ML_DSA_SHAKE_256"
        )["SignatureValid"]
        assert kms.verify(
            KeyId=key, Message=mu, MessageType="EXTERNAL_MU", Signature=signature,
            SigningAlgorithm="ML_DSA_SHAKE_256",
        )["SignatureValid"]  # fmt: skip
    with raises("KMSInvalidSignatureException"):
        kms.verify(
            KeyId=key, Message=message[:-1], Signature=raw, SigningAlgorithm="ML_DSA_SHAKE_256"
        )


def test_ml_dsa_bad_input(kms):
    key = key_of(kms, "ML_DSA_65")
    with raises("ValidationException", "mu"):
        kms.sign(KeyId=key, Message=b"x" * 63, MessageType="EXTERNAL_MU",
                 SigningAlgorithm="ML_DSA_SHAKE_256")  # fmt: skip
    with raises("ValidationException", "DIGEST"):
        kms.sign(KeyId=key, Message=b"x" * 64, MessageType="DIGEST",
                 SigningAlgorithm="ML_DSA_SHAKE_256")  # fmt: skip
    with raises("ValidationException"):
        kms.sign(KeyId=key, Message=b"x" * 4097, SigningAlgorithm="ML_DSA_SHAKE_256")
    with raises("InvalidKeyUsageException"):
        kms.sign(KeyId=key, Message=b"x", SigningAlgorithm="ECDSA_SHA_256")
    with raises("KMSInvalidSignatureException"):
        kms.verify(KeyId=key, Message=b"x", Signature=b"\x00" * 3309,
                   SigningAlgorithm="ML_DSA_SHAKE_256")  # fmt: skip
    with raises("DryRunOperationException"):
        kms.sign(KeyId=key, Message=b"x", SigningAlgorithm="ML_DSA_SHAKE_256", DryRun=True)
    ecc = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with raises("ValidationException", "EXTERNAL_MU"):
        kms.sign(KeyId=ecc, Message=b"x" * 64, MessageType="EXTERNAL_MU",
                 SigningAlgorithm="ECDSA_SHA_256")  # fmt: skip


@pytest.mark.parametrize("spec", sorted(KEM))
def test_ml_kem_encapsulate_and_decapsulate(kms, spec):
    public_class, spki_len, ciphertext_len, oid = KEM[spec]
    key = key_of(kms, spec)
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert meta["EncapsulationAlgorithms"] == ["ML_KEM"]
    out = kms.get_public_key(KeyId=key)
    assert out["EncapsulationAlgorithms"] == ["ML_KEM"] and len(out["PublicKey"]) == spki_len
    public = serialization.load_der_public_key(out["PublicKey"])
    assert isinstance(public, public_class)
    # offline encapsulation, online decapsulation
    secret, ciphertext = public.encapsulate()
    got = kms.decapsulate(
        KeyId=key, SharedSecretCiphertextBlob=ciphertext, EncapsulationAlgorithm="ML_KEM"
    )
    assert got["SharedSecret"] == secret and got["EncapsulationAlgorithm"] == "ML_KEM"
    # online encapsulation decapsulates online
    enc = kms.encapsulate(KeyId=key, EncapsulationAlgorithm="ML_KEM")
    assert (
        len(enc["SharedSecret"]) == 32 and len(enc["SharedSecretCiphertextBlob"]) == ciphertext_len
    )
    assert kms.decapsulate(
        KeyId=key, SharedSecretCiphertextBlob=enc["SharedSecretCiphertextBlob"],
        EncapsulationAlgorithm="ML_KEM",
    )["SharedSecret"] == enc["SharedSecret"]  # fmt: skip
    # a forged ciphertext of the right length: implicit rejection, a different secret
    forged = bytes(ciphertext_len)
    other = kms.decapsulate(
        KeyId=key, SharedSecretCiphertextBlob=forged, EncapsulationAlgorithm="ML_KEM"
    )
    assert len(other["SharedSecret"]) == 32 and other["SharedSecret"] != secret
    with raises("InvalidCiphertextException"):
        kms.decapsulate(KeyId=key, SharedSecretCiphertextBlob=ciphertext[:-1],
                        EncapsulationAlgorithm="ML_KEM")  # fmt: skip
    with raises("DryRunOperationException"):
        kms.encapsulate(KeyId=key, EncapsulationAlgorithm="ML_KEM", DryRun=True)


def test_pq_keys_refuse_other_operations_and_unsupported_specs(kms):
    kem_key = key_of(kms, "ML_KEM_768")
    dsa_key = key_of(kms, "ML_DSA_44")
    with raises("InvalidKeyUsageException"):
        kms.generate_data_key(KeyId=kem_key, KeySpec="AES_256")
    with raises("InvalidKeyUsageException"):
        kms.encapsulate(KeyId=dsa_key, EncapsulationAlgorithm="ML_KEM")
    with raises("InvalidKeyUsageException"):
        kms.sign(KeyId=kem_key, Message=b"m", SigningAlgorithm="ML_DSA_SHAKE_256")
    with raises("UnsupportedOperationException"):
        kms.enable_key_rotation(KeyId=dsa_key)
    with raises("UnsupportedOperationException", "ML_KEM_512"):
        kms.create_key(KeySpec="ML_KEM_512", KeyUsage="ENCAPSULATE_DECAPSULATE")
    with raises("ValidationException", "not compatible"):
        kms.create_key(KeySpec="ML_DSA_65", KeyUsage="ENCAPSULATE_DECAPSULATE")


def test_pq_key_disabled_and_deleted(kms):
    key = kms.create_key(KeySpec="ML_KEM_1024", KeyUsage="ENCAPSULATE_DECAPSULATE")["KeyMetadata"][
        "KeyId"
    ]
    kms.disable_key(KeyId=key)
    with raises("DisabledException"):
        kms.encapsulate(KeyId=key, EncapsulationAlgorithm="ML_KEM")
    kms.enable_key(KeyId=key)
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    with raises("KMSInvalidStateException"):
        kms.decapsulate(
            KeyId=key, SharedSecretCiphertextBlob=bytes(1568), EncapsulationAlgorithm="ML_KEM"
        )


def test_pq_public_key_oids(kms):
    for spec, (_cls, _len, _n, oid) in {**DSA, **KEM}.items():
        assert algorithm_oid(kms.get_public_key(KeyId=key_of(kms, spec))["PublicKey"]) == oid


def test_grants_and_policies_cover_the_post_quantum_operations(principals):
    p = principals
    admin, bob = p["admin"], p["bob"]  # bob: another account, by grant only
    kem = admin.create_key(KeySpec="ML_KEM_768", KeyUsage="ENCAPSULATE_DECAPSULATE")["KeyMetadata"]
    dsa = admin.create_key(KeySpec="ML_DSA_44", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    only_admin = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": p.root("admin")}, "Action": "kms:*",
                 "Resource": "*"}
            ],
        }
    )  # fmt: skip
    for meta in (kem, dsa):
        admin.put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=only_admin)
    decap = admin.create_grant(
        KeyId=kem["Arn"], GranteePrincipal=p.arn("bob"), Operations=["Decapsulate"]
    )["GrantToken"]
    sign = admin.create_grant(KeyId=dsa["Arn"], GranteePrincipal=p.arn("bob"), Operations=["Sign"])[
        "GrantToken"
    ]
    enc = admin.encapsulate(KeyId=kem["Arn"], EncapsulationAlgorithm="ML_KEM")
    got = bob.decapsulate(
        KeyId=kem["Arn"], SharedSecretCiphertextBlob=enc["SharedSecretCiphertextBlob"],
        EncapsulationAlgorithm="ML_KEM", GrantTokens=[decap],
    )  # fmt: skip
    assert got["SharedSecret"] == enc["SharedSecret"]
    with raises("AccessDeniedException", "kms:Encapsulate"):
        bob.encapsulate(KeyId=kem["Arn"], EncapsulationAlgorithm="ML_KEM", GrantTokens=[decap])
    bob.sign(
        KeyId=dsa["Arn"], Message=b"m", SigningAlgorithm="ML_DSA_SHAKE_256", GrantTokens=[sign]
    )
    with raises("ValidationException"):
        admin.create_grant(
            KeyId=dsa["Arn"], GranteePrincipal=p.arn("bob"), Operations=["Decapsulate"]
        )
