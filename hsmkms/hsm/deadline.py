"""Deadlines on token calls (DESIGN decision 16): a C call cannot be interrupted, so it runs on
a worker thread of this module and its caller waits for it at most so long.

A call past its deadline raises :class:`~hsmkms.hsm.TokenTimeout` in the caller, and the
worker thread is abandoned to the C call (it comes back, or not, when the HSM does: a
SIGSTOPped p11-kit server holds it until SIGCONT). What such a call holds (the request lock,
the library's gate) would make every later call wait as long, so while one call is overdue
every new call fails at once (:meth:`Runner.overdue`), and :data:`~hsmkms.hsm.NO_SEARCH`
callers (the event loop) never wait more than :data:`INLINE_WAIT`: a call still running then
raises :class:`~hsmkms.hsm.WouldSearch`, and the caller runs it again on a thread of its own.

Measured on SoftHSM2 2.6.1 (2 cores, ``python -m bench.token_layer``-like loop, 32-byte
AES-GCM): 19 us a call on the caller's thread, 31-33 us through a worker; the hop is what the
deadline costs. ``call_timeout=0`` turns it off (the caller's thread runs the call).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Seconds an event-loop caller waits before it gives the call to a thread instead.
INLINE_WAIT = 0.1
# Worker threads at most per token; the ones stuck in a hung call count, and new calls fail
# at once while one is overdue, so more would only pile up behind the same hung HSM.
MAX_WORKERS = 16

_on_worker = threading.local()


class Job(Generic[T]):
    __slots__ = ("fn", "ctx", "done", "value", "error", "started", "deadline", "what", "dropped")

    def __init__(self, fn: Callable[[], T], what: str, timeout: float) -> None:
        self.fn = fn
        self.ctx = contextvars.copy_context()
        self.done = threading.Lock()
        self.done.acquire()  # released by the worker when the call has returned
        self.value: Any = None
        self.error: BaseException | None = None
        self.started = 0.0
        self.deadline = timeout
        self.what = what
        self.dropped = False  # the caller gave up before a worker took it: never run it


class Runner:
    """The worker threads of one token; :meth:`call` runs a function there with a deadline."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: SimpleQueue[Job[Any]] = SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a job
        self._workers = 0
        self._running: dict[int, Job[Any]] = {}  # id -> job, calls inside the token now

    @staticmethod
    def on_worker() -> bool:
        """Whether this thread is a worker (a nested call then runs here, at once)."""
        return getattr(_on_worker, "yes", False)

    def overdue(self) -> tuple[str, float] | None:
        """(what, seconds) of a call in the token past its own deadline, if any."""
        now = time.monotonic()
        with self._lock:
            late = [j for j in self._running.values() if now - j.started > j.deadline]
        if not late:
            return None
        oldest = min(late, key=lambda j: j.started)
        return oldest.what, now - oldest.started

    def busy_for(self) -> float:
        """Seconds the longest call now in the token has run (0: none runs)."""
        now = time.monotonic()
        with self._lock:
            starts = [j.started for j in self._running.values()]
        return now - min(starts) if starts else 0.0

    def call(self, fn: Callable[[], T], what: str, timeout: float, wait: float) -> T:
        """``fn()`` on a worker; :class:`TimeoutError` when ``wait`` seconds passed first (the
        call goes on without its caller; ``timeout`` is its deadline for :meth:`overdue`)."""
        job: Job[T] = Job(fn, what, timeout)
        with self._lock:
            # A worker for every job waiting; idle ones block in the queue's get.
            spawn = self._idle <= self._queue.qsize() and self._workers < MAX_WORKERS
            if spawn:
                self._workers += 1
        if spawn:
            threading.Thread(
                target=self._work, name=f"hsmkms-token-{self._name}", daemon=True
            ).start()
        self._queue.put(job)
        if not job.done.acquire(timeout=wait):
            with self._lock:
                job.dropped = job.started == 0.0  # not taken yet: nobody runs it now
            raise TimeoutError(what)
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[no-any-return]

    def _work(self) -> None:
        _on_worker.yes = True
        while True:
            with self._lock:
                self._idle += 1
            job = self._queue.get()
            with self._lock:
                self._idle -= 1
                if job.dropped:
                    continue
                job.started = time.monotonic()
                self._running[id(job)] = job
            try:
                job.value = job.ctx.run(job.fn)
            except BaseException as exc:  # handed to the caller, who raises it
                job.error = exc
            finally:
                with self._lock:
                    del self._running[id(job)]
                job.done.release()
