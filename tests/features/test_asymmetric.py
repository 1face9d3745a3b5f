"""Asymmetric and HMAC KMS keys over both faces: every spec x usage x algorithm, checked
offline with cryptography (issue 14)."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from helpers import offline_verify, raises

HASH = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
SIGNING = {
    "RSA_2048": [
        "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
        "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
    ],
    "ECC_NIST_P256": ["ECDSA_SHA_256"],
    "ECC_NIST_P384": ["ECDSA_SHA_384"],
    "ECC_NIST_P521": ["ECDSA_SHA_512"],
    "ECC_SECG_P256K1": ["ECDSA_SHA_256"],
}  # fmt: skip
_keys: dict[tuple[int, str, str], str] = {}


def key_of(kms, spec: str, usage: str) -> str:
    """One key per face, spec and usage for the whole module (RSA keys take a while)."""
    slot = (id(kms), spec, usage)
    if slot not in _keys:
        _keys[slot] = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
    return _keys[slot]


def public_key(kms, key_id: str):
    return serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])


@pytest.mark.parametrize("spec,algorithm", [(s, a) for s, algs in SIGNING.items() for a in algs])
def test_signatures_verify_offline_and_online(kms, spec, algorithm):
    key = key_of(kms, spec, "SIGN_VERIFY")
    public = public_key(kms, key)
    message = os.urandom(300)
    out = kms.sign(KeyId=key, Message=message, SigningAlgorithm=algorithm)
    assert out["SigningAlgorithm"] == algorithm and out["KeyId"].endswith(key)
    offline_verify(public, algorithm, message, out["Signature"])
    assert kms.verify(
        KeyId=key, Message=message, Signature=out["Signature"], SigningAlgorithm=algorithm
    )["SignatureValid"]
    # DIGEST: the same signature scheme over a digest the caller made
    digest = hashlib.new("sha" + algorithm[-3:], message).digest()
    signed = kms.sign(KeyId=key, Message=digest, MessageType="DIGEST", SigningAlgorithm=algorithm)[
        "Signature"
    ]
    offline_verify(public, algorithm, message, signed)
    with raises("KMSInvalidSignatureException"):
        kms.verify(KeyId=key, Message=message + b"x", Signature=signed, SigningAlgorithm=algorithm)


@pytest.mark.parametrize("spec", sorted(SIGNING))
def test_offline_signatures_verify_through_verify(kms, spec):
    key = key_of(kms, spec, "SIGN_VERIFY")
    algorithm = SIGNING[spec][0]
    # Sign offline with a key of our own of the same kind; it must NOT verify under the KMS
    # key, and the KMS key's own signature made offline-checkable must.
    h = HASH[algorithm[-3:]]()
    other = (
        rsa.generate_private_key(65537, 2048)
        if spec.startswith("RSA")
        else ec.generate_private_key(public_key(kms, key).curve)
    )
    pad = padding.PSS(padding.MGF1(h), h.digest_size) if spec.startswith("RSA") else None
    forged = other.sign(b"m", pad, h) if pad else other.sign(b"m", ec.ECDSA(h))
    with raises("KMSInvalidSignatureException"):
        kms.verify(KeyId=key, Message=b"m", Signature=forged, SigningAlgorithm=algorithm)
    with raises("KMSInvalidSignatureException"):
        kms.verify(KeyId=key, Message=b"m", Signature=b"\x30\x00", SigningAlgorithm=algorithm)


def test_ed25519_signs_raw_messages_and_refuses_ed25519ph(kms):
    key = key_of(kms, "ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
    public = public_key(kms, key)
    assert isinstance(public, ed25519.Ed25519PublicKey)
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert meta["SigningAlgorithms"] == ["ED25519_SHA_512", "ED25519_PH_SHA_512"]
    signature = kms.sign(KeyId=key, Message=b"hello", SigningAlgorithm="ED25519_SHA_512")[
        "Signature"
    ]
    assert len(signature) == 64
    public.verify(signature, b"hello")
    assert kms.verify(
        KeyId=key, Message=b"hello", Signature=signature, SigningAlgorithm="ED25519_SHA_512"
    )["SignatureValid"]
    offline = ed25519.Ed25519PrivateKey.generate().sign(b"hello")
    with raises("KMSInvalidSignatureException"):
        kms.verify(
            KeyId=key, Message=b"hello", Signature=offline, SigningAlgorithm="ED25519_SHA_512"
        )
    with raises("ValidationException", "RAW"):
        kms.sign(
            KeyId=key, Message=b"x" * 64, MessageType="DIGEST", SigningAlgorithm="ED25519_SHA_512"
        )
    with raises("UnsupportedOperationException", "ED25519_PH_SHA_512"):
        kms.sign(
            KeyId=key, Message=hashlib.sha512(b"m").digest(), MessageType="DIGEST",
            SigningAlgorithm="ED25519_PH_SHA_512",
        )  # fmt: skip


def test_describe_key_and_get_public_key_show_the_algorithms(kms):
    cases = {
        ("RSA_2048", "ENCRYPT_DECRYPT"): (
            "EncryptionAlgorithms", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
        ),
        ("RSA_2048", "SIGN_VERIFY"): ("SigningAlgorithms", SIGNING["RSA_2048"]),
        ("ECC_NIST_P384", "KEY_AGREEMENT"): ("KeyAgreementAlgorithms", ["ECDH"]),
        ("ECC_SECG_P256K1", "SIGN_VERIFY"): ("SigningAlgorithms", ["ECDSA_SHA_256"]),
    }  # fmt: skip
    for (spec, usage), (member, algorithms) in cases.items():
        key = key_of(kms, spec, usage)
        meta = kms.describe_key(KeyId=key)["KeyMetadata"]
        assert meta["KeySpec"] == meta["CustomerMasterKeySpec"] == spec
        assert meta["KeyUsage"] == usage
        assert meta[member] == algorithms
        out = kms.get_public_key(KeyId=key)
        assert out["KeySpec"] == out["CustomerMasterKeySpec"] == spec
        assert out["KeyUsage"] == usage and out[member] == algorithms
        assert out["KeyId"].endswith(key)
        serialization.load_der_public_key(out["PublicKey"])
    hmac_key = key_of(kms, "HMAC_384", "GENERATE_VERIFY_MAC")
    assert kms.describe_key(KeyId=hmac_key)["KeyMetadata"]["MacAlgorithms"] == ["HMAC_SHA_384"]
    for symmetric in (kms.create_key()["KeyMetadata"]["KeyId"], hmac_key):
        with raises("UnsupportedOperationException"):
            kms.get_public_key(KeyId=symmetric)


@pytest.mark.parametrize(
    "spec,limits",  # an RSA-3072 pair takes 0.3-1.5 s to generate on SoftHSM2: a slow test
    [("RSA_2048", (214, 190)), pytest.param("RSA_3072", (342, 318), marks=pytest.mark.slow)],
)
def test_rsa_encryption_online_and_offline(kms, spec, limits):
    key = key_of(kms, spec, "ENCRYPT_DECRYPT")
    public = public_key(kms, key)
    for algorithm, h, limit in (
        ("RSAES_OAEP_SHA_1", hashes.SHA1, limits[0]),
        ("RSAES_OAEP_SHA_256", hashes.SHA256, limits[1]),
    ):
        pad = padding.OAEP(padding.MGF1(h()), h(), None)
        message = os.urandom(limit)
        blob = kms.encrypt(KeyId=key, Plaintext=message, EncryptionAlgorithm=algorithm)
        assert blob["EncryptionAlgorithm"] == algorithm
        out = kms.decrypt(
            KeyId=key, CiphertextBlob=blob["CiphertextBlob"], EncryptionAlgorithm=algorithm
        )
        assert out["Plaintext"] == message and out["EncryptionAlgorithm"] == algorithm
        offline = public.encrypt(b"made offline", pad)
        assert (
            kms.decrypt(KeyId=key, CiphertextBlob=offline, EncryptionAlgorithm=algorithm)[
                "Plaintext"
            ]
            == b"made offline"
        )
        with raises("ValidationException"):
            kms.encrypt(KeyId=key, Plaintext=os.urandom(limit + 1), EncryptionAlgorithm=algorithm)
        bad = bytes([offline[0] ^ 1]) + offline[1:]
        with raises("InvalidCiphertextException"):
            kms.decrypt(KeyId=key, CiphertextBlob=bad, EncryptionAlgorithm=algorithm)


def test_rsa_decrypt_needs_key_id_algorithm_and_no_context(kms):
    key = key_of(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    blob = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")[
        "CiphertextBlob"
    ]
    with raises("InvalidCiphertextException"):
        kms.decrypt(CiphertextBlob=blob)
    with raises("InvalidKeyUsageException"):
        kms.decrypt(KeyId=key, CiphertextBlob=blob)
    with raises("InvalidKeyUsageException"):
        kms.encrypt(KeyId=key, Plaintext=b"x")
    with raises("ValidationException"):
        kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_1",
                    EncryptionContext={"a": "b"})  # fmt: skip
    with raises("ValidationException"):
        kms.decrypt(KeyId=key, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256",
                    EncryptionContext={"a": "b"})  # fmt: skip


def test_re_encrypt_between_symmetric_and_rsa_keys(kms):
    rsa_key = key_of(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    aes_key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=aes_key, Plaintext=b"secret", EncryptionContext={"k": "v"})
    to_rsa = kms.re_encrypt(
        CiphertextBlob=blob["CiphertextBlob"], SourceEncryptionContext={"k": "v"},
        DestinationKeyId=rsa_key, DestinationEncryptionAlgorithm="RSAES_OAEP_SHA_256",
    )  # fmt: skip
    assert to_rsa["DestinationEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert to_rsa["SourceEncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"
    back = kms.re_encrypt(
        CiphertextBlob=to_rsa["CiphertextBlob"], SourceKeyId=rsa_key,
        SourceEncryptionAlgorithm="RSAES_OAEP_SHA_256", DestinationKeyId=aes_key,
    )  # fmt: skip
    assert back["SourceEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
    assert kms.decrypt(CiphertextBlob=back["CiphertextBlob"])["Plaintext"] == b"secret"


@pytest.mark.parametrize(
    "spec,curve", [("ECC_NIST_P256", ec.SECP256R1()), ("ECC_NIST_P384", ec.SECP384R1()),
                   ("ECC_NIST_P521", ec.SECP521R1())],
)  # fmt: skip
def test_derive_shared_secret_equals_the_peer(kms, spec, curve):
    key = key_of(kms, spec, "KEY_AGREEMENT")
    peer = ec.generate_private_key(curve)
    spki = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    out = kms.derive_shared_secret(KeyId=key, KeyAgreementAlgorithm="ECDH", PublicKey=spki)
    assert out["SharedSecret"] == peer.exchange(ec.ECDH(), public_key(kms, key))
    assert out["KeyAgreementAlgorithm"] == "ECDH" and out["KeyOrigin"] == "AWS_KMS"
    wrong = ec.generate_private_key(ec.SECP256K1() if spec == "ECC_NIST_P256" else ec.SECP256R1())
    wrong_spki = wrong.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with raises("ValidationException", "curve"):
        kms.derive_shared_secret(KeyId=key, KeyAgreementAlgorithm="ECDH", PublicKey=wrong_spki)
    with raises("ValidationException"):
        kms.derive_shared_secret(KeyId=key, KeyAgreementAlgorithm="ECDH", PublicKey=b"\x30\x03abc")


@pytest.mark.parametrize("bits", ["224", "256", "384", "512"])
def test_mac_generate_and_verify(kms, bits):
    key = key_of(kms, f"HMAC_{bits}", "GENERATE_VERIFY_MAC")
    algorithm = f"HMAC_SHA_{bits}"
    out = kms.generate_mac(KeyId=key, Message=b"message", MacAlgorithm=algorithm)
    assert len(out["Mac"]) == int(bits) // 8 and out["MacAlgorithm"] == algorithm
    assert (
        out["Mac"] == kms.generate_mac(KeyId=key, Message=b"message", MacAlgorithm=algorithm)["Mac"]
    )
    assert kms.verify_mac(KeyId=key, Message=b"message", Mac=out["Mac"], MacAlgorithm=algorithm)[
        "MacValid"
    ]
    with raises("KMSInvalidMacException"):
        kms.verify_mac(KeyId=key, Message=b"other", Mac=out["Mac"], MacAlgorithm=algorithm)
    forged = std_hmac.new(os.urandom(int(bits) // 8), b"message", f"sha{bits}").digest()
    with raises("KMSInvalidMacException"):
        kms.verify_mac(KeyId=key, Message=b"message", Mac=forged, MacAlgorithm=algorithm)
    wrong = "HMAC_SHA_256" if bits != "256" else "HMAC_SHA_512"
    with raises("InvalidKeyUsageException"):
        kms.generate_mac(KeyId=key, Message=b"m", MacAlgorithm=wrong)


def test_create_key_refuses_pairs_aws_does_not_allow(kms):
    for spec, usage in (
        ("ECC_NIST_P256", "ENCRYPT_DECRYPT"),
        ("ECC_SECG_P256K1", "KEY_AGREEMENT"),
        ("HMAC_256", "SIGN_VERIFY"),
        ("RSA_2048", "KEY_AGREEMENT"),
        ("ECC_NIST_EDWARDS25519", "ENCRYPT_DECRYPT"),
        ("SYMMETRIC_DEFAULT", "SIGN_VERIFY"),
    ):
        with raises("ValidationException", "not compatible"):
            kms.create_key(KeySpec=spec, KeyUsage=usage)
    with raises("ValidationException"):
        kms.create_key(KeySpec="HMAC_256")  # KeyUsage defaults to ENCRYPT_DECRYPT, as on AWS


def test_wrong_usage_algorithm_and_digest_length(kms):
    sign_key = key_of(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    aes_key = kms.create_key()["KeyMetadata"]["KeyId"]
    with raises("InvalidKeyUsageException"):
        kms.sign(KeyId=aes_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    with raises("InvalidKeyUsageException"):
        kms.sign(KeyId=sign_key, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
    with raises("InvalidKeyUsageException"):
        kms.sign(KeyId=sign_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_384")
    with raises("ValidationException", "Digest is invalid length"):
        kms.sign(
            KeyId=sign_key,
            Message=b"m" * 31,
            MessageType="DIGEST",
            SigningAlgorithm="ECDSA_SHA_256",
        )
    with raises("ValidationException"):
        kms.sign(KeyId=sign_key, Message=b"m" * 4097, SigningAlgorithm="ECDSA_SHA_256")
    for operation in (kms.generate_data_key, kms.generate_data_key_without_plaintext):
        with raises("InvalidKeyUsageException"):
            operation(KeyId=sign_key, KeySpec="AES_256")
    with raises("InvalidKeyUsageException"):
        kms.generate_data_key_pair(
            KeyId=key_of(kms, "RSA_2048", "ENCRYPT_DECRYPT"), KeyPairSpec="ECC_NIST_P256"
        )
    with raises("InvalidKeyUsageException"):
        kms.encrypt(KeyId=sign_key, Plaintext=b"x")
    with raises("InvalidKeyUsageException"):
        kms.generate_mac(KeyId=sign_key, Message=b"m", MacAlgorithm="HMAC_SHA_256")
    with raises("UnsupportedOperationException"):
        kms.enable_key_rotation(KeyId=sign_key)
    with raises("UnsupportedOperationException"):
        kms.rotate_key_on_demand(KeyId=key_of(kms, "HMAC_256", "GENERATE_VERIFY_MAC"))


def test_dry_run_of_each_new_operation(kms):
    sign_key = key_of(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    mac_key = key_of(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    agree_key = key_of(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    peer = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signature = kms.sign(KeyId=sign_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")[
        "Signature"
    ]
    mac = kms.generate_mac(KeyId=mac_key, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    calls = [
        lambda: kms.sign(KeyId=sign_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256",
                         DryRun=True),
        lambda: kms.verify(KeyId=sign_key, Message=b"m", Signature=signature,
                           SigningAlgorithm="ECDSA_SHA_256", DryRun=True),
        lambda: kms.generate_mac(KeyId=mac_key, Message=b"m", MacAlgorithm="HMAC_SHA_256",
                                 DryRun=True),
        lambda: kms.verify_mac(KeyId=mac_key, Message=b"m", Mac=mac, MacAlgorithm="HMAC_SHA_256",
                               DryRun=True),
        lambda: kms.derive_shared_secret(KeyId=agree_key, KeyAgreementAlgorithm="ECDH",
                                         PublicKey=peer, DryRun=True),
    ]  # fmt: skip
    for call in calls:
        with raises("DryRunOperationException"):
            call()


def test_disabled_and_deleted_keys(kms):
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key)
    with raises("DisabledException"):
        kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    kms.enable_key(KeyId=key)
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    with raises("KMSInvalidStateException"):
        kms.sign(KeyId=key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
