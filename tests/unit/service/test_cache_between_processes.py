"""Two operation layers on one home, as two server workers are: each its own token session
and handle cache, its own store connections and request-path cache (``cache_ttl`` 0.2 s).

What one changes, the other's data plane sees within the ttl, however long its cache has
lived; while nothing changes, the cache keeps answering past the ttl at the price of one
change-marker read per ttl; and a key whose token handle a process has not looked up yet is
never searched for on the event loop (``try_quick``, the wire layer's inline path, declines it
and the call runs on a thread instead).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from helpers import raises

from hsmkms.hsm.token import PKCS11Token
from hsmkms.kms import KMS, Caller
from hsmkms.store import open_store
from hsmkms.store.sqlite import SQLiteStore

TTL = 0.2
SLACK = 1.0  # scheduling on a busy 2-core machine
BOB = Caller("999988887777", "arn:aws:iam::999988887777:user/bob")


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the reads the cache is meant to save."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.calls: Counter[str] = Counter()

    def get_key(self, key_id: str) -> Any:
        self.calls["get_key"] += 1
        return super().get_key(key_id)

    def change_marker(self) -> object:
        self.calls["change_marker"] += 1
        return super().change_marker()


@contextmanager
def process(
    settings: Any, *, store: Any = None, token_class: type[PKCS11Token] = PKCS11Token
) -> Iterator[KMS]:
    """An operation layer on the session's home with its own token handle cache and store."""
    from hsmkms.compose import build_service

    s = settings.replace(cache_ttl=TTL)
    token = token_class.open(s.pkcs11_module, s.token_label, s.read_pin())
    svc = build_service(s, token, store or open_store(s.store_path))
    try:
        yield KMS.from_service(svc)
    finally:
        svc.close()


@pytest.fixture
def two(settings: Any) -> Iterator[tuple[KMS, KMS]]:
    with process(settings) as a, process(settings) as b:
        yield a, b


def refused_within(call: Any, code: str, limit: float) -> float:
    """Seconds until ``call()`` fails with ``code`` (it must, within ``limit``)."""
    started = time.monotonic()
    while True:
        try:
            call()
        except Exception as exc:
            assert getattr(exc, "response", {}).get("Error", {}).get("Code") == code, exc
            return time.monotonic() - started
        assert time.monotonic() - started < limit, f"still not {code} after {limit} s"
        time.sleep(0.01)


def gdk(key_id: str) -> dict[str, Any]:
    return {"KeyId": key_id, "KeySpec": "AES_256"}


def test_a_key_created_through_one_is_used_through_the_other_at_once(two):
    a, b = two
    key = a.create_key()["KeyMetadata"]["KeyId"]
    a.create_alias(AliasName=f"alias/cross-{key}", TargetKeyId=key)
    made = b.generate_data_key(KeyId=f"alias/cross-{key}", KeySpec="AES_256")
    assert a.decrypt(CiphertextBlob=made["CiphertextBlob"])["Plaintext"] == made["Plaintext"]
    blob = a.encrypt(KeyId=key, Plaintext=b"from a")["CiphertextBlob"]
    assert b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"from a"


def test_a_key_disabled_through_one_is_refused_by_the_other_within_the_ttl(two):
    a, b = two
    key = a.create_key()["KeyMetadata"]["KeyId"]
    for _ in range(3):
        b.encrypt(KeyId=key, Plaintext=b"x")  # in b's cache now
    a.disable_key(KeyId=key)
    took = refused_within(
        lambda: b.encrypt(KeyId=key, Plaintext=b"x"), "DisabledException", TTL + SLACK
    )
    assert took <= TTL + SLACK


def test_a_grant_retired_through_one_stops_working_through_the_other_within_the_ttl(two):
    a, b = two
    key = a.create_key()["KeyMetadata"]
    out = a.create_grant(
        KeyId=key["KeyId"],
        GranteePrincipal=BOB.principal_arn,
        Operations=["GenerateDataKey", "RetireGrant"],
    )
    bob_on_b = b.as_caller(BOB)
    for _ in range(3):
        bob_on_b.generate_data_key(KeyId=key["Arn"], KeySpec="AES_256")  # grant cached in b
    a.as_caller(BOB).retire_grant(GrantToken=out["GrantToken"])
    took = refused_within(
        lambda: bob_on_b.generate_data_key(KeyId=key["Arn"], KeySpec="AES_256"),
        "AccessDeniedException",
        TTL + SLACK,
    )
    assert took <= TTL + SLACK


@pytest.mark.sqlite_home
@pytest.mark.slow  # seconds of a process or a token: kept out of the fast subset
def test_the_cache_answers_past_the_ttl_while_nothing_changes(settings):
    inner = CountingStore(str(settings.store_path))
    with process(settings) as a, process(settings, store=inner) as b:
        key = a.create_key()["KeyMetadata"]["KeyId"]
        other = a.create_key()["KeyMetadata"]["KeyId"]
        b.encrypt(KeyId=key, Plaintext=b"x")
        inner.calls.clear()
        until = time.monotonic() + 5 * TTL
        calls = 0
        while time.monotonic() < until:
            b.encrypt(KeyId=key, Plaintext=b"x")
            calls += 1
        assert inner.calls["get_key"] == 0, (calls, inner.calls)  # every one a hit
        assert 3 <= inner.calls["change_marker"] <= calls, inner.calls  # ~one per ttl
        # A change anywhere in the store (here: another key's tags) empties the cache at the
        # next check: the cache is exact, not per key.
        a.tag_resource(KeyId=other, Tags=[{"TagKey": "t", "TagValue": "v"}])
        time.sleep(TTL)
        b.encrypt(KeyId=key, Plaintext=b"x")
        assert inner.calls["get_key"] == 1, inner.calls


def test_an_inline_call_on_a_key_whose_handle_is_unknown_runs_on_a_thread(two):
    a, b = two
    key = a.create_key()["KeyMetadata"]
    blob = a.encrypt(KeyId=key["KeyId"], Plaintext=b"made by a")["CiphertextBlob"]
    assert not b.service.masters.token.has_master(bytes.fromhex(key["CurrentKeyMaterialId"]))
    # Inline (the event loop): declined before doing anything, for the wire layer to rerun.
    assert b.try_quick("Decrypt", {"CiphertextBlob": blob}) is None
    assert b.try_quick("GenerateDataKey", gdk(key["KeyId"])) is None
    pair = {"KeyId": key["KeyId"], "KeyPairSpec": "ECC_NIST_P256"}
    assert b.try_quick("GenerateDataKeyPairWithoutPlaintext", pair) is None
    # On a thread: the search runs, and from then on the key is served inline.
    assert b.call("Decrypt", {"CiphertextBlob": blob})["Plaintext"] == b"made by a"
    inline = b.try_quick("GenerateDataKey", gdk(key["KeyId"]))
    assert inline is not None
    assert a.decrypt(CiphertextBlob=inline["CiphertextBlob"])["Plaintext"] == inline["Plaintext"]
    assert b.try_quick("GenerateDataKeyPairWithoutPlaintext", pair) is not None


class Optimist(PKCS11Token):
    """A real token whose cheap check always says "cached": a miss is then found only by the
    call itself, as after a re-initialisation between the check and the call."""

    searches = 0

    def has_master(self, material_id: bytes) -> bool:
        return True

    def _search(self, session: Any, *, labels: bool) -> Any:
        Optimist.searches += 1
        return super()._search(session, labels=labels)


def test_a_miss_the_check_did_not_foresee_still_never_searches_inline(settings):
    with process(settings) as a, process(settings, token_class=Optimist) as b:
        key = a.create_key()["KeyMetadata"]["KeyId"]
        Optimist.searches = 0
        assert b.try_quick("GenerateDataKey", gdk(key)) is None
        assert Optimist.searches == 0
        assert b.call("GenerateDataKey", gdk(key))["KeyId"].endswith(key)
        assert Optimist.searches == 1


@pytest.mark.token_objects  # the wrapped mode's own: tests/features/test_wrapped_mode.py
def test_a_key_unknown_to_the_token_is_still_key_unavailable(two):
    a, b = two
    key = a.create_key()["KeyMetadata"]["KeyId"]
    material = next(m for m in a.service.store.materials(key))
    a.service.masters.token.destroy_master_key(bytes.fromhex(material.material_id))
    with raises("KeyUnavailableException"):
        b.generate_data_key(KeyId=key, KeySpec="AES_256")
    assert b.try_quick("GenerateDataKey", gdk(key)) is None  # inline: sent to a thread
