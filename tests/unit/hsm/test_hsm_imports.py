"""Imported key material on the token (hsm/imports.py): wrapping keys made on the token,
material wrapped by the client with cryptography (as AWS's OpenSSL steps do) and unwrapped
into the token, checked by using it and comparing with cryptography under the same material."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives import cmac, hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from hsmkms import hsm
from hsmkms.specs import KeySpec

CONTEXT = b"hsmkms KeyMaterialId v1\x00test-key"
HASH = {"SHA1": hashes.SHA1, "SHA256": hashes.SHA256}


@pytest.fixture(scope="module")
def wrapping(token):
    wid = b"W" + os.urandom(32)
    spki = token.create_wrapping_key(wid, "test:wrapping", 2048)
    yield wid, serialization.load_der_public_key(spki)
    token.destroy_wrapping_key(wid)


def wrap(public, material: bytes, scheme: str, hash_name: str) -> bytes:
    pad = padding.OAEP(padding.MGF1(HASH[hash_name]()), HASH[hash_name](), None)
    if scheme == "RSAES_OAEP":
        return public.encrypt(material, pad)
    aes = os.urandom(32)
    return public.encrypt(aes, pad) + aes_key_wrap_with_padding(aes, material)


def pkcs8(private) -> bytes:
    return private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def kdf_cmac(key: bytes, context: bytes) -> bytes:
    out = b""
    for i in (1, 2):
        c = cmac.CMAC(algorithms.AES(key))
        c.update(bytes([i]) + context)
        out += c.finalize()
    return out[:32]


def do_import(
    token,
    wrapping,
    encrypted,
    spec,
    use=None,
    context=CONTEXT,
    scheme="RSAES_OAEP",
    hash_name="SHA1",
):
    wid, _public = wrapping
    return token.import_key(
        wid,
        scheme,
        hash_name,
        encrypted,
        spec,
        use,
        context,
        lambda mid: f"test:import:{mid.hex()[:16]}",
    )


@pytest.mark.parametrize(
    ("scheme", "hash_name"),
    [
        ("RSAES_OAEP", "SHA1"),
        ("RSAES_OAEP", "SHA256"),
        ("RSA_AES_KEY_WRAP", "SHA1"),
        ("RSA_AES_KEY_WRAP", "SHA256"),
    ],
)
def test_symmetric_material_imports_and_encrypts_like_cryptography(
    token, wrapping, scheme, hash_name
):
    material = os.urandom(32)
    got = do_import(
        token,
        wrapping,
        wrap(wrapping[1], material, scheme, hash_name),
        KeySpec.SYMMETRIC_DEFAULT,
        scheme=scheme,
        hash_name=hash_name,
    )
    try:
        assert got.created and got.public_key is None
        assert got.material_id == kdf_cmac(material, CONTEXT)
        iv = os.urandom(12)
        assert token.encrypt(got.material_id, iv, b"hello", b"aad") == AESGCM(material).encrypt(
            iv, b"hello", b"aad"
        )
        check = token.check_master_key(got.material_id)
        assert check.sensitive and not check.extractable and not check.modifiable and check.token
        # The same material again: recognised, no second object; another key: another id.
        again = do_import(
            token,
            wrapping,
            wrap(wrapping[1], material, scheme, hash_name),
            KeySpec.SYMMETRIC_DEFAULT,
            scheme=scheme,
            hash_name=hash_name,
        )
        assert (again.material_id, again.created) == (got.material_id, False)
    finally:
        token.destroy_master_key(got.material_id)


@pytest.mark.parametrize("size", [16, 24, 31, 33, 64])
def test_symmetric_material_of_another_length_is_refused(token, wrapping, size):
    with pytest.raises(hsm.WrongKeyMaterial):
        do_import(
            token,
            wrapping,
            wrap(wrapping[1], os.urandom(size), "RSAES_OAEP", "SHA1"),
            KeySpec.SYMMETRIC_DEFAULT,
        )


def test_a_wrap_that_does_not_open_is_an_integrity_error(token, wrapping):
    for scheme in ("RSAES_OAEP", "RSA_AES_KEY_WRAP"):
        good = wrap(wrapping[1], os.urandom(32), scheme, "SHA1")
        bad = bytearray(good)
        bad[-1] ^= 1
        with pytest.raises(hsm.IntegrityError):
            do_import(token, wrapping, bytes(bad), KeySpec.SYMMETRIC_DEFAULT, scheme=scheme)
    with pytest.raises(hsm.IntegrityError):
        do_import(token, wrapping, b"short", KeySpec.SYMMETRIC_DEFAULT)


@pytest.mark.parametrize(
    ("spec", "size"), [(KeySpec.HMAC_224, 28), (KeySpec.HMAC_256, 64), (KeySpec.HMAC_512, 100)]
)
def test_hmac_material_macs_like_the_standard_library(token, wrapping, spec, size):
    material = os.urandom(size)
    got = do_import(token, wrapping, wrap(wrapping[1], material, "RSAES_OAEP", "SHA1"), spec)
    try:
        name = f"SHA{spec.bits}"
        expected = hmac.new(material, b"message", getattr(hashlib, name.lower())).digest()
        assert token.mac(got.material_id, name, b"message") == expected
    finally:
        token.destroy_master_key(got.material_id)


@pytest.mark.parametrize(
    ("spec", "size"), [(KeySpec.HMAC_256, 31), (KeySpec.HMAC_256, 65), (KeySpec.HMAC_384, 47)]
)
def test_hmac_material_out_of_range_is_refused(token, wrapping, spec, size):
    with pytest.raises(hsm.WrongKeyMaterial):
        do_import(token, wrapping, wrap(wrapping[1], os.urandom(size), "RSAES_OAEP", "SHA1"), spec)


def test_rsa_private_key_imports_and_signs(token, wrapping):
    private = rsa.generate_private_key(65537, 2048)
    got = do_import(
        token,
        wrapping,
        wrap(wrapping[1], pkcs8(private), "RSA_AES_KEY_WRAP", "SHA256"),
        KeySpec.RSA_2048,
        "sign",
        scheme="RSA_AES_KEY_WRAP",
        hash_name="SHA256",
    )
    try:
        public = serialization.load_der_public_key(got.public_key)
        assert public.public_numbers() == private.public_key().public_numbers()
        digest = hashlib.sha256(b"m").digest()
        signature = token.sign(got.material_id, "PSS", "SHA256", digest)
        private.public_key().verify(
            signature,
            digest,
            padding.PSS(padding.MGF1(hashes.SHA256()), 32),
            utils.Prehashed(hashes.SHA256()),
        )
        check = token.check_master_key(got.material_id)
        assert check.sign and not check.decrypt and not check.derive and not check.extractable
    finally:
        token.destroy_master_key(got.material_id)


@pytest.mark.parametrize(
    ("private", "spec"),
    [
        (lambda: rsa.generate_private_key(65537, 3072), KeySpec.RSA_2048),
        (lambda: ec.generate_private_key(ec.SECP384R1()), KeySpec.ECC_NIST_P256),
    ],
    ids=["rsa-size", "ec-curve"],
)
def test_a_private_key_of_another_size_or_curve_is_refused(token, wrapping, private, spec):
    material = pkcs8(private())
    with pytest.raises(hsm.WrongKeyMaterial):
        do_import(
            token,
            wrapping,
            wrap(wrapping[1], material, "RSA_AES_KEY_WRAP", "SHA1"),
            spec,
            "sign",
            scheme="RSA_AES_KEY_WRAP",
        )


@pytest.mark.parametrize("use", ["sign", "derive"])
def test_ec_private_key_imports_with_its_public_key(token, wrapping, use):
    private = ec.generate_private_key(ec.SECP256R1())
    got = do_import(
        token,
        wrapping,
        wrap(wrapping[1], pkcs8(private), "RSAES_OAEP", "SHA1"),
        KeySpec.ECC_NIST_P256,
        use,
    )
    try:
        public = serialization.load_der_public_key(got.public_key)
        assert public.public_numbers() == private.public_key().public_numbers()
        if use == "derive":
            peer = ec.generate_private_key(ec.SECP256R1())
            point = peer.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            assert token.derive(got.material_id, point, 32) == peer.exchange(
                ec.ECDH(), private.public_key()
            )
    finally:
        token.destroy_master_key(got.material_id)


def test_a_destroyed_wrapping_key_is_not_found(token):
    wid = b"W" + os.urandom(32)
    spki = token.create_wrapping_key(wid, "test:gone", 2048)
    token.destroy_wrapping_key(wid)
    public = serialization.load_der_public_key(spki)
    with pytest.raises(hsm.KeyNotFound):
        do_import(
            token,
            (wid, public),
            wrap(public, os.urandom(32), "RSAES_OAEP", "SHA1"),
            KeySpec.SYMMETRIC_DEFAULT,
        )
    with pytest.raises(hsm.KeyNotFound):
        token.destroy_wrapping_key(wid)
