"""The server's scheduler: due automatic rotations, deletion sweeps, then expired imported
material and wrapping keys, every ``scheduler_interval`` seconds, done by exactly one of all
the processes and nodes that share the store.

Every server process runs a :class:`Scheduler`; a round runs only in the one that holds the
store lease ``scheduler`` (:meth:`Store.acquire_lease`: a conditional UPDATE, else INSERT, in
one write transaction, so the store decides, not anybody's memory). The holder renews the lease
every round and while it works; the others try each round and take over once it expires
(``lease_seconds`` after the last renewal, when the holder died) or at once when it is given up
(a clean shutdown). Lease expiry compares the clocks of the nodes: keep them within a small
fraction of ``lease_seconds`` (NTP does).

A lease can still lapse mid-round (a stalled process): the work itself is idempotent, so two
processes that both believe they lead do no harm. A rotation is recorded against its due date
and a second one for that date is refused by the store (see
:func:`hsmkms.service.rotation.rotate_automatic`); a sweep destroys token objects that may
already be gone and deletes a record that may already be deleted.

The clock is injectable (``clock``, and ``tick(now=...)``), and ``rotation_day_seconds``
shortens the schedule's days, so tests see a 90-day rotation period pass in a second.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from hsmkms.service import imports, keys, rotation
from hsmkms.service.core import now

if TYPE_CHECKING:
    from hsmkms.service import Service

log = logging.getLogger("hsmkms.scheduler")

LEASE = "scheduler"


@dataclass(frozen=True)
class Round:
    """What one round did: the keys rotated, the keys deleted, the imported materials that
    expired (deleted from the token)."""

    rotated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)


class Scheduler:
    """Runs rounds of the server's duties in a background thread, when it holds the lease."""

    def __init__(
        self,
        svc: Service,
        interval: float,
        *,
        lease_seconds: float | None = None,
        holder: str | None = None,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.svc = svc
        self.interval = interval
        # Long enough to outlive a few missed renewals, short enough for a quick takeover.
        self.lease_seconds = lease_seconds if lease_seconds is not None else max(3 * interval, 1.0)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self._held_until: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the lease -------------------------------------------------------------------------
    @property
    def leading(self) -> bool:
        """Whether this scheduler held the lease at its last look."""
        return self._held_until is not None and self.clock() < self._held_until

    def _acquire(self, at: datetime) -> bool:
        if self.svc.store.acquire_lease(LEASE, self.holder, at, self.lease_seconds):
            self._held_until = at + timedelta(seconds=self.lease_seconds)
            return True
        self._held_until = None
        return False

    def _still_leader(self, at: datetime | None = None) -> bool:
        """Renew the lease when half of it is spent; False once another holder has it."""
        t = at or self.clock()
        if self._held_until is None:
            return False
        if self._held_until - t > timedelta(seconds=self.lease_seconds / 2):
            return True
        return self._acquire(t)

    # -- one round -------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> Round | None:
        """One round at ``now`` (default: the clock), if this scheduler holds or takes the
        lease; None when another holds it."""
        at = now or self.clock()
        if not self._acquire(at):
            return None
        # An injected `now` stands for the whole round, lease renewals included.
        renew = (lambda: self._still_leader(at)) if now is not None else self._still_leader
        rotated = rotation.rotate_due(self.svc, at, self.holder, renew)
        deleted = keys.sweep(self.svc, at) if renew() else []
        expired = imports.sweep(self.svc, at) if renew() else []
        if renew():
            self.svc.masters.maintain(renew)  # e.g. rewraps of a domain-key rotation
        return Round(rotated, deleted, expired)

    # -- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        """Run a round now and then every ``interval`` seconds, until :meth:`stop`."""

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.tick()
                except Exception:  # keep going: the next round retries
                    log.exception("scheduler round failed")
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, name="hsmkms-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the round in progress, and give the lease up so another process takes
        over at once rather than after it expires."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._held_until is not None:
            try:
                self.svc.store.release_lease(LEASE, self.holder)
            except Exception:  # the lease expires by itself
                log.warning("could not release the scheduler lease", exc_info=True)
            self._held_until = None
