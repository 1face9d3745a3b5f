"""A shared/exclusive gate: many token calls at once, or one library re-initialisation alone.

C_Finalize while another thread is inside the library frees what that thread is using, so
re-initialisation must wait until no call is in flight, and must not starve behind a steady
stream of calls (writers go first).
"""

from __future__ import annotations

import threading


class Gate:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._exclusive = False
        self._waiting = 0

    def enter(self) -> None:
        """Enter shared. Never call twice in one thread: a waiting writer would deadlock it."""
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._inside += 1

    def leave(self) -> None:
        with self._cond:
            self._inside -= 1
            if not self._inside and self._waiting:  # only a writer waits for an empty gate
                self._cond.notify_all()

    def enter_exclusive(self) -> None:
        with self._cond:
            self._waiting += 1
            try:
                while self._exclusive or self._inside:
                    self._cond.wait()
            except BaseException:
                self._waiting -= 1
                self._cond.notify_all()  # readers held back for us may go on
                raise
            self._waiting -= 1
            self._exclusive = True

    def leave_exclusive(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()
