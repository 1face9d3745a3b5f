"""GCM IVs from a counter with a random start drawn from the token (service/nonces.py)."""

from __future__ import annotations

import os
import threading

import pytest

from hsmkms.service import nonces
from hsmkms.service.nonces import IvSequence


class Draws:
    def __init__(self, *starts: int) -> None:
        self.starts = list(starts)
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        assert n == 12
        self.calls += 1
        return self.starts.pop(0).to_bytes(12, "big")


def test_ivs_count_up_from_a_start_drawn_once():
    draws = Draws(1000)
    seq = IvSequence(draws)
    ivs = [int.from_bytes(seq.next(), "big") for _ in range(5)]
    assert ivs == [1000, 1001, 1002, 1003, 1004]
    assert draws.calls == 1


def test_the_counter_wraps_within_96_bits():
    seq = IvSequence(Draws(2**96 - 1))
    assert seq.next() == b"\xff" * 12
    assert seq.next() == bytes(12)


def test_a_forked_child_draws_its_own_start(monkeypatch: pytest.MonkeyPatch):
    draws = Draws(10, 5000)
    seq = IvSequence(draws)
    seq.next()
    monkeypatch.setattr(os, "getpid", lambda: -42)  # as a child sees it after fork()
    assert int.from_bytes(seq.next(), "big") == 5000


def test_a_long_sequence_starts_afresh(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(nonces, "RESEED_AFTER", 3)
    seq = IvSequence(Draws(0, 900))
    assert [int.from_bytes(seq.next(), "big") for _ in range(4)] == [0, 1, 2, 900]


def test_threads_never_get_the_same_iv():
    seq = IvSequence(os.urandom)
    seen: list[list[bytes]] = [[] for _ in range(4)]

    def take(out: list[bytes]) -> None:
        for _ in range(5000):
            out.append(seq.next())

    threads = [threading.Thread(target=take, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [iv for out in seen for iv in out]
    assert len(set(every)) == len(every) == 20000


def test_the_service_seals_with_the_sequence_and_decrypts(library):
    key = library.create_key()["KeyMetadata"]["KeyId"]
    blobs = [library.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"] for _ in range(3)]
    ivs = [b[51:63] for b in blobs]  # docs/ciphertext-format.md: the IV at offset 51
    values = [int.from_bytes(iv, "big") for iv in ivs]
    assert values == sorted(set(values))  # counting up (other tests may seal in between)
    assert [library.decrypt(CiphertextBlob=b)["Plaintext"] for b in blobs] == [b"x"] * 3
