"""Deadlines on token calls (DESIGN decision 16), and AES-GCM built from the token's AES-ECB.

A call held inside the token (here: a call on the real token's call path that waits for an
event while it holds the request lock, as a C call into a hung HSM does) answers
TokenTimeout after the deadline, later calls fail at once instead of queueing behind it, an
event-loop caller is never held past INLINE_WAIT, and the token answers again as soon as the
held call returns. The SIGSTOPped p11-kit server of tests/resilience/test_p11kit_outages.py
is the same over a socket.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsmkms.hsm import NO_SEARCH, IntegrityError, TokenTimeout, WouldSearch, gcm_ecb, open_token
from hsmkms.hsm.deadline import INLINE_WAIT


@pytest.fixture()
def timed(settings, token):
    """A second token on the session's library and login, with a 0.2 s deadline."""
    tok = open_token(
        settings.pkcs11_module, settings.token_label, settings.read_pin(), call_timeout=0.2
    )
    yield tok
    tok.close()


def test_a_held_call_times_out_later_calls_fail_at_once_and_the_token_comes_back(timed):
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(TokenTimeout, match="did not answer within 0.2 s"):
        timed._run("hang like a stopped HSM", lambda: release.wait(10))
    assert 0.2 <= time.monotonic() - started < 1.0
    # The held call keeps the request lock: nobody waits behind it.
    started = time.monotonic()
    with pytest.raises(TokenTimeout, match="has not answered a call"):
        timed.random(16)
    assert time.monotonic() - started < 0.05
    assert not timed.status().ok  # /health says so at once too
    release.set()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            assert len(timed.random(16)) == 16
            break
        except TokenTimeout:
            time.sleep(0.01)
    assert timed.status().ok


def test_an_event_loop_caller_waits_at_most_the_inline_wait_then_gives_the_call_away(timed):
    release = threading.Event()

    def hold() -> None:
        with contextlib.suppress(TokenTimeout):
            timed._run("hold", lambda: release.wait(5))

    held = threading.Thread(target=hold)
    held.start()
    time.sleep(0.02)
    token = NO_SEARCH.set(True)
    try:
        started = time.monotonic()
        with pytest.raises(WouldSearch):
            timed.random(16)  # queued behind the held call: the loop gives it to a thread
        assert time.monotonic() - started < INLINE_WAIT + 0.05
        with pytest.raises(WouldSearch):
            timed.random(16)  # a call is in the token longer than INLINE_WAIT: not even tried
    finally:
        NO_SEARCH.reset(token)
        release.set()
        held.join()


def test_gcm_built_from_the_tokens_ecb_is_byte_identical_to_aes_gcm(settings, token):
    """token_mechanisms_off = "AES_GCM": what a p11-kit 0.24 client gets by itself."""
    ecb = open_token(
        settings.pkcs11_module, settings.token_label, settings.read_pin(), mechanisms_off="AES_GCM"
    )
    try:
        mid = os.urandom(32)
        ecb.create_master_key(mid, "gcm-from-ecb")
        assert ecb._capabilities.gcm == "ECB"
        for size in (0, 1, 16, 33, 1000):
            iv, plain, aad = os.urandom(12), os.urandom(size), os.urandom(size % 29)
            sealed = ecb.encrypt(mid, iv, plain, aad)
            # The same key through CKM_AES_GCM opens it, and the reverse.
            assert token.decrypt(mid, iv, sealed, aad) == plain
            assert ecb.decrypt(mid, iv, token.encrypt(mid, iv, plain, aad), aad) == plain
            assert len(sealed) == size + 16
            with pytest.raises(IntegrityError):
                ecb.decrypt(mid, iv, sealed[:-1] + bytes([sealed[-1] ^ 1]), aad)
        ecb.destroy_master_key(mid)
    finally:
        ecb.close()


def test_gcm_from_ecb_matches_cryptographys_aesgcm_on_a_known_key():
    key = os.urandom(32)
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    for size in (0, 15, 16, 17, 200):
        iv, plain, aad = os.urandom(12), os.urandom(size), os.urandom(size % 23)
        sealed = gcm_ecb.encrypt(enc.update, iv, plain, aad)
        assert sealed == AESGCM(key).encrypt(iv, plain, aad)
        assert gcm_ecb.decrypt(enc.update, iv, sealed, aad) == plain


def test_a_token_without_a_usable_wrap_makes_no_pairs_for_the_service(settings, token):
    """token_mechanisms_off = "AES_KEY_WRAP_PAD" on SoftHSM2 (which refuses GCM wrap): what
    p11-kit 0.24 gives by itself. Data key pairs are then made on the host."""
    bare = open_token(
        settings.pkcs11_module,
        settings.token_label,
        settings.read_pin(),
        mechanisms_off="AES_KEY_WRAP_PAD",
    )
    try:
        assert bare.wrap_mechanism is None
        assert bare.keypair_specs == frozenset()
        assert token.wrap_mechanism == "AES_KEY_WRAP_PAD" and token.keypair_specs
    finally:
        bare.close()
