"""The login: one logged-in session per token and process, and the lock every use of it holds.

A PKCS#11 session is not for concurrent use, and python-pkcs11 binds every key object to one
session, so the request path runs on one session behind one lock per process (measured on
SoftHSM2 2.6.1 + python-pkcs11 0.10.1 with ``python -m bench.token_layer``: more threads add no
throughput, the GIL; scale with processes). Slow work opens a side session of its own.

The login belongs to the process (see native.py for why we log in ourselves rather than let
python-pkcs11): a second token of the same label shares it, and the last one to close logs
out. A refused PIN is remembered for good: a wrong PIN never becomes right by itself, and an
HSM locks after a few tries.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pkcs11

from hsmkms.hsm import LoginFailed, TokenError, errors, native
from hsmkms.hsm.errors import Lost
from hsmkms.hsm.library import Library

log = logging.getLogger("hsmkms.hsm")


class Login:
    """The session of one token label in this process: who logged in, on which generation."""

    def __init__(self, library: Library, label: str, pin: str) -> None:
        self.library = library
        self.label = label
        self._pin = pin
        # RLock: a side operation (key pair generation) re-enters it around the wrap.
        self.lock = threading.RLock()
        # Set once the token refuses the PIN: every later call fails at once, without C_Login.
        self.refused: str | None = None
        self.closed = False
        self.gen = -1  # the library generation the session belongs to
        self.ptoken: Any = None  # python-pkcs11 Token of our slot
        self.session: Any = None  # the logged-in session every request uses

    def current(self) -> bool:
        """Whether there is a session of the library's current generation (not void)."""
        return self.session is not None and self.gen == self.library.generation

    def check_open(self) -> None:
        """Refuse at once when closed, or when the PIN was refused before."""
        if self.closed:
            raise TokenError(f"token {self.label!r} was closed")
        if self.refused is not None:
            raise LoginFailed(self.refused)

    def connect(self) -> None:
        """Find the token, open a session and log in (or join the process's login).
        Holds :attr:`lock`; raises :class:`Lost` for what a re-initialisation may mend."""
        library = self.library
        try:
            ptoken = library.lib.get_token(token_label=self.label)
        except pkcs11.exceptions.NoSuchToken:
            raise Lost(f"no token labelled {self.label!r} in {library.path}") from None
        except pkcs11.exceptions.MultipleTokensReturned:
            raise TokenError(f"more than one token is labelled {self.label!r}") from None
        except errors.PKCS11Error as exc:
            raise Lost(f"cannot list the slots of {library.path} ({errors.name(exc)})") from None
        try:
            session = ptoken.open(rw=True)  # no PIN: we log in ourselves, see native.py
        except errors.PKCS11Error as exc:
            raise Lost(f"cannot open a session on {self.label!r} ({errors.name(exc)})") from None
        rv = library.cryptoki.login(session.handle, self._pin)
        refused = rv in native.PIN_ERRORS
        if rv == native.CKR_USER_ALREADY_LOGGED_IN:
            # The login is the process's: another token of this process made it.
            known = library.pins.get(self.label)
            refused = known is not None and not hmac.compare_digest(known, self._pin)
        elif rv != native.CKR_OK and not refused:
            with contextlib.suppress(errors.PKCS11Error):
                session.close()
            raise Lost(f"C_Login on {self.label!r} returned CK_RV 0x{rv:x}")
        if refused:
            with contextlib.suppress(errors.PKCS11Error):
                session.close()
            message = f"token {self.label!r} refused the PIN (CK_RV 0x{rv:x}); not retried"
            if rv in native.PIN_ERRORS:
                # Say so for good: a token re-initialised, or its PIN changed, while we ran
                # would otherwise see one more C_Login per request until it locks.
                self.refused = message + ": restart hsmkms with the right PIN"
                log.error("%s", self.refused)
            raise LoginFailed(message)
        library.pins[self.label] = self._pin
        self.ptoken, self.session, self.gen = ptoken, session, library.generation

    def logged_in(self) -> bool:
        """C_GetSessionInfo: cheap, touches no object."""
        rv, state = self.library.cryptoki.session_state(self.session.handle)
        return rv == native.CKR_OK and state in native.LOGGED_IN_STATES

    def drop(self) -> None:
        """Forget the session without calling the token (after C_Finalize it is void)."""
        self.session = None
        self.ptoken = None

    def close_session(self) -> None:
        with contextlib.suppress(errors.PKCS11Error):
            self.session.close()  # opened without a PIN: python-pkcs11 does not log out

    def end(self, *, logout: bool) -> None:
        """Close the session; with ``logout``, end the process's login first. Holds the lock."""
        if logout:
            self.library.cryptoki.logout(self.session.handle)
            self.library.pins.pop(self.label, None)
        self.close_session()

    @contextlib.contextmanager
    def side_session(self) -> Iterator[Any]:
        """A session of its own for slow work; closing it destroys what it made."""
        session = self.open_side_session()
        try:
            yield session
        finally:
            with contextlib.suppress(errors.PKCS11Error):
                session.close()  # opened without a PIN, so this does not log out

    def open_side_session(self) -> Any:
        with self.lock:
            ptoken = self.ptoken
        return ptoken.open(rw=True)  # rw: a cached key's session may destroy it


def destroy(*objs: Any) -> None:
    """Destroy session objects (None skipped), whatever the token answers."""
    for obj in objs:
        if obj is not None:
            with contextlib.suppress(errors.PKCS11Error):
                obj.destroy()
