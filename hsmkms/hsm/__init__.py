"""The token layer: the only package of hsmkms that imports ``pkcs11`` or names a CK_* value.

``service/`` sees one object, :class:`Token` (from :func:`open_token`), with these verbs and
no sessions, handles or mechanisms:

    token.create_master_key(material_id: bytes, label: str) -> None  # TokenFull if no room
    token.destroy_master_key(material_id: bytes) -> None          # KeyNotFound if absent
    token.has_master_key(material_id: bytes) -> bool              # searches on a miss
    token.has_master(material_id: bytes) -> bool   # handle cached: a call on it searches nothing
    token.list_master_keys() -> list[tuple[bytes, str]]          # (CKA_ID, CKA_LABEL); searches
    token.encrypt(material_id, iv: bytes, plaintext: bytes, aad: bytes) -> bytes  # ct || tag16
    token.decrypt(material_id, iv, ciphertext_and_tag, aad) -> bytes    # IntegrityError
    token.random(n: int) -> bytes
    token.generate_key_pair(spec: str) -> tuple[bytes, bytes]    # (SPKI DER, PKCS#8 DER)
    token.generate_wrapped_key_pair(spec, material_id) -> tuple[bytes, WrappedKey]
    token.unwrap_private_key(material_id, wrapped: WrappedKey) -> bytes  # PKCS#8 DER
    token.keypair_specs -> frozenset[str]                        # specs the token can make
    token.status() -> TokenStatus
    token.close()

Added by the token layer (not needed on the request path):

    token.check_master_key(material_id) -> MasterKeyCheck        # for doctor: is it sealed?
    token.wrap_mechanism -> str | None                           # "AES_GCM" / "AES_KEY_WRAP_PAD"
    token.label -> str;  token.os_locking -> bool

Options of :func:`open_token`: ``reinit_interval`` (float seconds, default 1.0: the least time
between two library re-initialisations after token loss), ``os_locking`` (bool, default True:
initialise the library with CKF_OS_LOCKING_OK; False serialises every call in the process).

A call on a master key whose handle this process has not cached yet (a key another process
created) first searches the token: 1-2 s at 10,000 keys on SoftHSM2, on a session of its own,
while calls on cached keys go on. A caller that must not wait for that (an event loop) sets
:data:`NO_SEARCH`; such a call then raises :class:`WouldSearch` before doing anything.

``material_id`` is the 32-byte CKA_ID of a master key (its hex is AWS's KeyMaterialId).
``spec`` is a KMS DataKeyPairSpec string (``"RSA_2048"``, ``"ECC_NIST_P256"``, ...).
Every CKR_* that reaches this layer becomes one of the exceptions below.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hsmkms.hsm.token import Token


class TokenError(Exception):
    """Any token failure not named below (maps to KMSInternalException)."""


class TokenUnavailable(TokenError):
    """The token or its library cannot be reached now (maps to a 5xx KMS error)."""


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


class TokenFull(TokenError):
    """The token could not store a new object: its storage is full (SoftHSM2: its disk)."""


class LoginFailed(TokenError):
    """The PIN was refused (never retried: retrying a wrong PIN can lock an HSM)."""


@dataclass(frozen=True)
class WrappedKey:
    """A private key wrapped on the token under a master key.

    ``mechanism`` names how (``"AES_KEY_WRAP_PAD"`` or ``"AES_GCM"``); ``spec`` is the
    DataKeyPairSpec, needed to unwrap; ``data`` the wrapped bytes (for AES_GCM: iv || ct || tag).
    """

    mechanism: str
    spec: str
    data: bytes


@dataclass(frozen=True)
class MasterKeyCheck:
    """What the token says about one master key, and whether it let it out when asked.

    ``value_readable`` and ``wrappable`` are the results of actually trying (reading CKA_VALUE,
    C_WrapKey of the key under itself); a sealed key answers False to both.
    """

    label: str
    bits: int
    token: bool
    private: bool
    sensitive: bool
    always_sensitive: bool
    extractable: bool
    never_extractable: bool
    modifiable: bool
    encrypt: bool
    decrypt: bool
    wrap: bool
    unwrap: bool
    value_readable: bool
    wrappable: bool

    @property
    def sealed(self) -> bool:
        """Stored, secret, never extractable, unchangeable, and nothing came out."""
        return (
            self.token
            and self.private
            and self.sensitive
            and self.always_sensitive
            and not self.extractable
            and self.never_extractable
            and not self.modifiable
            and not self.value_readable
            and not self.wrappable
        )


@dataclass(frozen=True)
class TokenStatus:
    ok: bool
    label: str
    manufacturer: str = ""
    model: str = ""
    detail: str = ""


__all__ = [
    "IntegrityError",
    "KeyNotFound",
    "LoginFailed",
    "MasterKeyCheck",
    "MechanismUnsupported",
    "NO_SEARCH",
    "TokenError",
    "TokenFull",
    "TokenStatus",
    "TokenUnavailable",
    "WouldSearch",
    "WrappedKey",
    "open_token",
]


def open_token(module: str, label: str, pin: str, **options: object) -> Token:
    """Load ``module``, find the token by ``label``, log in once; return a :class:`Token`."""
    from hsmkms.hsm.token import Token

    return Token.open(module, label, pin, **options)
