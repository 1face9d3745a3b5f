"""A per-process cache of the store's answers on the request path, exact within ``ttl``.

Every Encrypt, Decrypt and GenerateDataKey reads the key record (and its alias, materials,
grants) before one AES-GCM call on the token; from SQLite those reads cost as much as the
call itself. AWS KMS documents that changes to keys, aliases and grants are eventually
consistent, so a process may answer from what it read a moment ago:

* a change made through this process (any store method that is not a read) empties the cache
  when it returns, so a client that changes a key and then uses it sees the change at once;
* a change made by another process (another worker, another node) is seen by the data plane
  (Encrypt, Decrypt, GenerateDataKey*, ...) within ``ttl`` seconds, and at once by every other
  operation (DescribeKey, List*, Get*, writes), which reads the store itself (``FRESH``);
* a read that was in flight while a change was written is not cached (a generation counter),
  so the cache never holds an answer older than the last local write.

Entries do not expire one by one. The cache as a whole is trusted until ``valid_until``; the
first read after that asks the store for its change marker (:meth:`Store.change_marker`,
SQLite's ``PRAGMA data_version``: a few microseconds, no table read). The same marker as
last time means no other connection committed since: every entry is kept and trusted for
another ``ttl``. A different one empties the cache. So ``ttl`` still bounds how long another
process's change goes unseen, but an unchanged store costs one marker read per ``ttl``
instead of a store read per key per ``ttl``: with 10,000 keys each used every few seconds,
nearly every read is a hit (it was nearly every read a miss with one expiry per entry). A
store without a change signal answers a new marker every time, which is the old behaviour.

Every marker read happens before the reads it vouches for: an entry is kept only if its read
began after the marker that the cache currently holds was read (the generation counter again,
bumped whenever the cache is emptied), so an answer read before another process's commit
cannot survive the marker read that notices the commit.

This also bounds how long a grant retired or revoked, or a key disabled, in another worker
keeps working in this one: ``ttl``, as before. Unlike before, a smaller ``ttl`` now costs
little (one marker read per ``ttl`` while nothing changes), should a deployment want it.

Only answers that found something are kept: a key created by another process is found by its
first request, not ``ttl`` seconds later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from hsmkms.store.base import StoreError

# Store methods that only read: prefixes, so that reads added to the store later are
# recognised too. Everything else counts as a write and empties the cache.
_READ_PREFIXES = (
    "get_", "list_", "all_", "was_", "keys_", "grants_", "retirable_", "materials", "aliases_of",
    "change_marker",
)  # fmt: skip
# The reads the request path makes on every call: these are answered from the cache.
CACHED = frozenset({"get_key", "get_alias", "materials", "grants_for_grantees", "get_grant"})
MAX_ENTRIES = 100_000  # beyond this the cache starts over (10,000 keys need ~30,000)
# True while an operation that must see the store as it is now runs (Service.dispatch sets it
# for all but the data plane): its reads skip the cache.
FRESH: ContextVar[bool] = ContextVar("hsmkms_fresh_reads", default=False)


class CachedStore:
    """Wraps a :class:`hsmkms.store.Store`; has the same methods (through ``__getattr__``)."""

    def __init__(self, store: Any, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.inner = store
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[Any, ...], Any] = {}
        self._generation = 0
        self._lock = threading.Lock()
        # The whole cache is trusted until _valid_until; then the store's change marker decides.
        self._read_marker: Callable[[], object] = store.change_marker
        self._marker: object = object()  # equal to no marker: the first check empties
        self._valid_until = float("-inf")
        self._check_lock = threading.Lock()  # one marker read at a time

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method
        if name in CACHED and self.ttl > 0:
            wrapped = self._cached(name, method)
        elif name.startswith(_READ_PREFIXES) or name == "close":
            return method
        else:
            wrapped = self._writing(method)
        # Resolved once per name: later lookups find the attribute without __getattr__.
        self.__dict__[name] = wrapped
        return wrapped

    def peek_key(self, key_id: str) -> Any:
        """The cached record of ``key_id``, or None: no store read, no marker check. Only for
        what never changes in a key (its spec), deciding where a call runs."""
        return self._entries.get(("get_key", key_id))

    def invalidate(self) -> None:
        """Forget everything (a write went through this process)."""
        with self._lock:
            self._generation += 1
            self._entries = {}

    def _check(self) -> None:
        """Past ``valid_until``: keep everything for another ``ttl`` if the store's change
        marker is what it was, else forget everything."""
        with self._check_lock:
            now = self._clock()  # before the marker read: the window never outlasts it
            if now < self._valid_until:
                return  # another thread checked while this one waited
            try:
                marker = self._read_marker()
            except StoreError:
                marker = object()  # cannot tell: start over (the reads report the failure)
            with self._lock:
                if marker != self._marker:
                    self._generation += 1  # reads in flight began before this marker read
                    self._entries = {}
                    self._marker = marker
                self._valid_until = now + self.ttl

    def _cached(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def read(*args: Any, **kwargs: Any) -> Any:
            if FRESH.get():
                return method(*args, **kwargs)
            named = ((k, _hashable(v)) for k, v in sorted(kwargs.items()))
            key = (name, *map(_hashable, args), *named)
            if self._clock() >= self._valid_until:
                self._check()
            hit = self._entries.get(key)  # the dict is swapped, never changed, when emptied
            if hit is not None:
                return _copy(hit)
            generation = self._generation
            value = method(*args, **kwargs)
            if value is not None and value != []:
                with self._lock:
                    if generation == self._generation:
                        if len(self._entries) >= MAX_ENTRIES:
                            self._entries = {}
                        self._entries[key] = value
            return _copy(value)

        return read

    def _writing(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def write(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            finally:
                self.invalidate()  # also after a failure: it may have half-happened elsewhere

        return write


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | set) else value


def _copy(value: Any) -> Any:
    """Records are frozen; a list is copied so that no caller can change the cached one."""
    return list(value) if isinstance(value, list) else value


def cached(store: Any, ttl: float) -> Any:
    """``store`` behind a cache (the same cache when it already is one: services that share a
    store must share its invalidation)."""
    if isinstance(store, CachedStore):
        return store
    return CachedStore(store, ttl)
