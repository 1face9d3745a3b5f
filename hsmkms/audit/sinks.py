"""The audit sink of :class:`hsmkms.service.Service`: each request's event, chained, to a
JSON-lines file and/or stdout, from the one place the dispatch calls (docs/audit.md).

* **One file, every process**: the workers of ``hsmkms serve --workers N`` append to one file
  under one lock, the chain's state shared through the lock file (:mod:`.files`).
* **stdout**: the same line as the file's, written under the same lock (so lines of several
  workers never interleave mid-line); without a file, the bare event (no chain: a chain needs
  the file to carry on from), under a lock of its own in the home.
* **Durability**: each line is one ``write(2)`` (no user-space buffer): once the request is
  answered its event is in the kernel, safe from a crash of the process. ``fsync`` runs every
  ``audit_fsync`` seconds in a background thread (0: after every event, slow), so a crash of
  the machine may lose the last second of events: the chain then just ends earlier.
* **Failures**: with ``audit_required`` a request whose event no device accepted is answered
  KMSInternalException (500), as Vault refuses requests when no audit device can write;
  without it the event is dropped and the server log says so (once per 10 s).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hsmkms import errors
from hsmkms.audit import events
from hsmkms.audit.files import AuditUnavailable, ProcessLock, TrailFile, write_all

if TYPE_CHECKING:
    from hsmkms.audit.events import AuditedRequest as Request
    from hsmkms.config import Settings

log = logging.getLogger("hsmkms.audit")

REFUSED_BEFORE = (
    "The request was rejected because the audit trail cannot be written. Nothing was done; "
    "the request can be retried."
)
REFUSED_AFTER = (
    "The request was rejected because its audit event could not be written. Its answer is "
    "withheld; a change it made stays made."
)
COMPLAIN_EVERY = 10.0


class AuditTrail:
    """The sink: one event per request to every device, under one lock; ``required``: a
    request whose event no device took is answered KMSInternalException."""

    def __init__(
        self,
        region: str,
        *,
        file: TrailFile | None = None,
        stream: IO[str] | None = None,
        stdout_lock: Path | None = None,
        required: bool = False,
        fsync_every: float = 1.0,
    ) -> None:
        self.region = region
        self.file = file
        self.stream = stream
        self.required = required
        self.fsync_every = fsync_every
        # The file's lock (whose page holds the chain's shared state), else one for stdout.
        self.lock = file.lock if file is not None else ProcessLock(stdout_lock)
        self.broken: str | None = None  # why the last event could not be written
        self.dropped = 0
        self._complained = float("-inf")
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    # -- the sink protocol (hsmkms.service.audit.AuditSink, structurally) -------------------
    def record(
        self, req: Request, error: errors.KMSError | None, answer: dict[str, Any] | None = None
    ) -> None:
        try:
            data = events.event_json(req, error, answer, self.region)
            self.write(data)
        except AuditUnavailable as exc:
            self._failed(req, error, str(exc))
        except Exception as exc:  # an event that cannot be built is one not written
            log.exception("audit: the event of %s could not be built", req.operation)
            self._failed(req, error, f"{type(exc).__name__}: {exc}")
        else:
            self.broken = None

    def admit(self, req: Request) -> None:
        """Before ``req`` runs: refuse it while the trail is known unwritable and required."""
        if self.required and self.broken is not None:
            raise errors.KMSInternalException(REFUSED_BEFORE)

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)
        with self.lock:
            if self.file is not None:
                try:
                    self.file.close()
                except OSError as exc:
                    log.warning("audit: closing %s: %s", self.file.path, exc)
        self.lock.close()

    # -- writing --------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Append one event (its JSON object) to every device; AuditUnavailable if none took it."""
        failures: list[str] = []
        wrote = False
        with self.lock:
            line = None
            if self.file is not None:
                try:
                    line = self.file.append(data, fsync=self.fsync_every <= 0)
                    wrote = True
                except OSError as exc:
                    failures.append(f"{self.file.path}: {exc.strerror or exc}")
            if self.stream is not None:
                if line is None:
                    line = self.file.chain.line(data)[0] if self.file else data + b"\n"
                try:
                    _emit(self.stream, line)
                    wrote = True
                except (OSError, ValueError) as exc:
                    failures.append(f"stdout: {exc}")
        if failures:
            self._complain("; ".join(failures))
        if not wrote:
            raise AuditUnavailable("; ".join(failures) or "no audit device")
        if self.file is not None and self.fsync_every > 0 and self._syncer is None:
            self._start_syncer()

    def _failed(self, req: Request, error: errors.KMSError | None, why: str) -> None:
        self.broken = why
        self.dropped += 1
        if not self.required:
            return
        log.error(
            "audit: the event %s of %s (request %s) could not be written: answered "
            "KMSInternalException (audit_required)",
            req.event_id,
            req.operation,
            req.request_id,
        )
        before = isinstance(error, errors.KMSInternalException) and error.message == REFUSED_BEFORE
        raise errors.KMSInternalException(REFUSED_BEFORE if before else REFUSED_AFTER)

    def _complain(self, why: str) -> None:
        now = time.monotonic()
        if now - self._complained >= COMPLAIN_EVERY:
            self._complained = now
            log.error("audit: cannot write the audit trail: %s", why)

    # -- fsync in the background -----------------------------------------------------------
    def _start_syncer(self) -> None:
        with self.lock.thread:
            if self._syncer is not None:
                return
            self._syncer = threading.Thread(
                target=self._sync_loop, name="hsmkms-audit-fsync", daemon=True
            )
            self._syncer.start()

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_every):
            self.sync()

    def sync(self) -> None:
        """fsync what was written since the last time (the file's lock is held only to
        duplicate its descriptor: the fsync itself blocks no writer)."""
        if self.file is None:
            return
        with self.lock.thread:
            fd = self.file.sync()
        if fd < 0:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            self._complain(f"fsync {self.file.path}: {exc.strerror}")
        finally:
            os.close(fd)


def _emit(stream: IO[str], line: bytes) -> None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        stream.write(line.decode())
        stream.flush()
        return
    write_all(fd, line)


# -- from the settings -----------------------------------------------------------------------
def read_key(path: Path) -> bytes:
    """The chain's HMAC key from ``path`` (mode 0600), made there (32 random bytes, hex) if
    the file does not exist yet."""
    from hsmkms.config import ConfigError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the audit key file {path}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    try:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(
                f"the audit key file {path} is readable by others: run chmod 600 {path}"
            )
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the audit key file {path}: {exc.strerror}") from None
    if len(key) < 32:
        raise ConfigError(f"the audit key file {path} holds fewer than 32 characters")
    return key


def open_audit(settings: Settings, stream: IO[str] | None = None) -> AuditTrail | None:
    """The sink the settings ask for (``audit_file``, ``audit_stdout``; None for neither)."""
    path = settings.audit_path
    if path is None and not settings.audit_stdout:
        return None
    key = read_key(settings.audit_key_path) if settings.audit_key_path else None
    file = None
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:  # the writes fail too, and say so (audit_required refuses)
            log.error("audit: cannot make the directory of %s: %s", path, exc.strerror)
        file = TrailFile(path, settings.audit_max_bytes, key)
    return AuditTrail(
        settings.region,
        file=file,
        stream=(stream or sys.stdout) if settings.audit_stdout else None,
        stdout_lock=settings.home / "audit.lock",
        required=settings.audit_required,
        fsync_every=settings.audit_fsync,
    )
