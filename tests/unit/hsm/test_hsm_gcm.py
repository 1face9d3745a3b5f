"""AES-256-GCM on the token: standard output, and every tampering is an integrity failure."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsmkms.hsm import IntegrityError, KeyNotFound, TokenUnavailable
from hsmkms.hsm.testing import known_key

IV = bytes(range(12))
AAD = b"header|context"


@pytest.fixture(scope="module")
def master(token) -> Iterator[bytes]:
    mid = os.urandom(32)
    token.create_master_key(mid, "test-gcm")
    yield mid
    token.destroy_master_key(mid)


@pytest.mark.parametrize("size", [0, 1, 15, 16, 32, 1024, 4096])
def test_token_gcm_is_byte_identical_to_cryptography_aesgcm(token, size: int) -> None:
    value = os.urandom(32)
    plaintext = os.urandom(size)
    iv = os.urandom(12)
    with known_key(token, value) as mid:
        out = token.encrypt(mid, iv, plaintext, AAD)
        assert out == AESGCM(value).encrypt(iv, plaintext, AAD)
        assert token.decrypt(mid, iv, AESGCM(value).encrypt(iv, plaintext, b""), b"") == plaintext


def test_output_is_ciphertext_then_16_byte_tag_and_round_trips(token, master) -> None:
    out = token.encrypt(master, IV, b"secret", AAD)
    assert len(out) == len(b"secret") + 16
    assert token.decrypt(master, IV, out, AAD) == b"secret"


@pytest.mark.parametrize(
    "change",
    ["aad", "empty aad", "iv", "tag", "ciphertext", "truncated", "extended", "too short"],
)
def test_tampered_decrypt_is_an_integrity_error_not_token_unavailable(
    token, master, change: str
) -> None:
    out = token.encrypt(master, IV, b"attack at dawn", AAD)
    iv, data, aad = IV, bytearray(out), AAD
    if change == "aad":
        aad = AAD + b"!"
    elif change == "empty aad":
        aad = b""
    elif change == "iv":
        iv = bytes([IV[0] ^ 1]) + IV[1:]
    elif change == "tag":
        data[-1] ^= 0x80
    elif change == "ciphertext":
        data[0] ^= 0x01
    elif change == "truncated":
        data = data[:-1]
    elif change == "extended":
        data += b"\0"
    elif change == "too short":
        data = data[:15]
    with pytest.raises(IntegrityError):
        token.decrypt(master, iv, bytes(data), aad)
    # The token is fine afterwards, and said so: no recovery, no TokenUnavailable.
    assert token.decrypt(master, IV, out, AAD) == b"attack at dawn"
    assert token.status().ok


def test_decrypt_under_another_master_key_is_an_integrity_error(token, master) -> None:
    other = os.urandom(32)
    token.create_master_key(other, "test-gcm-other")
    try:
        out = token.encrypt(master, IV, b"x", AAD)
        with pytest.raises(IntegrityError):
            token.decrypt(other, IV, out, AAD)
    finally:
        token.destroy_master_key(other)


def test_unknown_material_id_is_key_not_found(token) -> None:
    with pytest.raises(KeyNotFound):
        token.encrypt(os.urandom(32), IV, b"x", b"")
    with pytest.raises(KeyNotFound):
        token.decrypt(os.urandom(32), IV, bytes(32), b"")


def test_a_wrong_iv_length_or_material_id_is_a_caller_error(token, master) -> None:
    with pytest.raises(ValueError):
        token.encrypt(master, bytes(16), b"x", b"")
    with pytest.raises(ValueError):
        token.encrypt(b"short", IV, b"x", b"")


def test_random_comes_in_the_length_asked_and_differs(token) -> None:
    assert token.random(0) == b""
    a, b = token.random(32), token.random(32)
    assert len(a) == len(b) == 32 and a != b
    assert len(token.random(1024)) == 1024


def test_integrity_error_is_not_a_kind_of_token_unavailable() -> None:
    # service/ maps these to 400 and 5xx: the hierarchy must keep them apart.
    assert not issubclass(IntegrityError, TokenUnavailable)
    assert not issubclass(TokenUnavailable, IntegrityError)
