"""The token layer: the only package of hsmkms that imports ``pkcs11`` or names a CK_* value.

``service/`` sees one object, :class:`Token` (from :func:`open_token`), with these verbs and
no sessions, handles or mechanisms:

    token.create_master_key(material_id: bytes, label: str) -> None
    token.destroy_master_key(material_id: bytes) -> None          # KeyNotFound if absent
    token.has_master_key(material_id: bytes) -> bool
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

``material_id`` is the 32-byte CKA_ID of a master key (its hex is AWS's KeyMaterialId).
``spec`` is a KMS DataKeyPairSpec string (``"RSA_2048"``, ``"ECC_NIST_P256"``, ...).
Every CKR_* that reaches this layer becomes one of the exceptions below.
"""

from __future__ import annotations

from dataclasses import dataclass


class TokenError(Exception):
    """Any token failure not named below (maps to KMSInternalException)."""


class TokenUnavailable(TokenError):
    """The token or its library cannot be reached now (maps to a 5xx KMS error)."""


class KeyNotFound(TokenError):
    """No master key with that CKA_ID on the token."""


class IntegrityError(TokenError):
    """An authenticated decryption failed: wrong tag, AAD, IV or ciphertext."""


class MechanismUnsupported(TokenError):
    """The token does not offer a mechanism this call needs."""


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
    "MechanismUnsupported",
    "TokenError",
    "TokenStatus",
    "TokenUnavailable",
    "WrappedKey",
    "open_token",
]


def open_token(module: str, label: str, pin: str, **options: object):  # type: ignore[no-untyped-def]
    """Load ``module``, find the token by ``label``, log in once; return a :class:`Token`."""
    from hsmkms.hsm.token import Token

    return Token.open(module, label, pin, **options)
