"""The handle cache: master-key objects by CKA_ID, so that the request path never searches.

Measured on SoftHSM2 2.6.1 + python-pkcs11 0.10.1 with ``python -m bench.token_layer``:
C_FindObjects is a linear scan in SoftHSM2 (16 ms at 1,000 keys, 170 ms at 10,000, whatever
the template), so it runs once at start-up to fill the cache and afterwards only on a miss or
a dead handle. That search reads CKA_ID of every AES key (1-2 s at 10,000 keys: SoftHSM2
re-checks an object's file on every attribute read), so it runs on a session of its own
*outside* the request lock, and calls on cached keys go on meanwhile; concurrent misses wait
for one search instead of each making its own (single flight). python-pkcs11 binds an object
to the session that found it, so that session stays open while its objects are cached (until
the next search replaces them). :meth:`HandleCache.cached` tells a caller that must not wait
(an event loop) whether a call would search, and :data:`hsmkms.hsm.NO_SEARCH` makes a miss
raise :class:`~hsmkms.hsm.WouldSearch` instead of searching.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import pkcs11.exceptions
from pkcs11 import Attribute, ObjectClass

from hsmkms.hsm import NO_SEARCH, KeyNotFound, TokenError, WouldSearch, errors
from hsmkms.hsm.contract import MATERIAL_ID_BYTES
from hsmkms.hsm.errors import Lost

if TYPE_CHECKING:
    from hsmkms.hsm.library import Library
    from hsmkms.hsm.session import Login

log = logging.getLogger("hsmkms.hsm")

T = TypeVar("T")

# Every token object; the classes of key materials: master keys and HMAC keys (secret keys),
# private keys. Public keys never share a material id (they are session objects).
_SEARCH = {Attribute.TOKEN: True}
_MATERIAL_CLASSES = frozenset({ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY})
_SEARCH_BATCH = 256  # handles per C_FindObjects (python-pkcs11's default is 10)


class Search(Protocol):
    def __call__(self, session: Any, *, labels: bool) -> list[tuple[bytes, str, Any]]: ...


class Owner(Protocol):
    """What the cache asks of the call path that owns it (calls.CallPath)."""

    library: Library
    login: Login

    def ready(self) -> None: ...

    def classify(
        self,
        exc: Exception,
        what: str,
        integrity: tuple[type[Exception], ...],
        *,
        storing: bool = False,
    ) -> Exception: ...

    def healthy(self) -> bool: ...


def search(session: Any, *, labels: bool) -> list[tuple[bytes, str, Any]]:
    """(CKA_ID, CKA_LABEL or "", object) of every token key with a material id (a master
    key, a private key, an HMAC key), by one C_FindObjects on ``session``. The label costs a
    little more; only listings need it."""
    wanted = (
        [Attribute.ID, Attribute.CLASS, Attribute.LABEL]
        if labels
        else [Attribute.ID, Attribute.CLASS]
    )
    found: list[tuple[bytes, str, Any]] = []
    for obj in session.get_objects(_SEARCH, batch_size=_SEARCH_BATCH):
        try:
            attrs = obj.get_attributes(wanted)
        except pkcs11.exceptions.AttributeTypeInvalid:
            continue  # an object without CKA_ID (data, a certificate ...): not one of ours
        mid = bytes(attrs.get(Attribute.ID, b""))
        if len(mid) == MATERIAL_ID_BYTES and attrs.get(Attribute.CLASS) in _MATERIAL_CLASSES:
            found.append((mid, str(attrs.get(Attribute.LABEL, "")), obj))
    return found


def check_material_id(material_id: bytes) -> bytes:
    if not isinstance(material_id, bytes | bytearray) or len(material_id) != MATERIAL_ID_BYTES:
        raise ValueError(f"a key material id is {MATERIAL_ID_BYTES} bytes")
    return bytes(material_id)


class Miss(Exception):
    """Internal: the handle cache lacks ``mid`` (None: it was never filled). Raised under the
    request lock; :meth:`calls.CallPath.run` fills the cache outside the lock and runs the call
    once more."""

    def __init__(self, mid: bytes | None) -> None:
        super().__init__(mid)
        self.mid = mid


class HandleCache:
    """CKA_ID -> python-pkcs11 key object. Read and written under the request lock
    (``login.lock``); filled by one search at a time, outside it."""

    def __init__(self, calls: Owner, search: Search, *, loaded_capacity: int = 20_000) -> None:
        self._calls = calls
        self._login = calls.login
        self._search = search  # the token's, so that tests can spy on it
        self.keys: dict[bytes, Any] = {}
        # Session objects unwrapped from the store (the wrapped mode, hsm/wrapping.py), least
        # recently used first: no search finds them, so a fill leaves them alone; an object
        # pushed out is destroyed (SoftHSM2 holds one in ~12 KB).
        self.loaded: OrderedDict[bytes, Any] = OrderedDict()
        self.loaded_capacity = max(1, loaded_capacity)
        self.filled = False  # whether keys holds every key (a search since the last connect)
        # The session of the search that found the objects in keys (python-pkcs11 binds an
        # object to its session): open while they are cached; closed when the next replaces it.
        self._found_on: Any = None
        # While a search runs: what this process put in (object) or dropped from (None) keys
        # since it began, which its result cannot know. None when no search runs.
        self._changed: dict[bytes, Any] | None = None
        # Single flight: one search at a time; a miss waits for a search that began after it.
        self._fill_cond = threading.Condition(threading.Lock())
        self._filling = False
        self._fills_begun = 0
        self._fills_ended = 0  # every search up to this number has ended

    def cached(self, mid: bytes) -> bool:
        """Whether a call on ``mid`` would find its handle: no token call, no lock."""
        return (self.keys.get(mid) is not None or mid in self.loaded) and self._login.current()

    def clear(self) -> None:
        """Forget every handle (the caller forgets the session with them)."""
        self.keys = {}
        self.loaded = OrderedDict()
        self.filled = False
        self._found_on = None

    def close_search_session(self) -> None:
        if self._found_on is not None:
            with contextlib.suppress(errors.PKCS11Error):
                self._found_on.close()

    # -- on the request path, under the lock ---------------------------------------------------

    def master(self, mid: bytes) -> Any:
        """The cached key. A miss raises :class:`Miss`, on which :meth:`calls.CallPath.run`
        searches outside the lock and runs the call again."""
        obj = self.keys.get(mid)
        if obj is None:
            obj = self.loaded.get(mid)
            if obj is None:
                raise Miss(mid)
            self.loaded.move_to_end(mid)
        return obj

    def with_master(self, mid: bytes, fn: Callable[[Any], T]) -> T:
        """``fn`` on the cached key; on a dead handle (another process destroyed the key, or
        the token went) look the key up once more."""
        key = self.master(mid)
        try:
            return fn(key)
        except errors.HANDLE:
            self.drop(mid)
        raise Miss(mid)

    def need_filled(self) -> None:
        """A cache that was never filled is filled (by :meth:`calls.CallPath.run`)."""
        if not self.filled:
            raise Miss(None)

    def put(self, mid: bytes, obj: Any) -> None:
        self.keys[mid] = obj
        if self._changed is not None:
            self._changed[mid] = obj

    def drop(self, mid: bytes) -> None:
        self.keys.pop(mid, None)
        self.loaded.pop(mid, None)
        if self._changed is not None:
            self._changed[mid] = None

    def load(self, mid: bytes, obj: Any) -> None:
        """Keep an unwrapped session object, destroying the least recently used beyond the
        capacity (under the lock: no call is using it)."""
        old = self.loaded.pop(mid, None)
        self.loaded[mid] = obj
        if old is not None:
            _destroy_quietly(old)
        self.trim()

    def trim(self) -> None:
        """Destroy the least recently used loaded objects beyond the capacity."""
        while len(self.loaded) > self.loaded_capacity:
            _mid, evicted = self.loaded.popitem(last=False)
            _destroy_quietly(evicted)

    def unload(self, mid: bytes) -> bool:
        """Destroy the session object unwrapped for ``mid``; whether there was one."""
        obj = self.loaded.pop(mid, None)
        if obj is not None:
            _destroy_quietly(obj)
        return obj is not None

    # -- after a miss, outside the lock ----------------------------------------------------

    def fill_for(self, mid: bytes | None) -> None:
        """Have the cache filled by a search that began after the miss on ``mid`` (None: a
        cache never filled), or by one already running that found it. Not under the lock.

        A miss is a key another process created after our last search, and those come in
        batches (keys created through another worker): SoftHSM2's C_FindObjects reads every
        object whatever the template (170 ms at 10,000), so one search per missing key would
        cost that per key; one search of every key picks up the whole batch for ~1.5x the price.
        Concurrent misses share it: a thread that misses while a search runs waits for it, and
        searches again only if its key was created too late for it."""
        if NO_SEARCH.get():
            what = "the master keys" if mid is None else f"master key {mid.hex()}"
            raise WouldSearch(f"{what} of {self._login.label!r} would need a search of the token")
        with self._fill_cond:
            wanted = self._fills_begun + 1  # the first search to begin after this miss
            while self._fills_ended < wanted:
                if not self._filling:
                    self._filling = True
                    self._fills_begun += 1
                    break  # this thread searches
                self._fill_cond.wait()
                if self.filled if mid is None else self.keys.get(mid) is not None:
                    return  # the search that was running found it
            else:
                return  # a search that began after the miss has ended
        try:
            self._fill()
        except errors.PKCS11Error as exc:
            with self._login.lock:
                raise self._calls.classify(exc, "search the master keys", ()) from None
        finally:
            with self._fill_cond:
                self._filling = False
                self._fills_ended = self._fills_begun
                self._fill_cond.notify_all()

    def _fill(self) -> None:
        """One search of every master key on a session of its own, without the lock (calls on
        cached keys go on meanwhile, unless the library cannot lock: then with it); its
        objects then replace the cache, with what this process changed meanwhile on top."""
        login, library = self._login, self._calls.library
        with login.lock:
            self._calls.ready()
            generation = login.gen
            self._changed = {}
        serial: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if library.os_locking else login.lock
        )
        session = None
        try:
            with serial:
                session = login.open_side_session()
                found = self._search(session, labels=False)
        except BaseException:
            with login.lock:
                self._changed = None
            if session is not None:
                with contextlib.suppress(errors.PKCS11Error):
                    session.close()
            raise
        with login.lock:
            changed, self._changed = self._changed or {}, None
            if login.closed or login.gen != generation or library.generation != generation:
                # Closed, or re-initialised (the gate keeps that from happening during a
                # search, but not between two calls): these handles are void or unwanted.
                if library.generation == generation:
                    with contextlib.suppress(errors.PKCS11Error):
                        session.close()
                return
            keys: dict[bytes, Any] = {}
            for mid, _label, obj in found:
                if mid in keys:
                    log.warning("several objects share CKA_ID %s; using the first", mid.hex())
                    continue
                keys[mid] = obj
            for mid, obj in changed.items():
                if obj is None:
                    keys.pop(mid, None)
                else:
                    keys[mid] = obj
            # Every object of the previous search is replaced or gone, and objects are only
            # used under the lock: its session can close now.
            old, self._found_on = self._found_on, session
            self.keys = keys
            self.filled = True
            if old is not None:
                with contextlib.suppress(errors.PKCS11Error):
                    old.close()

    def missing(self, mid: bytes | None) -> Exception:
        """What a miss after a search means."""
        label = self._login.label
        with self._login.lock:
            # SoftHSM2 finds nothing, without an error, once its token directory is gone.
            if not self._calls.healthy():
                return Lost("the token stopped answering during a key lookup")
        if mid is None:
            return TokenError(f"could not read the master keys of {label!r}")
        return KeyNotFound(f"no master key with material id {mid.hex()} on {label!r}")


def _destroy_quietly(obj: Any) -> None:
    """C_DestroyObject of a session object that may already be gone with its session."""
    with contextlib.suppress(errors.PKCS11Error):
        obj.destroy()
