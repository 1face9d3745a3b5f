"""The handle cache's search: a key another Token (or process) created is found by one search
of every key, made on a session of its own while calls on cached keys go on; misses at the
same time share it; a caller that must not wait is told so instead of searching.

``SearchSpy`` is the real Token with a hook in its search (it counts searches and can hold
one after it has read the token), so these tests run the real PKCS#11 calls throughout.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hsmkms.hsm import NO_SEARCH, KeyNotFound, Token, WouldSearch
from hsmkms.hsm.token import PKCS11Token

IV = bytes(12)
WAIT = 20.0  # seconds before a test calls a call that never returned a hang


class SearchSpy(PKCS11Token):
    """A real Token that counts its searches and, when ``hold`` is set, parks each search
    after it has read the token until ``release`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.searches = 0
        self.hold = False
        self.holding = threading.Event()
        self.release = threading.Event()

    def _search(self, session: Any, *, labels: bool) -> list[tuple[bytes, str, Any]]:
        found = super()._search(session, labels=labels)
        if not labels:  # listings are not the cache's searches
            self.searches += 1
            if self.hold:
                self.holding.set()
                assert self.release.wait(WAIT), "the test never released the search"
        return found


@pytest.fixture
def spy(settings) -> Iterator[SearchSpy]:
    tok = SearchSpy.open(
        settings.pkcs11_module, settings.token_label, settings.read_pin(), reinit_interval=0
    )
    tok.searches = 0  # the preload's
    yield tok
    tok.release.set()
    tok.close()


def new_key(token: Token) -> bytes:
    mid = os.urandom(32)
    token.create_master_key(mid, "handle-search-test")
    return mid


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` on a thread; its result or exception lands in the list."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_key_another_token_created_is_found_by_one_search(token, spy):
    mid = new_key(token)  # created after spy's preload: not in its cache
    assert not spy.has_master(mid)
    sealed = spy.encrypt(mid, IV, b"secret", b"aad")
    assert token.decrypt(mid, IV, sealed, b"aad") == b"secret"
    assert spy.searches == 1
    assert spy.has_master(mid)
    assert spy.decrypt(mid, IV, sealed, b"aad") == b"secret"
    assert spy.searches == 1  # cached now
    token.destroy_master_key(mid)


def test_a_missing_key_is_not_found_after_one_search(spy):
    mid = os.urandom(32)
    with pytest.raises(KeyNotFound):
        spy.encrypt(mid, IV, b"x", b"")
    assert spy.searches == 1
    assert not spy.has_master_key(mid)
    assert spy.status().ok


def test_calls_on_cached_keys_go_on_while_a_search_runs(token, spy):
    known = new_key(spy)
    unknown = new_key(token)
    spy.hold = True
    searching, result = in_thread(lambda: spy.encrypt(unknown, IV, b"late", b""))
    assert spy.holding.wait(WAIT)
    # The search holds no lock the request path needs: a cached key answers meanwhile.
    caller, answer = in_thread(lambda: spy.encrypt(known, IV, b"now", b""))
    caller.join(WAIT)
    assert not caller.is_alive(), "a call on a cached key waited for the search"
    assert spy.decrypt(known, IV, answer[0], b"") == b"now"
    spy.release.set()
    searching.join(WAIT)
    assert token.decrypt(unknown, IV, result[0], b"") == b"late"
    assert spy.searches == 1
    for mid in (known, unknown):
        token.destroy_master_key(mid)


def test_misses_during_a_search_share_it(token, spy):
    mids = [new_key(token) for _ in range(4)]
    spy.hold = True
    first, _ = in_thread(lambda: spy.encrypt(mids[0], IV, b"x", b""))
    assert spy.holding.wait(WAIT)
    others = [in_thread(lambda m=m: spy.encrypt(m, IV, b"x", b"")) for m in mids[1:]]
    time.sleep(0.3)  # let them miss and wait for the running search
    spy.release.set()
    for thread, out in [(first, None), *others]:
        thread.join(WAIT)
        assert not thread.is_alive()
        if out is not None:
            assert isinstance(out[0], bytes), out
    # Every key existed before the search began, so the one search found them all.
    assert spy.searches == 1
    for mid in mids:
        token.destroy_master_key(mid)


def test_what_this_process_changes_during_a_search_outlives_its_result(token, spy):
    doomed = new_key(spy)
    trigger = new_key(token)
    spy.hold = True
    searching, _ = in_thread(lambda: spy.encrypt(trigger, IV, b"x", b""))
    assert spy.holding.wait(WAIT)  # the search has read the token: it found `doomed`
    made = new_key(spy)  # neither seen by that search ...
    spy.destroy_master_key(doomed)  # ... nor this
    spy.release.set()
    searching.join(WAIT)
    assert spy.has_master(made) and not spy.has_master(doomed)
    assert spy.has_master(trigger)
    spy.hold = False
    assert spy.decrypt(made, IV, spy.encrypt(made, IV, b"y", b""), b"") == b"y"
    assert spy.searches == 1
    with pytest.raises(KeyNotFound):
        spy.encrypt(doomed, IV, b"x", b"")
    for mid in (made, trigger):
        token.destroy_master_key(mid)


def test_a_caller_that_must_not_wait_is_told_instead_of_searching(token, spy):
    known = new_key(spy)
    unknown = new_key(token)
    flag = NO_SEARCH.set(True)
    try:
        with pytest.raises(WouldSearch):
            spy.encrypt(unknown, IV, b"x", b"")
        assert spy.searches == 0
        assert spy.encrypt(known, IV, b"x", b"")  # cached: no search needed
    finally:
        NO_SEARCH.reset(flag)
    assert spy.encrypt(unknown, IV, b"x", b"")
    assert spy.searches == 1
    for mid in (known, unknown):
        token.destroy_master_key(mid)


def test_handles_are_forgotten_on_reinitialisation_and_found_again(token, spy):
    mid = new_key(spy)
    assert spy.has_master(mid)
    spy.refresh()  # C_Finalize + C_Initialize: every handle of the process is void
    assert not spy.has_master(mid)
    sealed = spy.encrypt(mid, IV, b"again", b"")
    assert spy.has_master(mid) and spy.searches == 1
    assert token.decrypt(mid, IV, sealed, b"") == b"again"
    spy.destroy_master_key(mid)


def test_each_search_replaces_the_last_and_listing_keeps_labels(token, spy):
    mids = []
    for _ in range(3):  # three searches, each closing the session of the one before
        mids.append(new_key(token))
        sealed = spy.encrypt(mids[-1], IV, b"z", b"")
        assert token.decrypt(mids[-1], IV, sealed, b"") == b"z"
    assert spy.searches == 3
    for mid in mids:  # objects of the latest search, on its open session
        assert spy.decrypt(mid, IV, spy.encrypt(mid, IV, b"w", b""), b"") == b"w"
    listed = dict(spy.list_master_keys())
    assert all(listed[mid] == "handle-search-test" for mid in mids)
    assert spy.searches == 3  # a listing does not count as the cache's search
    for mid in mids:
        spy.destroy_master_key(mid)
    assert not any(spy.has_master(mid) for mid in mids)
