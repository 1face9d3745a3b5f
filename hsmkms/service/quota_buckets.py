"""Token buckets that every process opening one file shares (the request quotas' mechanics).

    buckets = SharedBuckets(home / "quotas.bin")
    b = Bucket.named("123456789012/us-east-1/CreateKey", rate=5)
    buckets.take([b])        # True: one token taken; False: empty, nothing taken
    buckets.give([b])        # one token back (capped at the capacity)

A bucket holds up to ``capacity`` tokens and gains ``rate`` tokens a second; a take of
several buckets takes one token from each or, if any is short, none at all. The state lives in
a small file (mode 0600) that each process maps into memory: a header, then fixed slots of
(key, tokens, time of the last update, rate, capacity). A bucket's slot is found from its key
(16 bytes of BLAKE2b of its name) by linear probing over at most :data:`PROBES` slots; each
process remembers where it last found a bucket and checks the key there first.

One lock guards the whole file: ``fcntl.lockf`` on its first byte, which the kernel drops
when its holder dies (no process can leave the file locked), under a ``threading.Lock``,
since POSIX record locks belong to a process and would not keep its threads apart. Every
instance over the same file in one process shares one mapping and one thread lock: two
descriptors would each drop the process's record locks when closed (a POSIX rule), and two
thread locks would not exclude each other.

Slots free themselves: a bucket that has refilled is the same as no bucket, so its slot is
taken by the next bucket that needs one. When all the slots a bucket may probe hold buckets
that are still refilling (more than :data:`PROBES` busy buckets hashed to one place), the
least recently used of them is given up: that bucket starts full again.

The file is disposable: one with a wrong header or size is rewritten empty (every bucket
full) when a process opens it; a slot holding nonsense (a half-written slot, a time from
before a reboot, the monotonic clock being per boot) reads as a full bucket. Nothing here
knows what the buckets are for.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"HSMKMSQB"
VERSION = 1
HEADER = struct.Struct("<8sII")  # magic, version, slot count
HEADER_SIZE = 64
SLOT = struct.Struct("<16sdddd")  # key, tokens, updated (monotonic s), rate, capacity
DEFAULT_SLOTS = 8192  # 384 KiB
PROBES = 32
EMPTY = bytes(16)
_INF = float("inf")
_HINTS_MAX = 1 << 16
_unpack, _pack = SLOT.unpack_from, SLOT.pack_into
_lockf, _LOCK_EX, _LOCK_UN = fcntl.lockf, fcntl.LOCK_EX, fcntl.LOCK_UN


@dataclass(frozen=True)
class Bucket:
    """A bucket's identity (``key``, 16 bytes) and shape: ``rate`` tokens a second, at most
    ``capacity`` tokens."""

    key: bytes
    rate: float
    capacity: float

    @classmethod
    def named(cls, name: str, rate: float, capacity: float | None = None) -> Bucket:
        """The bucket called ``name``; its capacity defaults to one second of ``rate``, and to
        one token at the least (a rate of 0.1 admits one request every 10 s)."""
        key = hashlib.blake2b(name.encode(), digest_size=16).digest()
        return cls(key, float(rate), float(capacity if capacity is not None else max(rate, 1.0)))


def _level(tokens: float, updated: float, rate: float, capacity: float, now: float) -> float:
    """Tokens now in a bucket last seen holding ``tokens`` at ``updated``; nonsense reads as
    full (NaN fails every comparison), and so does a time from the future (of another boot:
    the clock is read under the file lock, so no process writes a later one)."""
    elapsed = now - updated
    if elapsed >= 0 and 0 <= tokens < _INF:
        return min(capacity, tokens + elapsed * rate)
    return capacity


class _File:
    """One process's mapping of one bucket file (shared by every SharedBuckets over it)."""

    def __init__(self, fd: int, slots: int) -> None:
        self.fd = fd
        self.slots = slots
        self.size = HEADER_SIZE + slots * SLOT.size
        self.lock = threading.Lock()
        self.refs = 0
        self.hints: dict[bytes, int] = {}
        self.lock_file()
        try:
            self._check_or_reset()
        finally:
            self.unlock_file()
        self.map = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    def lock_file(self) -> None:
        _lockf(self.fd, _LOCK_EX, 1, 0)

    def unlock_file(self) -> None:
        _lockf(self.fd, _LOCK_UN, 1, 0)

    def _check_or_reset(self) -> None:
        """Under the file lock: a file of another size or header is rewritten empty."""
        header = os.pread(self.fd, HEADER.size, 0)
        if os.fstat(self.fd).st_size == self.size and header == self._header():
            return
        os.ftruncate(self.fd, 0)
        os.ftruncate(self.fd, self.size)  # zeros: every slot empty
        os.pwrite(self.fd, self._header(), 0)

    def _header(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.slots)

    # -- slots (the caller holds both locks) ------------------------------------------------
    def claim(self, bucket: Bucket, now: float) -> tuple[int, float]:
        """(offset of ``bucket``'s slot, its tokens now), giving it a slot if it has none."""
        found = self.find(bucket, now)
        if isinstance(found, tuple):
            return found
        self.write(found, bucket, bucket.capacity, now)
        self._hint(bucket.key, found)
        return found, bucket.capacity

    def find(self, bucket: Bucket, now: float) -> tuple[int, float] | int:
        """(offset of ``bucket``'s slot, its tokens now), or, when it has none (it is full),
        the offset of the slot it would take."""
        offset = self.hints.get(bucket.key)
        if offset is not None:
            key, tokens, updated, _, _ = _unpack(self.map, offset)
            if key == bucket.key:
                return offset, _level(tokens, updated, bucket.rate, bucket.capacity, now)
        start = int.from_bytes(bucket.key[:8], "little") % self.slots
        free: int | None = None
        oldest, oldest_at = HEADER_SIZE, _INF
        for i in range(PROBES):
            offset = HEADER_SIZE + ((start + i) % self.slots) * SLOT.size
            key, tokens, updated, rate, capacity = _unpack(self.map, offset)
            if key == bucket.key:
                self._hint(bucket.key, offset)
                return offset, _level(tokens, updated, bucket.rate, bucket.capacity, now)
            if free is not None:
                continue
            if key == EMPTY or _level(tokens, updated, rate, capacity, now) >= capacity:
                free = offset
            elif updated < oldest_at:
                oldest, oldest_at = offset, updated
        return free if free is not None else oldest

    def write(self, offset: int, bucket: Bucket, tokens: float, now: float) -> None:
        _pack(self.map, offset, bucket.key, tokens, now, bucket.rate, bucket.capacity)

    def _hint(self, key: bytes, offset: int) -> None:
        if len(self.hints) >= _HINTS_MAX:
            self.hints.clear()
        self.hints[key] = offset

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


_FILES: dict[tuple[int, int], _File] = {}
_FILES_LOCK = threading.Lock()


def _after_fork() -> None:
    """A forked child inherits the mappings but not the record locks, and a thread lock that
    another thread held at the fork would never be released: fresh thread locks."""
    global _FILES_LOCK
    _FILES_LOCK = threading.Lock()
    for f in _FILES.values():
        f.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


class SharedBuckets:
    """The token buckets of the file at ``path`` (created, mode 0600, if missing)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        slots: int = DEFAULT_SLOTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                os.fchmod(fd, 0o600)
            ident = (st.st_dev, st.st_ino)
            with _FILES_LOCK:
                shared = _FILES.get(ident)
                if shared is not None and shared.slots != slots:
                    raise ValueError(f"{self.path} is open here with {shared.slots} slots")
                if shared is None:
                    shared = _File(fd, slots)
                    _FILES[ident] = shared
                    fd = -1  # the mapping owns it now
                shared.refs += 1
        finally:
            if fd >= 0:
                os.close(fd)
        self._file: _File | None = shared
        self._ident = ident

    def take(self, buckets: Sequence[Bucket], n: float = 1.0) -> bool:
        """Take ``n`` tokens from every one of ``buckets`` (``n`` again for each repetition
        of one), or none if any has too few: whether they were taken."""
        f = self._open()
        fd = f.fd
        with f.lock:
            _lockf(fd, _LOCK_EX, 1, 0)
            try:
                now = self.clock()  # under the lock: no slot holds a later time
                taken: list[tuple[int, Bucket, float]] = []
                for b in buckets:
                    offset, tokens = f.claim(b, now)
                    if tokens < n:
                        for at, was, level in reversed(taken):  # as they were
                            _pack(f.map, at, was.key, level, now, was.rate, was.capacity)
                        return False
                    _pack(f.map, offset, b.key, tokens - n, now, b.rate, b.capacity)
                    taken.append((offset, b, tokens))
                return True
            finally:
                _lockf(fd, _LOCK_UN, 1, 0)

    def give(self, buckets: Sequence[Bucket], n: float = 1.0) -> None:
        """Put ``n`` tokens back into each of ``buckets``, none beyond its capacity (a bucket
        that has no slot is full already)."""
        f = self._open()
        with f.lock:
            f.lock_file()
            try:
                now = self.clock()
                for b in buckets:
                    found = f.find(b, now)
                    if isinstance(found, tuple):
                        f.write(found[0], b, min(b.capacity, found[1] + n), now)
            finally:
                f.unlock_file()

    def level(self, bucket: Bucket) -> float:
        """The tokens ``bucket`` holds now."""
        f = self._open()
        with f.lock:
            f.lock_file()
            try:
                found = f.find(bucket, self.clock())
            finally:
                f.unlock_file()
        return found[1] if isinstance(found, tuple) else bucket.capacity

    def _open(self) -> _File:
        if self._file is None:
            raise ValueError(f"the bucket file {self.path} is closed")
        return self._file

    def close(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        with _FILES_LOCK:
            f.refs -= 1
            if f.refs > 0:
                return
            if _FILES.get(self._ident) is f:
                del _FILES[self._ident]
        with f.lock:
            f.close()

    def __enter__(self) -> SharedBuckets:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
