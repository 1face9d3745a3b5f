"""Encrypt, Decrypt, ReEncrypt, GenerateDataKey*, GenerateRandom: the envelope-encryption path."""

from __future__ import annotations

import re

import pytest
from helpers import raises

CONTEXT = {"tenant": "acme", "purpose": "orders"}


@pytest.fixture(scope="module")
def key(kms):
    return kms.create_key(Description="crypto tests")["KeyMetadata"]


def test_encrypt_decrypt_round_trip_with_context(kms, key):
    out = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"secret", EncryptionContext=CONTEXT)
    assert out["KeyId"] == key["Arn"]
    assert out["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=dict(CONTEXT))
    assert back["Plaintext"] == b"secret"
    assert back["KeyId"] == key["Arn"]
    assert back["KeyMaterialId"] == key["CurrentKeyMaterialId"]
    assert back["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"


@pytest.mark.parametrize(
    "context",
    [None, {"tenant": "acme"}, {**CONTEXT, "extra": "1"}, {"tenant": "ACME", "purpose": "orders"}],
    ids=["missing", "fewer", "extra", "case"],
)
def test_decrypt_with_a_different_context_is_invalid_ciphertext(kms, key, context):
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]
    kwargs = {"EncryptionContext": context} if context is not None else {}
    with raises("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob, **kwargs)


def test_every_flipped_bit_is_invalid_ciphertext(kms, key):
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"0123456789abcdef")["CiphertextBlob"]
    for i in range(0, len(blob) * 8, 7):
        flipped = bytearray(blob)
        flipped[i // 8] ^= 1 << (i % 8)
        with raises("InvalidCiphertextException"):
            kms.decrypt(CiphertextBlob=bytes(flipped))


@pytest.mark.parametrize("cut", [1, 10, 40, 62, 70])
def test_truncated_blobs_are_invalid_ciphertext(kms, key, cut):
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"0123456789abcdef")["CiphertextBlob"]
    with raises("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob[:cut])


def test_foreign_blobs_are_invalid_ciphertext(kms):
    # An AWS KMS blob's first bytes, and random junk.
    for junk in (bytes.fromhex("0102020078") + b"\x00" * 150, b"\xff" * 200, b"x"):
        with raises("InvalidCiphertextException"):
            kms.decrypt(CiphertextBlob=junk)


def test_decrypt_with_the_wrong_key_id_is_incorrect_key(kms, key):
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    with raises("IncorrectKeyException"):
        kms.decrypt(CiphertextBlob=blob, KeyId=other)
    assert kms.decrypt(CiphertextBlob=blob, KeyId=key["Arn"])["Plaintext"] == b"x"


def test_plaintext_limits(kms, key):
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"a" * 4096)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"a" * 4096


def test_generate_data_key_by_spec_and_by_length(kms, key):
    for kwargs, size in (
        ({"KeySpec": "AES_256"}, 32),
        ({"KeySpec": "AES_128"}, 16),
        ({"NumberOfBytes": 1}, 1),
        ({"NumberOfBytes": 1024}, 1024),
    ):
        out = kms.generate_data_key(KeyId=key["KeyId"], EncryptionContext=CONTEXT, **kwargs)
        assert len(out["Plaintext"]) == size
        assert out["KeyId"] == key["Arn"]
        assert re.fullmatch(r"[0-9a-f]{64}", out["KeyMaterialId"])
        back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=CONTEXT)
        assert back["Plaintext"] == out["Plaintext"]


def test_generate_data_key_needs_exactly_one_of_spec_and_length(kms, key):
    with raises("ValidationException"):
        kms.generate_data_key(KeyId=key["KeyId"])
    with raises("ValidationException"):
        kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256", NumberOfBytes=32)
    with raises("ValidationException"):
        kms.generate_data_key_without_plaintext(KeyId=key["KeyId"])


def test_generate_data_key_without_plaintext_decrypts_to_a_fresh_key(kms, key):
    out = kms.generate_data_key_without_plaintext(
        KeyId=key["KeyId"], KeySpec="AES_256", EncryptionContext=CONTEXT
    )
    assert "Plaintext" not in out
    assert out["KeyId"] == key["Arn"]
    assert out["KeyMaterialId"] == key["CurrentKeyMaterialId"]
    plain = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=CONTEXT)
    assert len(plain["Plaintext"]) == 32
    again = kms.generate_data_key_without_plaintext(KeyId=key["KeyId"], KeySpec="AES_256")
    assert again["CiphertextBlob"] != out["CiphertextBlob"]


def test_re_encrypt_moves_a_blob_to_another_key_and_context(kms, key):
    dest = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"move me", EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]
    out = kms.re_encrypt(
        CiphertextBlob=blob,
        SourceEncryptionContext=CONTEXT,
        DestinationKeyId=dest["KeyId"],
        DestinationEncryptionContext={"new": "ctx"},
    )
    assert out["SourceKeyId"] == key["Arn"]
    assert out["KeyId"] == dest["Arn"]
    assert out["SourceKeyMaterialId"] == key["CurrentKeyMaterialId"]
    assert out["DestinationKeyMaterialId"] == dest["CurrentKeyMaterialId"]
    back = kms.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext={"new": "ctx"})
    assert back["Plaintext"] == b"move me"
    assert back["KeyId"] == dest["Arn"]
    with raises("InvalidCiphertextException"):
        kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=dest["KeyId"])
    with raises("IncorrectKeyException"):
        kms.re_encrypt(
            CiphertextBlob=blob,
            SourceEncryptionContext=CONTEXT,
            SourceKeyId=dest["KeyId"],
            DestinationKeyId=dest["KeyId"],
        )


def test_generate_random(kms):
    a = kms.generate_random(NumberOfBytes=64)["Plaintext"]
    b = kms.generate_random(NumberOfBytes=64)["Plaintext"]
    assert len(a) == 64 and a != b


def test_dry_run_answers_after_every_other_check(kms, key):
    with raises("DryRunOperationException"):
        kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", DryRun=True)
    with raises("DryRunOperationException"):
        kms.generate_data_key_pair(KeyId=key["KeyId"], KeyPairSpec="RSA_4096", DryRun=True)
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    with raises("DryRunOperationException"):
        kms.decrypt(CiphertextBlob=blob, DryRun=True)
    with raises("DryRunOperationException"):
        kms.decrypt(KeyId=key["KeyId"], DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"])
    with raises("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=b"\x00" * 80, DryRun=True)
    disabled = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=disabled)
    with raises("DisabledException"):
        kms.generate_data_key(KeyId=disabled, KeySpec="AES_256", DryRun=True)


def test_grant_tokens_must_name_a_grant(kms, key):
    me = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["Arn"].split(":")[4]
    token = kms.create_grant(
        KeyId=key["KeyId"], GranteePrincipal=f"arn:aws:iam::{me}:root", Operations=["Encrypt"]
    )["GrantToken"]
    kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=[token])
    for bad in ("not a token!", "AQpAM2RhZTk1MGRkYTE"):
        with raises("InvalidGrantTokenException"):
            kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=[bad])


def test_encryption_algorithm_other_than_symmetric_default_is_refused(kms, key):
    with raises("InvalidKeyUsageException"):
        kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
