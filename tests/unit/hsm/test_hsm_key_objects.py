"""Private and HMAC keys on the token (hsm/keyobjects.py): made sealed, used on the token,
checked offline with cryptography."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from hsmkms import hsm
from hsmkms.hsm import oaep
from hsmkms.specs import KeySpec

HASHES = {"SHA256": hashes.SHA256, "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}


def _new(token, spec: KeySpec, use: str):
    mid = os.urandom(32)
    spki = token.create_private_key(mid, f"test:{spec}:{use}", spec, use)
    return mid, serialization.load_der_public_key(spki)


@pytest.fixture(scope="module")
def rsa_sign(token):
    mid, public = _new(token, KeySpec.RSA_2048, "sign")
    yield mid, public
    token.destroy_master_key(mid)


@pytest.fixture(scope="module")
def rsa_decrypt(token):
    mid, public = _new(token, KeySpec.RSA_2048, "decrypt")
    yield mid, public
    token.destroy_master_key(mid)


@pytest.mark.parametrize("hash_name", sorted(HASHES))
def test_rsa_signatures_verify_offline(token, rsa_sign, hash_name: str) -> None:
    mid, public = rsa_sign
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    h = HASHES[hash_name]()
    digest = hashlib.new(hash_name.lower(), b"message").digest()
    pss = token.sign(mid, "PSS", hash_name, digest)
    public.verify(
        pss, b"message", padding.PSS(padding.MGF1(h), padding.PSS.DIGEST_LENGTH), h
    )  # salt length = hash length, as KMS signs
    pkcs1 = token.sign(mid, "PKCS1", hash_name, digest)
    public.verify(pkcs1, b"message", padding.PKCS1v15(), h)


@pytest.mark.parametrize(
    "spec,hash_name",
    [
        (KeySpec.ECC_NIST_P256, "SHA256"),
        (KeySpec.ECC_NIST_P384, "SHA384"),
        (KeySpec.ECC_NIST_P521, "SHA512"),
        (KeySpec.ECC_SECG_P256K1, "SHA256"),
    ],
)
def test_ecdsa_signatures_are_der_and_verify_offline(token, spec, hash_name) -> None:
    mid, public = _new(token, spec, "sign")
    try:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert public.curve.name == spec.curve.name
        h = HASHES[hash_name]()
        digest = hashlib.new(hash_name.lower(), b"m" * 5000).digest()
        signature = token.sign(mid, "ECDSA", hash_name, digest)
        utils.decode_dss_signature(signature)  # DER, else ValueError
        public.verify(signature, digest, ec.ECDSA(utils.Prehashed(h)))
        with pytest.raises(InvalidSignature):
            public.verify(signature, b"other", ec.ECDSA(h))
    finally:
        token.destroy_master_key(mid)


def test_ed25519_signs_the_message_on_the_token(token) -> None:
    mid, public = _new(token, KeySpec.ECC_NIST_EDWARDS25519, "sign")
    try:
        assert isinstance(public, ed25519.Ed25519PublicKey)
        signature = token.sign(mid, "EDDSA", "SHA512", b"hello")
        assert len(signature) == 64
        public.verify(signature, b"hello")
    finally:
        token.destroy_master_key(mid)


@pytest.mark.parametrize("hash_name,hash_", [("SHA1", hashes.SHA1), ("SHA256", hashes.SHA256)])
def test_oaep_ciphertexts_made_offline_decrypt(token, rsa_decrypt, hash_name, hash_) -> None:
    mid, public = rsa_decrypt
    pad = padding.OAEP(padding.MGF1(hash_()), hash_(), None)
    for size in (1, 100, 2048 // 8 - 2 * hash_.digest_size - 2):
        message = os.urandom(size)
        assert token.decrypt_oaep(mid, hash_name, public.encrypt(message, pad)) == message


def test_a_bad_oaep_ciphertext_is_an_integrity_error(token, rsa_decrypt) -> None:
    mid, public = rsa_decrypt
    for hash_name, hash_ in (("SHA1", hashes.SHA1), ("SHA256", hashes.SHA256)):
        good = public.encrypt(b"x", padding.OAEP(padding.MGF1(hash_()), hash_(), None))
        bad = bytes([good[0] ^ 1]) + good[1:]
        with pytest.raises(hsm.IntegrityError):
            token.decrypt_oaep(mid, hash_name, bad)
    # SHA-1 ciphertext decrypted as SHA-256: the padding check fails, nothing else
    good = public.encrypt(b"x", padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))
    with pytest.raises(hsm.IntegrityError):
        token.decrypt_oaep(mid, "SHA256", good)


def test_the_identity_decoder_exceeds_every_token_modulus_size() -> None:
    for bits in (2048, 3072, 4096):
        top = 2**bits - 1
        assert not oaep.supports(top)  # only a modulus this close to 2^bits is out of reach
        assert oaep.supports(2 ** (bits - 1) + 1)


@pytest.mark.parametrize(
    "spec,curve,length",
    [
        (KeySpec.ECC_NIST_P256, ec.SECP256R1(), 32),
        (KeySpec.ECC_NIST_P384, ec.SECP384R1(), 48),
        (KeySpec.ECC_NIST_P521, ec.SECP521R1(), 66),
    ],
)
def test_ecdh_equals_what_the_peer_derives(token, spec, curve, length) -> None:
    mid, public = _new(token, spec, "derive")
    try:
        peer = ec.generate_private_key(curve)
        point = peer.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        assert token.derive(mid, point, length) == peer.exchange(ec.ECDH(), public)
    finally:
        token.destroy_master_key(mid)


@pytest.mark.parametrize("bits,hash_name", [(224, "SHA224"), (256, "SHA256"), (512, "SHA512")])
def test_hmac_on_the_token(token, bits, hash_name) -> None:
    mid = os.urandom(32)
    token.create_secret_key(mid, "test:hmac", bits)
    try:
        mac = token.mac(mid, hash_name, b"message")
        assert len(mac) == hashlib.new(hash_name.lower()).digest_size
        assert token.verify_mac(mid, hash_name, b"message", mac)
        assert not token.verify_mac(mid, hash_name, b"message", bytes(len(mac)))
        assert not token.verify_mac(mid, hash_name, b"message", mac[:-1])
        assert not token.verify_mac(mid, hash_name, b"other", mac)
        assert mac != hmac.new(bytes(bits // 8), b"message", hash_name.lower()).digest()
    finally:
        token.destroy_master_key(mid)


def test_private_keys_cannot_leave_the_token(token, rsa_sign) -> None:
    mid, _ = rsa_sign
    check = token.check_master_key(mid)
    assert check.kind == "RSA" and check.bits == 2048
    assert check.sensitive and check.always_sensitive
    assert not check.extractable and check.never_extractable
    assert not check.modifiable and check.token and check.private
    assert not check.value_readable and not check.wrappable
    assert check.sign and not check.decrypt and not check.derive


def test_new_keys_are_listed_with_the_master_keys(token, rsa_sign) -> None:
    mid, _ = rsa_sign
    assert mid in {m for m, _label in token.list_master_keys()}
    assert token.has_master_key(mid)
