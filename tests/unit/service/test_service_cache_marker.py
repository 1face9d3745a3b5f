"""The request path's cache with a store that has a change marker: entries live as long as the
marker stays the same, the marker is asked at most once per ttl, and no answer outlives a
change by more than the ttl (including a read that was in flight while the marker moved)."""

from __future__ import annotations

from typing import Any

from hsmkms.service.cache import CachedStore
from hsmkms.store import StoreUnavailable


class MarkedStore:
    """A store whose marker moves with every change made "elsewhere" (``change``)."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {"k1": "v1", "k2": "v2"}
        self.version = 0
        self.reads = 0
        self.markers = 0
        self.on_read: Any = None
        self.marker_fails = False

    def change(self, key_id: str, value: str) -> None:
        self.keys[key_id] = value
        self.version += 1

    def change_marker(self) -> object:
        self.markers += 1
        if self.marker_fails:
            raise StoreUnavailable("the store cannot be read")
        return ("conn-1", self.version)

    def get_key(self, key_id: str) -> str | None:
        self.reads += 1
        value = self.keys.get(key_id)
        if self.on_read is not None:
            hook, self.on_read = self.on_read, None
            hook()
        return value


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def make(ttl: float = 1.0) -> tuple[CachedStore, MarkedStore, Clock]:
    clock = Clock()
    inner = MarkedStore()
    return CachedStore(inner, ttl, clock), inner, clock


def test_entries_outlive_the_ttl_while_the_marker_holds():
    store, inner, clock = make()
    assert store.get_key("k1") == "v1"
    for _ in range(50):
        clock.now += 0.3
        assert store.get_key("k1") == "v1"
    assert inner.reads == 1
    assert inner.markers <= 16  # once per ttl at most (15 s of reads), not once per read


def test_a_change_elsewhere_is_seen_within_the_ttl_and_not_before_the_check():
    store, inner, clock = make()
    store.get_key("k1")
    clock.now += 0.2
    inner.change("k1", "changed elsewhere")
    clock.now += 0.7  # 0.9 s after the last check: still trusted
    assert store.get_key("k1") == "v1"
    clock.now += 0.1  # the ttl is up: the marker moved, everything is read again
    assert store.get_key("k1") == "changed elsewhere"
    assert store.get_key("k2") == "v2"
    assert inner.reads == 3


def test_a_read_in_flight_while_the_marker_moves_is_not_kept():
    store, inner, clock = make()
    store.get_key("k2")  # first check done, at t=100

    def meanwhile() -> None:
        # While k1's read is under way: another process changes k1, the ttl passes and
        # another request's read finds the marker moved.
        inner.change("k1", "changed elsewhere")
        clock.now += 1.0
        store.get_key("k2")

    inner.on_read = meanwhile
    assert store.get_key("k1") == "v1"  # what the store held when the read began
    assert store.get_key("k1") == "changed elsewhere"  # not that answer from the cache


def test_a_marker_that_cannot_be_read_trusts_nothing_past_the_ttl():
    store, inner, clock = make()
    store.get_key("k1")
    inner.marker_fails = True
    inner.keys["k1"] = "changed, marker unreadable"
    clock.now += 1.0
    assert store.get_key("k1") == "changed, marker unreadable"
    inner.marker_fails = False
    clock.now += 1.0
    assert store.get_key("k1") == "changed, marker unreadable"
    assert inner.reads == 3  # read again once the marker answered again: it differs


def test_a_local_write_still_empties_the_cache_at_once():
    store, inner, clock = make()
    store.get_key("k1")
    inner.update_key = lambda key_id, value: inner.keys.__setitem__(key_id, value)
    store.update_key("k1", "written here")
    assert store.get_key("k1") == "written here"


def test_the_marker_is_not_a_write():
    store, inner, clock = make()
    store.get_key("k1")
    store.change_marker()  # passed through, and does not empty the cache
    assert store.get_key("k1") == "v1"
    assert inner.reads == 1
