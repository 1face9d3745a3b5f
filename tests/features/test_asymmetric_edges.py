"""Asymmetric and HMAC keys fed what they must refuse, over both faces: every answer is AWS's
error with a 4xx status, never a 500 or a stack trace (issue 14).

Wrong digest lengths, members past the model's limits, DeriveSharedSecret peer keys that are
no point of the key's curve (malformed DER, another algorithm, another curve, and well-formed
SubjectPublicKeyInfos whose point is off the curve, crafted with asn1crypto), algorithms of
another spec, EXTERNAL_MU on non-ML-DSA keys, garbage signatures, RSA ciphertexts of the wrong
length or out of range, MACs of the wrong length; and, on the raw wire, blobs that are not
base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac as std_hmac
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from helpers import raises

HASH_BYTES = {"256": 32, "384": 48, "512": 64}
# Every length a digest of some hash has, and a few that none has.
DIGEST_LENGTHS = (1, 20, 28, 32, 48, 64, 65)
P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1
SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

_keys: dict[tuple[int, str, str], str] = {}


@pytest.fixture(scope="module", autouse=True)
def no_trace_in_the_server_log(server):
    """Whatever this module sends, the server logs no stack trace for it."""
    mark = len(server.log())
    yield
    added = server.log()[mark:]
    assert "Traceback" not in added and "ERROR" not in added, added[-5000:]


def key_of(kms, spec: str, usage: str) -> str:
    """One key per face, spec and usage for the whole module."""
    slot = (id(kms), spec, usage)
    if slot not in _keys:
        _keys[slot] = kms.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["KeyId"]
    return _keys[slot]


@contextmanager
def refused(code: str, match: str | None = None) -> Iterator[Any]:
    """AWS's error ``code`` with a 4xx status (the faces report the status alike)."""
    with raises(code, match) as info:
        yield info
    response = info.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400, response
    assert "Traceback" not in response["Error"].get("Message", "")


def public_key(kms, key_id: str) -> Any:
    return serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])


# -- digests, message and member lengths ------------------------------------------------------

DIGEST_ALGORITHMS = [
    ("RSA_2048", "RSASSA_PSS_SHA_256"),
    ("RSA_2048", "RSASSA_PSS_SHA_384"),
    ("RSA_2048", "RSASSA_PSS_SHA_512"),
    ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256"),
    ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_384"),
    ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_512"),
    ("ECC_NIST_P256", "ECDSA_SHA_256"),
    ("ECC_NIST_P384", "ECDSA_SHA_384"),
    ("ECC_NIST_P521", "ECDSA_SHA_512"),
    ("ECC_SECG_P256K1", "ECDSA_SHA_256"),
    ("ECC_NIST_EDWARDS25519", "ED25519_PH_SHA_512"),
]


@pytest.mark.parametrize("spec,algorithm", DIGEST_ALGORITHMS)
def test_a_digest_of_the_wrong_length_is_a_validation_exception(kms, spec, algorithm):
    key = key_of(kms, spec, "SIGN_VERIFY")
    right = HASH_BYTES[algorithm[-3:]]
    for length in sorted({*DIGEST_LENGTHS, right - 1, right + 1} - {right}):
        digest = os.urandom(length)
        with refused("ValidationException", f"Digest is invalid length for algorithm {algorithm}"):
            kms.sign(KeyId=key, Message=digest, MessageType="DIGEST", SigningAlgorithm=algorithm)
        with refused("ValidationException", f"Digest is invalid length for algorithm {algorithm}"):
            kms.verify(
                KeyId=key, Message=digest, MessageType="DIGEST", Signature=b"\x30\x00",
                SigningAlgorithm=algorithm,
            )  # fmt: skip
    if algorithm.startswith("ED25519_PH"):
        return  # the right length: UnsupportedOperationException (test_asymmetric.py)
    signature = kms.sign(
        KeyId=key, Message=os.urandom(right), MessageType="DIGEST", SigningAlgorithm=algorithm
    )["Signature"]
    assert signature


def test_members_past_the_models_limits_are_validation_exceptions(kms):
    sign_key = key_of(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    mac_key = key_of(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    agree_key = key_of(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    rsa_key = key_of(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    too_long = {
        "message": [
            lambda: kms.sign(KeyId=sign_key, Message=b"m" * 4097, SigningAlgorithm="ECDSA_SHA_256"),
            lambda: kms.verify(KeyId=sign_key, Message=b"m" * 4097, Signature=b"s",
                               SigningAlgorithm="ECDSA_SHA_256"),
            lambda: kms.sign(KeyId=sign_key, Message=b"m" * 4097, MessageType="DIGEST",
                             SigningAlgorithm="ECDSA_SHA_256"),
            lambda: kms.generate_mac(KeyId=mac_key, Message=b"m" * 4097,
                                     MacAlgorithm="HMAC_SHA_256"),
            lambda: kms.verify_mac(KeyId=mac_key, Message=b"m" * 4097, Mac=b"x" * 32,
                                   MacAlgorithm="HMAC_SHA_256"),
        ],
        "signature": [
            lambda: kms.verify(KeyId=sign_key, Message=b"m", Signature=b"s" * 6145,
                               SigningAlgorithm="ECDSA_SHA_256"),
        ],
        "mac": [
            lambda: kms.verify_mac(KeyId=mac_key, Message=b"m", Mac=b"x" * 6145,
                                   MacAlgorithm="HMAC_SHA_256"),
        ],
        "publicKey": [
            lambda: kms.derive_shared_secret(KeyId=agree_key, KeyAgreementAlgorithm="ECDH",
                                             PublicKey=b"\x30" * 8193),
        ],
        "ciphertextBlob": [
            lambda: kms.decrypt(KeyId=rsa_key, CiphertextBlob=b"c" * 6145,
                                EncryptionAlgorithm="RSAES_OAEP_SHA_256"),
        ],
    }  # fmt: skip
    for member, calls in too_long.items():
        for call in calls:
            with refused("ValidationException", f"Value at '{member}' failed to satisfy"):
                call()
    # At the limits: a 4,096-byte message signs and verifies; 6,144-byte signatures and MACs
    # are merely wrong.
    message = os.urandom(4096)
    signature = kms.sign(KeyId=sign_key, Message=message, SigningAlgorithm="ECDSA_SHA_256")
    assert kms.verify(
        KeyId=sign_key, Message=message, Signature=signature["Signature"],
        SigningAlgorithm="ECDSA_SHA_256",
    )["SignatureValid"]  # fmt: skip
    with refused("KMSInvalidSignatureException"):
        kms.verify(KeyId=sign_key, Message=message, Signature=b"s" * 6144,
                   SigningAlgorithm="ECDSA_SHA_256")  # fmt: skip
    mac = kms.generate_mac(KeyId=mac_key, Message=message, MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert kms.verify_mac(KeyId=mac_key, Message=message, Mac=mac, MacAlgorithm="HMAC_SHA_256")[
        "MacValid"
    ]
    with refused("KMSInvalidMacException"):
        kms.verify_mac(KeyId=mac_key, Message=message, Mac=b"x" * 6144,
                       MacAlgorithm="HMAC_SHA_256")  # fmt: skip


# -- DeriveSharedSecret peer keys --------------------------------------------------------------


def ec_spki(point: bytes, curve: str = "secp256r1") -> bytes:
    """A SubjectPublicKeyInfo (RFC 5480) of id-ecPublicKey on the named ``curve`` whose
    subjectPublicKey is ``point``, whatever the point is: DER made by hand."""
    info = asn1_keys.PublicKeyInfo(
        {
            "algorithm": {
                "algorithm": "ec",
                "parameters": asn1_keys.ECDomainParameters(name="named", value=curve),
            },
            "public_key": point,
        }
    )
    der = info.dump()
    parsed = asn1_keys.PublicKeyInfo.load(der)  # well-formed DER, whatever the point says
    assert parsed["algorithm"]["parameters"].chosen.native == curve
    assert bytes(parsed["public_key"]) == point
    return der


def _uncompressed(public: ec.EllipticCurvePublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _p256_point() -> tuple[int, int]:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return numbers.x, numbers.y


def _coordinates(x: int, y: int, size: int = 32) -> bytes:
    return b"\x04" + x.to_bytes(size, "big") + y.to_bytes(size, "big")


def _off_curve() -> bytes:
    x, y = _p256_point()
    return ec_spki(_coordinates(x, (y + 1) % P256_PRIME))  # a real x, the wrong y


def _invalid_curve() -> bytes:
    # A secp256k1 point presented as P-256 (same field size): the classic invalid-curve attack.
    return ec_spki(_uncompressed(ec.generate_private_key(ec.SECP256K1()).public_key()))


def _of(public: Any) -> bytes:
    return bytes(public.public_bytes(*SPKI))


_GOOD = ec.generate_private_key(ec.SECP256R1()).public_key()
BAD_PEERS: dict[str, Callable[[], bytes]] = {
    # not a SubjectPublicKeyInfo
    "random bytes": lambda: os.urandom(91),
    "an empty SEQUENCE": lambda: b"\x30\x00",
    "truncated": lambda: _of(_GOOD)[:-1],
    "a trailing byte": lambda: _of(_GOOD) + b"\x00",
    "PEM, not DER": lambda: _GOOD.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ),
    "a bare point": lambda: _uncompressed(_GOOD),
    # keys of another algorithm
    "RSA": lambda: _of(rsa.generate_private_key(65537, 2048).public_key()),
    "Ed25519": lambda: _of(ed25519.Ed25519PrivateKey.generate().public_key()),
    "X25519": lambda: _of(x25519.X25519PrivateKey.generate().public_key()),
    # another curve
    "P-384": lambda: _of(ec.generate_private_key(ec.SECP384R1()).public_key()),
    "secp256k1": lambda: _of(ec.generate_private_key(ec.SECP256K1()).public_key()),
    "brainpoolP256r1": lambda: _of(ec.generate_private_key(ec.BrainpoolP256R1()).public_key()),
    "an unknown curve OID": lambda: ec_spki(_uncompressed(_GOOD), "1.3.6.1.4.1.99999.1"),
    # a well-formed P-256 SubjectPublicKeyInfo whose point is no point of P-256
    "the point (1, 1)": lambda: ec_spki(_coordinates(1, 1)),
    "the point (0, 0)": lambda: ec_spki(_coordinates(0, 0)),
    "a real x with the wrong y": _off_curve,
    "a secp256k1 point named P-256": _invalid_curve,
    "x = p": lambda: ec_spki(_coordinates(P256_PRIME, _p256_point()[1])),
    "the point at infinity": lambda: ec_spki(b"\x00"),
    "a point too short": lambda: ec_spki(b"\x04" + os.urandom(40)),
    "a point too long": lambda: ec_spki(_uncompressed(_GOOD) + b"\x00"),
    "a P-384-sized point": lambda: ec_spki(b"\x04" + os.urandom(96)),
    "an unknown point format": lambda: ec_spki(b"\x05" + _uncompressed(_GOOD)[1:]),
}


@pytest.mark.parametrize("peer", sorted(BAD_PEERS))
def test_derive_shared_secret_refuses_what_is_no_point_of_the_keys_curve(kms, peer):
    key = key_of(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    with refused("ValidationException"):
        kms.derive_shared_secret(
            KeyId=key, KeyAgreementAlgorithm="ECDH", PublicKey=BAD_PEERS[peer]()
        )


def test_hand_made_peer_spkis_of_real_points_are_accepted(kms):
    """The control of the crafted cases above: ec_spki of a point on the curve, uncompressed
    or compressed (RFC 5480 allows both), derives what the peer derives."""
    key = key_of(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    peer = ec.generate_private_key(ec.SECP256R1())
    expected = peer.exchange(ec.ECDH(), public_key(kms, key))
    compressed = peer.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    for point in (_uncompressed(peer.public_key()), compressed):
        out = kms.derive_shared_secret(
            KeyId=key, KeyAgreementAlgorithm="ECDH", PublicKey=ec_spki(point)
        )
        assert out["SharedSecret"] == expected


# -- algorithms, usages and message types ------------------------------------------------------


def test_an_algorithm_of_another_spec_is_invalid_key_usage(kms):
    keys = {
        "RSA_2048": key_of(kms, "RSA_2048", "SIGN_VERIFY"),
        "ECC_NIST_P256": key_of(kms, "ECC_NIST_P256", "SIGN_VERIFY"),
        "ECC_NIST_EDWARDS25519": key_of(kms, "ECC_NIST_EDWARDS25519", "SIGN_VERIFY"),
        "ECC_SECG_P256K1": key_of(kms, "ECC_SECG_P256K1", "SIGN_VERIFY"),
    }
    allowed = {
        "RSA_2048": {"RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_512"},
        "ECC_NIST_P256": {"ECDSA_SHA_256"},
        "ECC_NIST_EDWARDS25519": {"ED25519_SHA_512"},
        "ECC_SECG_P256K1": {"ECDSA_SHA_256"},
    }
    others = ["RSASSA_PSS_SHA_256", "RSASSA_PKCS1_V1_5_SHA_512", "ECDSA_SHA_256",
              "ECDSA_SHA_384", "ECDSA_SHA_512", "ED25519_SHA_512", "SM2DSA",
              "ML_DSA_SHAKE_256"]  # fmt: skip
    for spec, key in keys.items():
        for algorithm in others:
            if algorithm in allowed[spec]:
                continue
            with refused("InvalidKeyUsageException", algorithm):
                kms.sign(KeyId=key, Message=b"m", SigningAlgorithm=algorithm)
            with refused("InvalidKeyUsageException", algorithm):
                kms.verify(KeyId=key, Message=b"m", Signature=b"s", SigningAlgorithm=algorithm)
    mac_key = key_of(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    for algorithm in ("HMAC_SHA_224", "HMAC_SHA_384", "HMAC_SHA_512"):
        with refused("InvalidKeyUsageException", algorithm):
            kms.verify_mac(KeyId=mac_key, Message=b"m", Mac=b"x" * 32, MacAlgorithm=algorithm)
    rsa_key = key_of(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    with refused("InvalidKeyUsageException", "SM2PKE"):
        kms.encrypt(KeyId=rsa_key, Plaintext=b"x", EncryptionAlgorithm="SM2PKE")
    with refused("InvalidKeyUsageException", "SM2PKE"):
        kms.decrypt(KeyId=rsa_key, CiphertextBlob=b"c" * 256, EncryptionAlgorithm="SM2PKE")
    # An operation of another usage, on each kind of key
    agree_key = key_of(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    peer = _of(ec.generate_private_key(ec.SECP256R1()).public_key())
    wrong_usage = [
        lambda: kms.derive_shared_secret(KeyId=keys["ECC_NIST_P256"],
                                         KeyAgreementAlgorithm="ECDH", PublicKey=peer),
        lambda: kms.sign(KeyId=agree_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256"),
        lambda: kms.sign(KeyId=mac_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_256"),
        lambda: kms.sign(KeyId=rsa_key, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256"),
        lambda: kms.decrypt(KeyId=keys["RSA_2048"], CiphertextBlob=b"c" * 256,
                            EncryptionAlgorithm="RSAES_OAEP_SHA_256"),
        lambda: kms.generate_mac(KeyId=keys["ECC_NIST_P256"], Message=b"m",
                                 MacAlgorithm="HMAC_SHA_256"),
        lambda: kms.verify_mac(KeyId=agree_key, Message=b"m", Mac=b"x" * 32,
                               MacAlgorithm="HMAC_SHA_256"),
    ]  # fmt: skip
    for call in wrong_usage:
        with refused("InvalidKeyUsageException"):
            call()


def test_external_mu_is_for_ml_dsa_keys_only(kms):
    for spec, algorithm in (
        ("ECC_NIST_P256", "ECDSA_SHA_256"),
        ("ECC_SECG_P256K1", "ECDSA_SHA_256"),
        ("RSA_2048", "RSASSA_PSS_SHA_256"),
        ("ECC_NIST_EDWARDS25519", "ED25519_SHA_512"),
    ):
        key = key_of(kms, spec, "SIGN_VERIFY")
        for mu in (b"m" * 64, hashlib.sha256(b"m").digest()):
            with refused("ValidationException", "EXTERNAL_MU"):
                kms.sign(KeyId=key, Message=mu, MessageType="EXTERNAL_MU",
                         SigningAlgorithm=algorithm)  # fmt: skip
            with refused("ValidationException", "EXTERNAL_MU"):
                kms.verify(KeyId=key, Message=mu, MessageType="EXTERNAL_MU", Signature=b"s",
                           SigningAlgorithm=algorithm)  # fmt: skip


def test_unknown_enum_values_are_validation_exceptions(kms):
    sign_key = key_of(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    agree_key = key_of(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    peer = _of(ec.generate_private_key(ec.SECP256R1()).public_key())
    with refused("ValidationException", "signingAlgorithm"):
        kms.sign(KeyId=sign_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_1")
    with refused("ValidationException", "messageType"):
        kms.sign(KeyId=sign_key, Message=b"m", MessageType="raw", SigningAlgorithm="ECDSA_SHA_256")
    with refused("ValidationException", "keyAgreementAlgorithm"):
        kms.derive_shared_secret(KeyId=agree_key, KeyAgreementAlgorithm="ECDHE", PublicKey=peer)
    with refused("ValidationException", "macAlgorithm"):
        kms.generate_mac(KeyId=key_of(kms, "HMAC_256", "GENERATE_VERIFY_MAC"), Message=b"m",
                         MacAlgorithm="HMAC_SHA_1")  # fmt: skip


def test_bad_input_is_refused_before_dry_run_answers(kms):
    """As AWS orders its checks: the input's faults first, DryRunOperationException after."""
    sign_key = key_of(kms, "ECC_NIST_P256", "SIGN_VERIFY")
    agree_key = key_of(kms, "ECC_NIST_P256", "KEY_AGREEMENT")
    mac_key = key_of(kms, "HMAC_256", "GENERATE_VERIFY_MAC")
    cases = [
        ("ValidationException", lambda: kms.sign(
            KeyId=sign_key, Message=b"m" * 31, MessageType="DIGEST",
            SigningAlgorithm="ECDSA_SHA_256", DryRun=True)),
        ("ValidationException", lambda: kms.sign(
            KeyId=sign_key, Message=b"m", MessageType="EXTERNAL_MU",
            SigningAlgorithm="ECDSA_SHA_256", DryRun=True)),
        ("InvalidKeyUsageException", lambda: kms.sign(
            KeyId=sign_key, Message=b"m", SigningAlgorithm="ECDSA_SHA_512", DryRun=True)),
        ("ValidationException", lambda: kms.derive_shared_secret(
            KeyId=agree_key, KeyAgreementAlgorithm="ECDH", PublicKey=_off_curve(), DryRun=True)),
        ("InvalidKeyUsageException", lambda: kms.generate_mac(
            KeyId=mac_key, Message=b"m", MacAlgorithm="HMAC_SHA_512", DryRun=True)),
    ]  # fmt: skip
    for code, call in cases:
        with refused(code):
            call()


# -- signatures, ciphertexts and MACs that are not -----------------------------------------------


def _der_int(value: bytes) -> bytes:
    return b"\x02" + bytes([len(value)]) + value


GARBAGE_SIGNATURES = {
    "ECDSA_SHA_256": [
        b"\x00", os.urandom(71), b"\x30" * 70, b"\x30\x81\xff",
        b"\x30\x06" + _der_int(b"\x00") + _der_int(b"\x00"),  # r = s = 0
        b"\x30\x06" + _der_int(b"\x01") + _der_int(b"\x01") + b"\x00",  # trailing byte
        b"\x30\x08" + _der_int(b"\x80\x01") + _der_int(b"\x01\x00"),  # negative r
        bytes(64),  # r || s, not DER (IEEE P1363, what the token answers)
        b"\xff" * 6144,
    ],
    "RSASSA_PSS_SHA_256": [b"\x00", os.urandom(255), os.urandom(257), b"\xff" * 256, bytes(256)],
    "RSASSA_PKCS1_V1_5_SHA_256": [b"\x01", os.urandom(256)[:-1], b"\xff" * 256, bytes(256)],
    "ED25519_SHA_512": [b"\x00", os.urandom(63), os.urandom(65), b"\xff" * 64, bytes(64)],
}  # fmt: skip
SIGNER = {
    "ECDSA_SHA_256": "ECC_NIST_P256",
    "RSASSA_PSS_SHA_256": "RSA_2048",
    "RSASSA_PKCS1_V1_5_SHA_256": "RSA_2048",
    "ED25519_SHA_512": "ECC_NIST_EDWARDS25519",
}


@pytest.mark.parametrize("algorithm", sorted(GARBAGE_SIGNATURES))
def test_verify_of_a_garbage_signature_is_invalid_signature(kms, algorithm):
    key = key_of(kms, SIGNER[algorithm], "SIGN_VERIFY")
    for signature in GARBAGE_SIGNATURES[algorithm]:
        with refused("KMSInvalidSignatureException"):
            kms.verify(KeyId=key, Message=b"m", Signature=signature, SigningAlgorithm=algorithm)
    if algorithm.startswith("ED25519"):
        return
    digest = hashlib.sha256(b"m").digest()
    for signature in GARBAGE_SIGNATURES[algorithm]:
        with refused("KMSInvalidSignatureException"):
            kms.verify(KeyId=key, Message=digest, MessageType="DIGEST", Signature=signature,
                       SigningAlgorithm=algorithm)  # fmt: skip


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"])
def test_an_rsa_ciphertext_of_the_wrong_length_or_out_of_range_is_invalid_ciphertext(
    kms, algorithm
):
    key = key_of(kms, "RSA_2048", "ENCRYPT_DECRYPT")
    modulus = public_key(kms, key).public_numbers().n
    h = hashes.SHA1() if algorithm.endswith("_1") else hashes.SHA256()
    good = kms.encrypt(KeyId=key, Plaintext=b"x", EncryptionAlgorithm=algorithm)["CiphertextBlob"]
    other = rsa.generate_private_key(65537, 2048).public_key()
    bad = [
        b"\x00", os.urandom(255), os.urandom(257), os.urandom(384), os.urandom(512),
        good[1:], good + b"\x00", b"\x00" + good,  # one byte short or long, and padded
        b"\xff" * 256, modulus.to_bytes(256, "big"), (modulus + 1).to_bytes(256, "big"),  # >= n
        bytes(256), (1).to_bytes(256, "big"),  # 0 and 1: EM = c
        other.encrypt(b"x", padding.OAEP(padding.MGF1(h), h, None)),  # another key's
    ]  # fmt: skip
    for ciphertext in bad:
        with refused("InvalidCiphertextException"):
            kms.decrypt(KeyId=key, CiphertextBlob=ciphertext, EncryptionAlgorithm=algorithm)
    # ReEncrypt decrypts the same way, to a symmetric key or back to the RSA key
    destinations = (
        {"DestinationKeyId": kms.create_key()["KeyMetadata"]["KeyId"]},
        {"DestinationKeyId": key, "DestinationEncryptionAlgorithm": algorithm},
    )
    for destination in destinations:
        for ciphertext in bad[1:3]:
            with refused("InvalidCiphertextException"):
                kms.re_encrypt(
                    CiphertextBlob=ciphertext, SourceKeyId=key,
                    SourceEncryptionAlgorithm=algorithm, **destination,
                )  # fmt: skip
    assert (
        kms.decrypt(KeyId=key, CiphertextBlob=good, EncryptionAlgorithm=algorithm)["Plaintext"]
        == b"x"
    )


@pytest.mark.parametrize("bits", ["224", "256", "384", "512"])
def test_verify_mac_of_a_mac_of_the_wrong_length_is_invalid_mac(kms, bits):
    key = key_of(kms, f"HMAC_{bits}", "GENERATE_VERIFY_MAC")
    algorithm = f"HMAC_SHA_{bits}"
    mac = kms.generate_mac(KeyId=key, Message=b"m", MacAlgorithm=algorithm)["Mac"]
    assert len(mac) == int(bits) // 8
    longer = std_hmac.new(os.urandom(32), b"m", "sha512").digest()
    for wrong in (mac[:-1], mac + b"\x00", mac + mac, mac[:16], mac[:1], longer[: len(mac) + 8],
                  os.urandom(6144)):  # fmt: skip
        with refused("KMSInvalidMacException"):
            kms.verify_mac(KeyId=key, Message=b"m", Mac=wrong, MacAlgorithm=algorithm)
    assert kms.verify_mac(KeyId=key, Message=b"m", Mac=mac, MacAlgorithm=algorithm)["MacValid"]


# -- the raw wire ---------------------------------------------------------------------------------

BAD_BASE64 = ["abc", "ab!d", "a===", "YWJj\n", "####", "ab-_", "YW Jj"]


@pytest.fixture(scope="module")
def wire_keys(http) -> dict[str, str]:
    return {
        "sign": key_of(http, "ECC_NIST_P256", "SIGN_VERIFY"),
        "mac": key_of(http, "HMAC_256", "GENERATE_VERIFY_MAC"),
        "agree": key_of(http, "ECC_NIST_P256", "KEY_AGREEMENT"),
        "rsa": key_of(http, "RSA_2048", "ENCRYPT_DECRYPT"),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _wire_params(keys: dict[str, str]) -> dict[str, dict[str, Any]]:
    peer = _of(ec.generate_private_key(ec.SECP256R1()).public_key())
    return {
        "Sign": {"KeyId": keys["sign"], "Message": _b64(b"m"),
                 "SigningAlgorithm": "ECDSA_SHA_256"},
        "Verify": {"KeyId": keys["sign"], "Message": _b64(b"m"), "Signature": _b64(b"s"),
                   "SigningAlgorithm": "ECDSA_SHA_256"},
        "GenerateMac": {"KeyId": keys["mac"], "Message": _b64(b"m"),
                        "MacAlgorithm": "HMAC_SHA_256"},
        "VerifyMac": {"KeyId": keys["mac"], "Message": _b64(b"m"), "Mac": _b64(b"x" * 32),
                      "MacAlgorithm": "HMAC_SHA_256"},
        "DeriveSharedSecret": {"KeyId": keys["agree"], "KeyAgreementAlgorithm": "ECDH",
                               "PublicKey": _b64(peer)},
        "Decrypt": {"KeyId": keys["rsa"], "CiphertextBlob": _b64(b"c" * 256),
                    "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"},
        "Encrypt": {"KeyId": keys["rsa"], "Plaintext": _b64(b"p"),
                    "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"},
    }  # fmt: skip


def _assert_aws_error(answer: Any, code: str, status: int = 400) -> str:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/x-amz-json-1.1"
    assert b"Traceback" not in answer.body and b'File "' not in answer.body, answer
    assert isinstance(answer.json, dict) and set(answer.json) <= {"__type", "message"}, answer
    assert answer.json["__type"] == code, answer
    return str(answer.json.get("message", ""))


BLOB_MEMBERS = [
    ("Sign", "Message"),
    ("Verify", "Message"),
    ("Verify", "Signature"),
    ("GenerateMac", "Message"),
    ("VerifyMac", "Mac"),
    ("DeriveSharedSecret", "PublicKey"),
    ("Decrypt", "CiphertextBlob"),
    ("Encrypt", "Plaintext"),
]


@pytest.mark.parametrize("operation,member", BLOB_MEMBERS)
def test_a_blob_that_is_not_base64_is_a_serialization_exception_on_the_wire(
    server, wire_keys, operation, member
):
    camel = member[0].lower() + member[1:]
    for text in BAD_BASE64:
        params = _wire_params(wire_keys)[operation]
        params[member] = text
        answer = server.post(operation, params)
        message = _assert_aws_error(answer, "SerializationException")
        assert message.startswith(f"Value at '{camel}' can not be converted to a Blob"), message
    # Not a string at all
    for value in (42, ["bWVzc2FnZQ=="], {"b": 1}, True):
        params = _wire_params(wire_keys)[operation]
        params[member] = value
        _assert_aws_error(server.post(operation, params), "SerializationException")
    # The same request with the member valid is answered (or refused) by the operation itself
    answer = server.post(operation, _wire_params(wire_keys)[operation])
    assert answer.status in (200, 400), answer
    if answer.status == 400:
        assert answer.json["__type"] in (
            "KMSInvalidSignatureException", "KMSInvalidMacException", "InvalidCiphertextException"
        ), answer  # fmt: skip


def test_refusals_on_the_raw_wire_are_aws_errors_without_a_trace(server, wire_keys):
    params = _wire_params(wire_keys)
    cases = [
        ("DeriveSharedSecret", {**params["DeriveSharedSecret"], "PublicKey": _b64(_off_curve())},
         "ValidationException"),
        ("DeriveSharedSecret", {**params["DeriveSharedSecret"],
                                "PublicKey": _b64(BAD_PEERS["RSA"]())}, "ValidationException"),
        ("Sign", {**params["Sign"], "Message": _b64(b"m" * 31), "MessageType": "DIGEST"},
         "ValidationException"),
        ("Sign", {**params["Sign"], "Message": _b64(b"m" * 4097)}, "ValidationException"),
        ("Sign", {**params["Sign"], "Message": ""}, "ValidationException"),
        ("Sign", {**params["Sign"], "MessageType": "EXTERNAL_MU"}, "ValidationException"),
        ("Sign", {**params["Sign"], "SigningAlgorithm": "RSASSA_PSS_SHA_256"},
         "InvalidKeyUsageException"),
        ("Verify", {**params["Verify"], "Signature": _b64(b"s" * 6145)}, "ValidationException"),
        ("Verify", {**params["Verify"], "Signature": _b64(b"\x30\x81\xff")},
         "KMSInvalidSignatureException"),
        ("VerifyMac", {**params["VerifyMac"], "Mac": _b64(b"x" * 31)}, "KMSInvalidMacException"),
        ("Decrypt", {**params["Decrypt"], "CiphertextBlob": _b64(b"c" * 255)},
         "InvalidCiphertextException"),
        ("Decrypt", {**params["Decrypt"], "CiphertextBlob": _b64(b"\xff" * 256)},
         "InvalidCiphertextException"),
    ]  # fmt: skip
    for operation, body, code in cases:
        _assert_aws_error(server.post(operation, body), code)
    # A body that is no JSON object
    for raw in (b"{", json.dumps(["Message"]).encode(), b'{"Message": NaN}'):
        _assert_aws_error(server.post("Sign", body=raw), "SerializationException")
