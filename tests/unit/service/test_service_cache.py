"""The request path's cache of store answers: fresh after local writes, bounded staleness."""

from __future__ import annotations

import threading
from typing import Any

from hsmkms.service.cache import CachedStore, cached


class FakeStore:
    def __init__(self) -> None:
        self.keys: dict[str, str] = {"k1": "v1"}
        self.reads = 0
        self.on_read: Any = None

    def change_marker(self) -> object:
        return object()  # no change signal: Store's default

    def get_key(self, key_id: str) -> str | None:
        self.reads += 1
        value = self.keys.get(key_id)
        if self.on_read is not None:
            self.on_read()  # a write by another thread, after this read saw the old value
        return value

    def materials(self, key_id: str) -> list[str]:
        self.reads += 1
        return [f"m-{key_id}"]

    def list_keys(self, account: str) -> list[str]:
        self.reads += 1
        return sorted(self.keys)

    def update_key(self, key_id: str, value: str) -> None:
        self.keys[key_id] = value

    def some_new_write(self) -> None:
        self.keys.clear()


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def make(ttl: float = 1.0) -> tuple[CachedStore, FakeStore, Clock]:
    clock = Clock()
    inner = FakeStore()
    return CachedStore(inner, ttl, clock), inner, clock


def test_a_second_read_is_answered_from_the_cache():
    store, inner, _ = make()
    assert store.get_key("k1") == "v1"
    assert store.get_key("k1") == "v1"
    assert inner.reads == 1


def test_a_write_through_the_process_is_seen_by_the_next_read():
    store, inner, _ = make()
    store.get_key("k1")
    store.update_key("k1", "v2")
    assert store.get_key("k1") == "v2"


def test_an_unknown_method_counts_as_a_write():
    store, inner, _ = make()
    store.get_key("k1")
    store.some_new_write()
    assert store.get_key("k1") is None


def test_a_change_by_another_process_is_seen_after_the_ttl():
    store, inner, clock = make(ttl=1.0)
    store.get_key("k1")
    inner.keys["k1"] = "changed elsewhere"
    clock.now += 0.5
    assert store.get_key("k1") == "v1"
    clock.now += 0.6
    assert store.get_key("k1") == "changed elsewhere"


def test_not_found_is_not_cached():
    store, inner, _ = make()
    assert store.get_key("k9") is None
    inner.keys["k9"] = "made by another process"
    assert store.get_key("k9") == "made by another process"


def test_a_read_racing_a_write_is_not_cached():
    store, inner, _ = make()

    def write_meanwhile() -> None:
        inner.on_read = None
        store.update_key("k1", "v2")  # lands while the read below is in flight

    inner.on_read = write_meanwhile
    assert store.get_key("k1") == "v1"  # what the store said when the read began
    assert store.get_key("k1") == "v2"  # not the stale answer from the cache


def test_cached_lists_cannot_be_changed_by_a_caller():
    store, _, _ = make()
    store.materials("k1").append("junk")
    assert store.materials("k1") == ["m-k1"]


def test_other_reads_go_to_the_store_every_time():
    store, inner, _ = make()
    store.list_keys("a")
    store.list_keys("a")
    assert inner.reads == 2


def test_a_ttl_of_zero_turns_the_cache_off():
    store, inner, _ = make(ttl=0)
    store.get_key("k1")
    store.get_key("k1")
    assert inner.reads == 2


def test_services_that_share_a_store_share_one_cache():
    store, _, _ = make()
    assert cached(store, 5.0) is store


def test_threads_read_and_write_without_losing_a_write():
    store, inner, _ = make(ttl=60)
    errors: list[str] = []

    def reader() -> None:
        for _ in range(2000):
            store.get_key("k1")

    def writer() -> None:
        for i in range(200):
            store.update_key("k1", f"w{i}")
            if store.get_key("k1") != f"w{i}":
                errors.append(f"w{i}")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_key("k1") == "w199"


def test_a_fresh_read_skips_the_cache():
    from hsmkms.service.cache import FRESH

    store, inner, _ = make()
    store.get_key("k1")
    inner.keys["k1"] = "changed elsewhere"
    token = FRESH.set(True)
    try:
        assert store.get_key("k1") == "changed elsewhere"
    finally:
        FRESH.reset(token)
    assert store.get_key("k1") == "v1"  # the data plane may still answer from the cache


def test_only_the_data_plane_reads_through_the_cache(library):
    from hsmkms.service import cache

    key = library.create_key()["KeyMetadata"]["KeyId"]
    library.encrypt(KeyId=key, Plaintext=b"x")  # cached now
    seen: list[bool] = []
    store = library.service.store
    real = store.inner.get_key

    def spy(key_id: str) -> object:
        seen.append(cache.FRESH.get())
        return real(key_id)

    store.inner.get_key = spy
    store.__dict__.pop("get_key", None)  # resolve again through the spy
    try:
        library.describe_key(KeyId=key)
        library.encrypt(KeyId=key, Plaintext=b"x")
    finally:
        del store.inner.get_key
        store.__dict__.pop("get_key", None)
    assert seen == [True]  # DescribeKey read the store; Encrypt answered from the cache
