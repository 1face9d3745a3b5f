"""Key pairs made on the token: standard SPKI and PKCS#8 out, wrapped private keys back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import pytest
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from helpers import generation_params

from hsmkms.hsm import IntegrityError, KeyNotFound, MechanismUnsupported, WrappedKey
from hsmkms.hsm.testing import key_pair_objects

ALL_SPECS = [
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
]
CURVES = {
    "ECC_NIST_P256": "secp256r1",
    "ECC_NIST_P384": "secp384r1",
    "ECC_NIST_P521": "secp521r1",
    "ECC_SECG_P256K1": "secp256k1",
}


@pytest.fixture(scope="module")
def master(token) -> Iterator[bytes]:
    mid = os.urandom(32)
    token.create_master_key(mid, "test-keypairs")
    yield mid
    token.destroy_master_key(mid)


@pytest.fixture(scope="module")
def wrapped_pairs(token, master) -> dict[str, tuple[bytes, WrappedKey]]:
    """One wrapped pair per spec, made once: RSA-4096 generation takes seconds on SoftHSM2."""
    return {spec: token.generate_wrapped_key_pair(spec, master) for spec in ALL_SPECS}


def spki_of(private_key: object) -> bytes:
    return private_key.public_key().public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def assert_standard(spec: str, spki: bytes, pkcs8: bytes) -> None:
    """PKCS#8 v1 (RFC 5958) that cryptography loads, matching a standard SPKI (RFC 5280)."""
    private = serialization.load_der_private_key(pkcs8, password=None)
    assert spki_of(private) == spki
    info = asn1_keys.PrivateKeyInfo.load(pkcs8, strict=True)  # strict: no padding left behind
    assert info["version"].native == 0  # v1 of RFC 5958 is encoded as 0
    public = asn1_keys.PublicKeyInfo.load(spki, strict=True)
    if spec.startswith("RSA"):
        assert isinstance(private, rsa.RSAPrivateKey)
        assert private.key_size == int(spec[4:])
        assert public["algorithm"]["algorithm"].native == "rsa"
        assert public["algorithm"]["parameters"].native is None  # NULL, RFC 3279 2.3.1
        message = b"signed on the host"
        signature = private.sign(message, padding.PKCS1v15(), SHA256())
        private.public_key().verify(signature, message, padding.PKCS1v15(), SHA256())
    else:
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == CURVES[spec]
        assert public["algorithm"]["parameters"].chosen.native == CURVES[spec]  # named curve
        inner = info["private_key"].parsed
        assert inner["public_key"].native is not None  # RFC 5915 publicKey present
        message = b"signed on the host"
        private.public_key().verify(
            private.sign(message, ec.ECDSA(SHA256())), message, ec.ECDSA(SHA256())
        )


def test_the_token_offers_the_seven_specs_and_wraps_with_kwp(token) -> None:
    assert token.keypair_specs == frozenset(ALL_SPECS)
    # SoftHSM2 refuses CKM_AES_GCM in C_WrapKey, so RFC 5649 it is.
    assert token.wrap_mechanism == "AES_KEY_WRAP_PAD"


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_a_wrapped_private_key_unwraps_to_standard_pkcs8_matching_its_public_key(
    token, master, wrapped_pairs, spec: str
) -> None:
    spki, wrapped = wrapped_pairs[spec]
    assert wrapped.spec == spec and wrapped.mechanism == token.wrap_mechanism
    assert len(wrapped.data) % 8 == 0  # RFC 5649 output
    pkcs8 = token.unwrap_private_key(master, wrapped)
    assert_standard(spec, spki, pkcs8)


@pytest.mark.parametrize("spec", generation_params([s for s in ALL_SPECS if s != "RSA_4096"]))
def test_a_generated_key_pair_is_standard_and_matches(token, spec: str) -> None:
    spki, pkcs8 = token.generate_key_pair(spec)
    assert_standard(spec, spki, pkcs8)
    assert token.generate_key_pair(spec)[0] != spki  # fresh each time


def test_key_pair_calls_leave_no_objects_behind(token, master) -> None:
    before = key_pair_objects(token)
    token.generate_key_pair("ECC_NIST_P256")
    _, wrapped = token.generate_wrapped_key_pair("ECC_NIST_P256", master)
    token.unwrap_private_key(master, wrapped)
    assert key_pair_objects(token) == before


@pytest.mark.parametrize("where", [0, 8, -1])
def test_a_tampered_wrapped_key_is_an_integrity_error(
    token, master, wrapped_pairs, where: int
) -> None:
    _, wrapped = wrapped_pairs["ECC_NIST_P256"]
    data = bytearray(wrapped.data)
    data[where] ^= 0x01
    with pytest.raises(IntegrityError):
        token.unwrap_private_key(master, replace(wrapped, data=bytes(data)))
    assert token.status().ok


@pytest.mark.parametrize("cut", [8, 1, len(b"x")])
def test_a_truncated_wrapped_key_is_an_integrity_error(token, master, wrapped_pairs, cut) -> None:
    _, wrapped = wrapped_pairs["RSA_2048"]
    with pytest.raises(IntegrityError):
        token.unwrap_private_key(master, replace(wrapped, data=wrapped.data[:-cut]))


def test_a_wrapped_key_claiming_another_spec_is_an_integrity_error(
    token, master, wrapped_pairs
) -> None:
    _, p256 = wrapped_pairs["ECC_NIST_P256"]
    _, rsa2048 = wrapped_pairs["RSA_2048"]
    with pytest.raises(IntegrityError):
        token.unwrap_private_key(master, replace(p256, spec="ECC_NIST_P384"))
    with pytest.raises(IntegrityError):
        token.unwrap_private_key(master, replace(p256, spec="RSA_2048"))
    with pytest.raises(IntegrityError):
        token.unwrap_private_key(master, replace(rsa2048, spec="RSA_3072"))


def test_a_wrapped_key_under_another_master_key_is_an_integrity_error(token, wrapped_pairs) -> None:
    other = os.urandom(32)
    token.create_master_key(other, "test-keypairs-other")
    try:
        with pytest.raises(IntegrityError):
            token.unwrap_private_key(other, wrapped_pairs["ECC_NIST_P256"][1])
    finally:
        token.destroy_master_key(other)


def test_unsupported_mechanisms_and_specs_fail_clearly(token, master, wrapped_pairs) -> None:
    _, wrapped = wrapped_pairs["ECC_NIST_P256"]
    with pytest.raises(MechanismUnsupported, match="AES_GCM"):
        token.unwrap_private_key(master, replace(wrapped, mechanism="AES_GCM"))
    with pytest.raises(MechanismUnsupported):
        token.unwrap_private_key(master, replace(wrapped, mechanism="RSA_OAEP"))
    for spec in ("SM2", "ECC_NIST_EDWARDS25519", "RSA_1024"):
        with pytest.raises(MechanismUnsupported):
            token.generate_key_pair(spec)
        with pytest.raises(MechanismUnsupported):
            token.generate_wrapped_key_pair(spec, master)


def test_wrapping_under_a_missing_master_key_is_key_not_found(token, wrapped_pairs) -> None:
    with pytest.raises(KeyNotFound):
        token.generate_wrapped_key_pair("RSA_4096", os.urandom(32))  # fails before generating
    with pytest.raises(KeyNotFound):
        token.unwrap_private_key(os.urandom(32), wrapped_pairs["ECC_NIST_P256"][1])
