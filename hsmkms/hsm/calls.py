"""The call path: every token call runs here, against a ready token, and leaves as our errors.

* Before a call: a logged-in session of the current library generation (connecting, logging in
  and, the first time, learning what the token can do).
* A CKR_* becomes one exception of :mod:`hsmkms.hsm`. An ambiguous one (SoftHSM2's
  CKR_GENERAL_ERROR is both "GCM tag mismatch" and "token directory gone") is settled by
  probing the token, so a tampered ciphertext is an :class:`~hsmkms.hsm.IntegrityError` only
  while the token is provably healthy.
* After token loss: C_Finalize + C_Initialize, login again, forget every handle, retry the call
  once (rate-limited by the library, library.py).
* A side operation (key pair generation, a listing) runs on a session of its own outside the
  request lock, where the library locks itself. Measured on SoftHSM2 2.6.1 + python-pkcs11
  0.10.1 with ``python -m bench.token_layer``: with one lock alone, AES-GCM calls waited up to 1.9 s
  behind an RSA-4096 generation; with OS locking they kept running (max 4 ms).
* Every call has a deadline (:mod:`hsmkms.hsm.deadline`): ``call_timeout``, or for slow work
  (side operations, RSA generation) ``slow_call_timeout``; past it the caller gets
  :class:`~hsmkms.hsm.TokenTimeout` and the hung call's thread is abandoned.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from hsmkms.hsm import (
    NO_SEARCH,
    IntegrityError,
    LoginFailed,
    MechanismUnsupported,
    TokenError,
    TokenFull,
    TokenTimeout,
    TokenUnavailable,
    WouldSearch,
    errors,
)
from hsmkms.hsm.deadline import INLINE_WAIT, Runner
from hsmkms.hsm.errors import Lost
from hsmkms.hsm.handles import HandleCache, Miss, Search

if TYPE_CHECKING:
    from hsmkms.hsm.capabilities import Capabilities
    from hsmkms.hsm.library import Library
    from hsmkms.hsm.session import Login

T = TypeVar("T")


class CallPath:
    """Runs calls for one token: readiness, classification, recovery, and the handle cache
    whose misses it resolves (:attr:`handles`)."""

    def __init__(
        self,
        library: Library,
        login: Login,
        capabilities: Capabilities,
        *,
        reinit_interval: float,
        search: Search,
        call_timeout: float = 0.0,
        slow_call_timeout: float = 0.0,
    ) -> None:
        self.library = library
        self.login = login
        self.capabilities = capabilities
        self.reinit_interval = reinit_interval
        self.handles = HandleCache(self, search)
        self.call_timeout = call_timeout  # 0: no deadline, calls run on the caller's thread
        self.slow_call_timeout = max(call_timeout, slow_call_timeout)
        self.runner = Runner(login.label)

    def run(
        self,
        what: str,
        op: Callable[[], T],
        *,
        integrity: tuple[type[Exception], ...] = (),
        side: bool = False,
        recover: bool = True,
        storing: bool = False,
        slow: bool = False,
    ) -> T:
        """Run ``op`` against a ready token, turn every CKR_* into our errors, and after token
        loss re-initialise and run it once more; all within the call's deadline (``slow``,
        and side operations: the longer one)."""
        library, label = self.library, self.login.label
        if library.pid != os.getpid():
            raise TokenError(
                f"token {label!r} was opened in process {library.pid}, and a PKCS#11 library "
                "does not survive fork(): open the token again in this process"
            )
        return self.bounded(
            what,
            lambda: self._run_here(what, op, integrity, side, recover, storing),
            slow=slow or side,
        )

    def bounded(self, what: str, fn: Callable[[], T], *, slow: bool = False) -> T:
        """``fn()`` within the deadline of a token call (see :mod:`hsmkms.hsm.deadline`)."""
        deadline = self.slow_call_timeout if slow else self.call_timeout
        if deadline <= 0 or Runner.on_worker():
            return fn()
        label, runner = self.login.label, self.runner
        late = runner.overdue()
        if late is not None:
            raise TokenTimeout(
                f"token {label!r} has not answered a call (to {late[0]}) for {late[1]:.1f} s, "
                "past its deadline; not waiting behind it"
            )
        wait = deadline
        inline = NO_SEARCH.get()
        if inline:
            if runner.busy_for() > INLINE_WAIT:
                raise WouldSearch(f"token {label!r} is slow to answer: not on the event loop")
            wait = min(deadline, INLINE_WAIT)
        try:
            return runner.call(fn, what, deadline, wait)
        except TimeoutError:
            if wait < deadline:
                raise WouldSearch(f"token {label!r} did not answer within {wait:g} s") from None
            raise TokenTimeout(
                f"token {label!r} did not answer within {deadline:g} s (trying to {what})"
            ) from None

    def _run_here(
        self,
        what: str,
        op: Callable[[], T],
        integrity: tuple[type[Exception], ...],
        side: bool,
        recover: bool,
        storing: bool,
    ) -> T:
        library, label = self.library, self.login.label
        detail = ""
        for attempt in (1, 2):
            generation = library.generation
            library.gate.enter()
            try:
                try:
                    try:
                        return self._attempt(op, side)
                    except Miss as miss:
                        self.handles.fill_for(miss.mid)  # outside the lock
                    try:
                        return self._attempt(op, side)
                    except Miss as miss:
                        raise self.handles.missing(miss.mid) from None
                except errors.PKCS11Error as exc:
                    with self.login.lock:
                        raise self.classify(exc, what, integrity, storing=storing) from None
            except Lost as lost:
                detail = lost.detail
            finally:
                library.gate.leave()
            if attempt == 2 or not recover:
                break
            self.recover(generation, detail)
        raise TokenUnavailable(f"token {label!r} is unavailable: {detail}")

    def _attempt(self, op: Callable[[], T], side: bool) -> T:
        with self.login.lock:
            self.ready()
            if not (side and self.library.os_locking):
                return op()
        return op()  # side operation: runs beside the request path

    def recover(self, generation: int, detail: str) -> None:
        """Re-initialise the library unless another thread did since ``generation``."""
        self.library.recover(generation, self.login.label, detail, self.reinit_interval)

    def ready(self) -> None:
        """Have a logged-in session of the current library generation. Holds the lock."""
        login = self.login
        login.check_open()
        if login.current():
            return
        self.forget()
        if not self.library.initialized:
            raise Lost(f"the PKCS#11 library {self.library.path} is not initialised")
        login.connect()
        try:
            self.capabilities.learn(login.session, login.ptoken.slot, self.healthy)
        except errors.PKCS11Error as exc:
            failure = self.classify(exc, "read what the token holds", ())
            login.close_session()
            self.forget()  # half-ready is not ready: the next call connects again
            raise failure from None

    def forget(self) -> None:
        """Drop the session and every cached handle, without calling the token:
        after C_Finalize they are void, and their numbers may already name other objects."""
        self.login.drop()
        self.handles.clear()

    def classify(
        self,
        exc: Exception,
        what: str,
        integrity: tuple[type[Exception], ...],
        *,
        storing: bool = False,
    ) -> Exception:
        """One CKR_* -> one of our exceptions (or Lost), probing the token where ambiguous."""
        code, label = errors.name(exc), self.login.label
        if isinstance(exc, errors.LOGIN):
            return LoginFailed(f"token {label!r} refused the login ({code})")
        if isinstance(exc, errors.LOSS):
            return Lost(f"{code} while trying to {what}")
        if isinstance(exc, errors.REFUSED):
            return MechanismUnsupported(f"token {label!r} cannot {what} ({code})")
        if not self.healthy():
            return Lost(f"{code} while trying to {what}, and the token does not answer")
        if isinstance(exc, integrity):
            return IntegrityError(f"could not {what}: the data does not authenticate ({code})")
        if isinstance(exc, errors.STORING if storing else errors.STORAGE):
            return TokenFull(f"token {label!r} has no room to {what} ({code})")
        if isinstance(exc, errors.MECHANISM):
            return MechanismUnsupported(f"token {label!r} cannot {what} ({code})")
        return TokenError(f"token {label!r} failed to {what} ({code})")

    def healthy(self) -> bool:
        """The probe that tells a bad input from a sick token: still logged in on our session
        (C_GetSessionInfo), and the token still readable (C_GetTokenInfo: SoftHSM2 answers
        CKR_GENERAL_ERROR once its directory is gone; C_GenerateRandom would still work)."""
        login = self.login
        if not login.current():
            return False
        try:
            if not login.logged_in():
                return False
            login.ptoken.slot.get_token()
        except errors.PKCS11Error:
            return False
        return True
