"""The audit file that every process of a home appends to: the lock, the chain's shared state,
the append and the rotation.

* **The lock**: ``fcntl.flock`` on ``<file>.lock`` (it dies with its holder), and a thread
  lock beside it (flock does not exclude the threads of one process), around "where does the
  chain stand" + append.
* **The shared state**: the lock file also holds, mmap'd, the chain's last seq and hash, the
  file (device, inode) and the size it had after that line, with a CRC. A process reads it
  under the lock instead of the file's last line: the lines of several workers interleave
  without any of them reading the file back. When the state is missing, torn, or disagrees
  with the file's size (a writer died between its write and the state's update; someone else
  appended), the file's last line is read instead (a ``pread`` of its tail).
* **Rotation by size**: before a line would take the file past ``max_bytes``, the file is
  renamed ``<file>.<seq of its last event, 12 digits>`` and a new one begun; the chain goes on.
  Another process sees the new file in the shared state and follows. A file deleted by hand
  is seen at the next event (its link count, from the ``fstat`` every event makes), one
  renamed by hand within a second (the path is looked at once a second); either is replaced
  by a new file whose first line still names the last event written.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import re
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import NamedTuple

from hsmkms.audit.chain import GENESIS, Chain, last_line, parse

log = logging.getLogger("hsmkms.audit")

_ROTATED = re.compile(r"^\d{12}(-\d+)?$")
PATH_CHECK = 1.0  # seconds between looks at whether the path still names the file
# magic, seq, hash (32 bytes), st_dev, st_ino, size after the line, CRC-32 of what precedes
_STATE = struct.Struct("<8sQ32sQQQI")
_MAGIC = b"hsmkmsA1"
_STATE_BYTES = 4096


class State(NamedTuple):
    """The chain's shared state: the last line written by any process of the home."""

    seq: int
    hash: str
    ident: tuple[int, int]  # (st_dev, st_ino) of the file it went to
    end: int  # that file's size after it


class AuditUnavailable(Exception):
    """No audit device accepted an event (the message names each and why)."""


class ProcessLock:
    """A thread lock and an ``flock`` on ``path`` (opened on first use, again after a fork:
    a forked child shares its parent's open file, and so its lock); ``state`` maps the lock
    file's first page while the lock is held."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.thread = threading.Lock()
        self.state: mmap.mmap | None = None
        self._fd = -1
        self._pid = 0

    def __enter__(self) -> ProcessLock:
        self.thread.acquire()
        try:
            if self.path is not None:
                if self._pid != os.getpid():
                    self._fd, self._pid, self.state = -1, os.getpid(), None
                if self._fd < 0:
                    self._open()
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.thread.release()
            raise AuditUnavailable(f"{self.path}: {exc.strerror or exc}") from None
        except BaseException:
            self.thread.release()
            raise
        return self

    def _open(self) -> None:
        assert self.path is not None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < _STATE_BYTES:
                os.ftruncate(fd, _STATE_BYTES)  # zeros: no state yet
            self.state = mmap.mmap(fd, _STATE_BYTES)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def __exit__(self, *exc: object) -> None:
        try:
            if self.path is not None and self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self.thread.release()

    def close(self) -> None:
        with self.thread:
            if self._fd >= 0 and self._pid == os.getpid():
                if self.state is not None:
                    self.state.close()
                os.close(self._fd)
            self._fd, self.state = -1, None


class TrailFile:
    """The audit file: where the chain stands in it, the append, the rotation. Every method
    runs under ``lock`` (the trail's :class:`ProcessLock`, whose page holds the state)."""

    def __init__(self, path: Path, max_bytes: int, key: bytes | None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.chain = Chain(key)
        self.lock = ProcessLock(path.with_name(path.name + ".lock"))
        self._fd = -1
        self._pid = 0
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the file at _fd
        self._end = -1  # the file's size after this process's last write (-1: unknown)
        self._next_check = 0.0
        self.dirty = False

    def append(self, data: bytes, fsync: bool = False) -> bytes:
        """Chain ``data`` (an event's JSON object) after the file's last line and append it;
        the line written. OSError when the file cannot be opened or written."""
        state = self._read_state()
        previous, reopened, size = self._follow_path(state)
        lead = b""
        try:
            if state is not None and (size == 0 or (state.ident, state.end) == (self._ident, size)):
                self.chain.advance(state.seq, state.hash)  # an empty file continues the chain
            elif reopened or size != self._end:
                lead = self._resync(size, previous)
        finally:
            if previous >= 0:
                os.close(previous)
        line, seq, digest = self.chain.line(data)
        try:
            if self.max_bytes and size > 0 and size + len(lead) + len(line) > self.max_bytes:
                self._rotate()
                size, lead = 0, b""
            write_all(self._fd, lead + line)
        except OSError:
            self._next_check = 0.0  # look at the path again at the next event: it may be fixed
            raise
        self.chain.advance(seq, digest)
        self._end = size + len(lead) + len(line)
        self._write_state()
        self.dirty = True
        if fsync:
            os.fsync(self._fd)
        return line

    def _follow_path(self, state: State | None) -> tuple[int, bool, int]:
        """Open the file the path names if this process has none, if its file was deleted or
        another process moved to a new one (rotation), or, looked at once a second and after a
        failed write, if the path names another file now (renamed by hand). The descriptor of
        the file before (to close once read, -1: none), whether the file was opened anew, and
        its size."""
        mine = self._fd >= 0 and self._pid == os.getpid()
        if mine:
            st = os.fstat(self._fd)
            moved = st.st_nlink == 0 or (state is not None and state.ident != self._ident)
            if not moved and time.monotonic() < self._next_check:
                return -1, False, st.st_size
        self._next_check = time.monotonic() + PATH_CHECK
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        if mine and named is not None and (named.st_dev, named.st_ino) == self._ident:
            return -1, False, named.st_size
        if self._fd >= 0 and not mine:
            os.close(self._fd)  # a forked child's copy of its parent's file
        previous = self._fd if mine else -1
        try:
            self._open()
        except OSError:
            self._fd = previous  # still the file before: tried again on the next event
            raise
        return previous, True, os.fstat(self._fd).st_size

    def _read_state(self) -> State | None:
        """The last line written by any process, or None if the state is missing or torn."""
        page = self.lock.state
        if page is None:
            return None
        magic, seq, digest, dev, ino, end, crc = _STATE.unpack_from(page)
        if magic != _MAGIC or crc != zlib.crc32(page[: _STATE.size - 4]):
            return None
        return State(seq, digest.hex(), (dev, ino), end)

    def _write_state(self) -> None:
        page = self.lock.state
        if page is None or self._ident is None:
            return
        dev, ino = self._ident
        digest = bytes.fromhex(self.chain.last)
        body = _STATE.pack(_MAGIC, self.chain.seq, digest, dev, ino, self._end, 0)[:-4]
        page[: _STATE.size] = body + struct.pack("<I", zlib.crc32(body))

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._pid = os.getpid()
        st = os.fstat(self._fd)
        self._ident = (st.st_dev, st.st_ino)

    def _resync(self, size: int, previous: int) -> bytes:
        """Set the chain to the file's last event (or, for a new empty file, the last of the
        file before it); ``b"\\n"`` when the file ends in a line cut short."""
        if size > 0:
            return self._follow(self._fd, size, str(self.path))
        if previous >= 0:  # the file was renamed under us: the one before is still open
            before = os.fstat(previous).st_size
            if before != self._end:
                self._follow(previous, before, "the file before")
            return b""
        newest = _newest_rotated(self.path)
        if newest is None:
            self.chain.advance(0, GENESIS)
            return b""
        fd = os.open(newest, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._follow(fd, os.fstat(fd).st_size, str(newest))
        finally:
            os.close(fd)
        return b""

    def _follow(self, fd: int, size: int, name: str) -> bytes:
        raw, partial = last_line(fd, size)
        link = parse(raw) if raw is not None else None
        if link is None:
            if size:
                log.warning(
                    "audit: the last line of %s is no audit event: a new chain starts", name
                )
            self.chain.advance(0, GENESIS)
        else:
            self.chain.advance(link.seq, link.hash)
        return b"\n" if partial else b""

    def _rotate(self) -> None:
        os.fsync(self._fd)
        target = self.path.with_name(f"{self.path.name}.{self.chain.seq:012d}")
        n = 0
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.{self.chain.seq:012d}-{n}")
        os.rename(self.path, target)
        os.close(self._fd)
        self._fd = -1
        self._open()

    def sync(self) -> int:
        """A duplicate of the file's descriptor to fsync outside the lock (-1: nothing to do)."""
        if not self.dirty or self._fd < 0 or self._pid != os.getpid():
            return -1
        self.dirty = False
        return os.dup(self._fd)

    def close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
        self._fd = -1


def _newest_rotated(path: Path) -> Path | None:
    prefix = path.name + "."
    try:
        found = [
            p
            for p in path.parent.iterdir()
            if p.name.startswith(prefix) and _ROTATED.match(p.name[len(prefix) :])
        ]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
