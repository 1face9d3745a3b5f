"""GetKeyLastUsage (issue 17): each of the 14 cryptographic operations AWS counts is recorded
on the keys it used (ReEncrypt on both), with the request's id (the x-amzn-RequestId of the
answer, over HTTP) and its event id; a failed operation or a management call is not."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import raises

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _key(kms, **kwargs) -> str:
    return kms.create_key(**kwargs)["KeyMetadata"]["KeyId"]


@pytest.fixture(scope="module")
def keys(kms):
    return {
        "aes": _key(kms),
        "aes2": _key(kms),
        "mac": _key(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC"),
        "sign": _key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY"),
        "agree": _key(kms, KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT"),
        "kem": _key(kms, KeySpec="ML_KEM_768", KeyUsage="ENCAPSULATE_DECAPSULATE"),
    }


def _peer_spki() -> bytes:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _calls(kms, keys):
    """(operation, the keys it uses, a call) for each of the 14 operations."""
    aes, mac, sign, agree, kem = keys["aes"], keys["mac"], keys["sign"], keys["agree"], keys["kem"]
    blob = kms.encrypt(KeyId=aes, Plaintext=b"x")["CiphertextBlob"]
    tag = kms.generate_mac(KeyId=mac, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    sig = kms.sign(KeyId=sign, Message=b"m", MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")[
        "Signature"
    ]
    encapsulated = kms.encapsulate(KeyId=kem, EncapsulationAlgorithm="ML_KEM")
    return [
        ("Encrypt", [aes], lambda: kms.encrypt(KeyId=aes, Plaintext=b"x")),
        ("Decrypt", [aes], lambda: kms.decrypt(CiphertextBlob=blob)),
        (
            "ReEncrypt",
            [aes, keys["aes2"]],
            lambda: kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=keys["aes2"]),
        ),
        ("GenerateDataKey", [aes], lambda: kms.generate_data_key(KeyId=aes, NumberOfBytes=32)),
        (
            "GenerateDataKeyWithoutPlaintext",
            [aes],
            lambda: kms.generate_data_key_without_plaintext(KeyId=aes, NumberOfBytes=32),
        ),
        (
            "GenerateDataKeyPair",
            [aes],
            lambda: kms.generate_data_key_pair(KeyId=aes, KeyPairSpec="ECC_NIST_P256"),
        ),
        (
            "GenerateDataKeyPairWithoutPlaintext",
            [aes],
            lambda: kms.generate_data_key_pair_without_plaintext(
                KeyId=aes, KeyPairSpec="ECC_NIST_P256"
            ),
        ),
        (
            "GenerateMac",
            [mac],
            lambda: kms.generate_mac(KeyId=mac, Message=b"m", MacAlgorithm="HMAC_SHA_256"),
        ),
        (
            "VerifyMac",
            [mac],
            lambda: kms.verify_mac(KeyId=mac, Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=tag),
        ),
        (
            "Sign",
            [sign],
            lambda: kms.sign(KeyId=sign, Message=b"m", SigningAlgorithm="ECDSA_SHA_256"),
        ),
        (
            "Verify",
            [sign],
            lambda: kms.verify(
                KeyId=sign, Message=b"m", Signature=sig, SigningAlgorithm="ECDSA_SHA_256"
            ),
        ),
        (
            "DeriveSharedSecret",
            [agree],
            lambda: kms.derive_shared_secret(
                KeyId=agree, KeyAgreementAlgorithm="ECDH", PublicKey=_peer_spki()
            ),
        ),
        ("Encapsulate", [kem], lambda: kms.encapsulate(KeyId=kem, EncapsulationAlgorithm="ML_KEM")),
        (
            "Decapsulate",
            [kem],
            lambda: kms.decapsulate(
                KeyId=kem,
                EncapsulationAlgorithm="ML_KEM",
                SharedSecretCiphertextBlob=encapsulated["SharedSecretCiphertextBlob"],
            ),
        ),
    ]


def test_each_of_the_14_operations_is_the_last_use_of_its_keys(kms, keys):
    calls = _calls(kms, keys)
    assert len(calls) == 14
    for name, used, call in calls:
        before = datetime.now(UTC) - timedelta(seconds=1)
        answer = call()
        request_id = answer.get("ResponseMetadata", {}).get("RequestId")
        for key_id in used:
            out = kms.get_key_last_usage(KeyId=key_id)
            last = out["KeyLastUsage"]
            assert last["Operation"] == name, (name, key_id)
            assert before <= last["Timestamp"] <= datetime.now(UTC) + timedelta(seconds=1)
            assert UUID.match(last["KmsRequestId"]) and UUID.match(last["CloudTrailEventId"])
            if request_id is not None:  # over HTTP: the answer's x-amzn-RequestId
                assert last["KmsRequestId"] == request_id
            assert out["KeyId"] == key_id


def test_an_unused_key_a_failure_and_a_management_call_leave_no_use(kms):
    key_id = _key(kms)
    out = kms.get_key_last_usage(KeyId=key_id)
    assert out["KeyLastUsage"] == {}
    assert out["KeyCreationDate"] <= datetime.now(UTC)
    assert out["TrackingStartDate"] >= out["KeyCreationDate"]  # tracking began before it
    kms.describe_key(KeyId=key_id)
    kms.disable_key(KeyId=key_id)
    with raises("DisabledException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    kms.enable_key(KeyId=key_id)
    with raises("DryRunOperationException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x", DryRun=True)
    assert kms.get_key_last_usage(KeyId=key_id)["KeyLastUsage"] == {}
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    with raises("InvalidCiphertextException"):  # the tag's last bit flipped: never a no-op
        kms.decrypt(CiphertextBlob=blob[:-1] + bytes([blob[-1] ^ 1]), KeyId=key_id)
    assert kms.get_key_last_usage(KeyId=key_id)["KeyLastUsage"]["Operation"] == "Encrypt"
    with raises("NotFoundException"):
        kms.get_key_last_usage(KeyId="alias/aws-alias-is-not-a-key-id")


def test_uses_reach_the_store_in_batches_and_survive_a_restart(library, service):
    """The library face: uses are in memory until the next batch (a few seconds, or close)."""
    key_id = _key(library)
    ref = library.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"]
    library.encrypt(KeyId=key_id, Plaintext=b"x")
    service.usage.flush()
    beside = service.store.inner.usage_store()  # SQLite: a file of its own (store/sqlite.py)
    stored = beside.get_key_usage(ref)
    assert stored is not None and stored.operation == "Encrypt"
    # An older use written late (another process's batch) does not replace a newer one.
    from dataclasses import replace

    beside.record_key_usage(
        [replace(stored, operation="Decrypt", used_at=stored.used_at - timedelta(seconds=5))]
    )
    assert beside.get_key_usage(ref).operation == "Encrypt"
    # ... and a batch of last uses leaves the change marker the caches watch as it was.
    marker = service.store.inner.change_marker()
    library.encrypt(KeyId=key_id, Plaintext=b"x")
    service.usage.flush()
    assert service.store.inner.change_marker() == marker
