"""The token layer: the only package of hsmkms that imports ``pkcs11`` or names a CK_* value.

``service/`` sees one object, a :class:`Token` (the protocol in :mod:`hsmkms.hsm.contract`,
which lists every verb and property), opened by :func:`open_token`; no sessions, handles or
mechanisms. Every CKR_* that reaches this layer becomes one of the exceptions below.

Options of :func:`open_token`: ``reinit_interval`` (float seconds, default 1.0: the least time
between two library re-initialisations after token loss), ``os_locking`` (bool, default True:
initialise the library with CKF_OS_LOCKING_OK; False serialises every call in the process),
``preload`` (bool, default True: fill the handle cache now; else on the first miss),
``call_timeout`` (float seconds, default 5.0; 0: none) and ``slow_call_timeout`` (default 60.0:
key pair generation and other side work): a call past its deadline raises
:class:`TokenTimeout` (see :mod:`hsmkms.hsm.deadline`); ``init_args`` (str: the module's own
parameters, CK_C_INITIALIZE_ARGS.pReserved, such as NSS's ``configdir='sql:DIR'``).

A call on a master key whose handle this process has not cached yet (a key another process
created) first searches the token: 1-2 s at 10,000 keys on SoftHSM2, on a session of its own,
while calls on cached keys go on. A caller that must not wait for that (an event loop) sets
:data:`NO_SEARCH`; such a call then raises :class:`WouldSearch` before doing anything.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from hsmkms.hsm.contract import (
    ImportedKey,
    MasterKeyCheck,
    Token,
    TokenStatus,
    Wrapped,
    WrappedKey,
)

if TYPE_CHECKING:
    from hsmkms.hsm.token import PKCS11Token


class TokenError(Exception):
    """Any token failure not named below (maps to KMSInternalException)."""


class TokenUnavailable(TokenError):
    """The token or its library cannot be reached now (maps to a 5xx KMS error)."""


class TokenTimeout(TokenUnavailable):
    """A token call did not return within its deadline (or one before it is still hung):
    the caller gave up; the C call may still finish (maps to DependencyTimeoutException)."""


class KeyNotFound(TokenError):
    """No master key with that CKA_ID on the token."""


class WouldSearch(TokenError):
    """The call needs a search of the token (its key's handle is not cached) and the caller
    set :data:`NO_SEARCH`: nothing was done; call again where waiting is fine."""


# True while calls must not wait for a search of the token (see WouldSearch).
NO_SEARCH: ContextVar[bool] = ContextVar("hsmkms_no_token_search", default=False)


class IntegrityError(TokenError):
    """An authenticated decryption failed: wrong tag, AAD, IV or ciphertext."""


class MechanismUnsupported(TokenError):
    """The token does not offer a mechanism this call needs."""


class WrongKeyMaterial(TokenError):
    """Imported material unwrapped, but it is not a key of the kind asked (its length, type,
    RSA size or curve)."""


class TokenFull(TokenError):
    """The token could not store a new object: its storage is full (SoftHSM2: its disk)."""


class LoginFailed(TokenError):
    """The PIN was refused (never retried: retrying a wrong PIN can lock an HSM)."""


__all__ = [
    "ImportedKey",
    "IntegrityError",
    "KeyNotFound",
    "LoginFailed",
    "MasterKeyCheck",
    "MechanismUnsupported",
    "NO_SEARCH",
    "Token",
    "TokenError",
    "TokenFull",
    "TokenStatus",
    "TokenTimeout",
    "TokenUnavailable",
    "WouldSearch",
    "Wrapped",
    "WrappedKey",
    "WrongKeyMaterial",
    "open_token",
]


def open_token(module: str, label: str, pin: str, **options: object) -> PKCS11Token:
    """Load ``module``, find the token by ``label``, log in once; return a :class:`Token`
    (the PKCS#11 one, :class:`hsmkms.hsm.token.PKCS11Token`)."""
    from hsmkms.hsm.token import PKCS11Token

    return PKCS11Token.open(module, label, pin, **options)
