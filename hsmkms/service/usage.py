"""GetKeyLastUsage, and the record of each key's last successful cryptographic operation.

A use is noted in memory when a request succeeds (:meth:`LastUsage.note`, from
:meth:`Service.dispatch`: a dictionary update under a lock, no store write on the request's
path) and written to the store in one batch every :data:`FLUSH_SECONDS` by a background
thread, one row per key record, the later use winning (several processes write). GetKeyLastUsage
reads the store and this process's uses not yet written.

What a crash may lose: the uses of the last :data:`FLUSH_SECONDS` (a key may then show an
older last use, or none), never key data. A batch the store refuses (busy, full) is kept and
written with the next one.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hsmkms.model import key_use_operations
from hsmkms.service.core import Request, now, operation
from hsmkms.store import KeyUsageRecord, StoreError

if TYPE_CHECKING:
    from hsmkms.service import Service
    from hsmkms.store import Store

log = logging.getLogger("hsmkms.service")

# GetKeyLastUsage's operations (botocore's model); ReEncrypt counts on both of its keys.
COUNTED = key_use_operations()
FLUSH_SECONDS = 3.0


class LastUsage:
    """This process's uses not yet in the store, and the thread that writes them."""

    def __init__(self, store: Store, interval: float = FLUSH_SECONDS) -> None:
        self._store = store
        self._interval = interval
        self._pending: dict[str, KeyUsageRecord] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one batch at a time
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def note(self, req: Request) -> None:
        """``req`` succeeded: if it is one of the counted operations, each key it used was
        last used now, by it."""
        if req.operation not in COUNTED or not req.used:
            return
        at = now()
        with self._lock:
            for key in req.used:
                self._pending[key.ref] = KeyUsageRecord(
                    key.ref, req.operation, at, req.request_id, req.event_id
                )
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._run, name="hsmkms-last-usage", daemon=True
                )
                self._thread.start()

    def last(self, ref: str) -> KeyUsageRecord | None:
        """The key record's last use: this process's newest, else the store's."""
        with self._lock:
            mine = self._pending.get(ref)
        stored = self._store.get_key_usage(ref)
        if mine is None or (stored is not None and stored.used_at > mine.used_at):
            return stored
        return mine

    def flush(self) -> None:
        """Write the uses noted so far (kept for the next batch if the store refuses)."""
        with self._flushing:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                self._store.record_key_usage(list(batch.values()))
            except StoreError as exc:
                log.warning("could not record the last use of %d keys yet: %s", len(batch), exc)
                with self._lock:  # newer uses noted meanwhile win
                    self._pending = {**batch, **self._pending}

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._interval)
            try:
                self.flush()
            except Exception:  # the thread must outlive any one failure
                log.exception("recording key last usage failed")

    def tracking_start(self) -> datetime:
        return self._store.get_usage_tracking_start()

    def close(self) -> None:
        """Write what is pending and stop the thread."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()


@operation("GetKeyLastUsage")
def get_key_last_usage(svc: Service, req: Request) -> dict[str, Any]:
    key = svc.authorized_key(req, req.key_id, allow_alias=False)
    used = svc.usage.last(key.ref)
    last: dict[str, Any] = {}
    if used is not None:
        last = {
            "Operation": used.operation,
            "Timestamp": used.used_at,
            "CloudTrailEventId": used.event_id,
            "KmsRequestId": used.request_id,
        }
    started: datetime = svc.usage.tracking_start()
    return {
        "KeyId": key.key_id,
        "KeyLastUsage": last,
        "TrackingStartDate": max(started, key.created_at),
        "KeyCreationDate": key.created_at,
    }
