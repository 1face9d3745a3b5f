"""Raw python-pkcs11 calls on an open :class:`~hsmkms.hsm.token.PKCS11Token`, for the
benchmark (bench/) to time what the library itself costs: none of the token's call path (no
lock, no recovery, no error mapping). Never use it on the request path; it measures nothing.

SoftHSM2 re-reads a token object's file state on every use, so AES-GCM on a token object and
on its C_CopyObject session copy differ about 2x (see hsmkms/hsm/token.py); :func:`calls`
yields one or the other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.mechanisms import GCMParams

if TYPE_CHECKING:
    from hsmkms.hsm.token import PKCS11Token

TAG_BITS = 128


@dataclass(frozen=True)
class RawCalls:
    """One PKCS#11 call each, straight through python-pkcs11."""

    encrypt: Callable[[bytes], bytes]  # C_EncryptInit + C_Encrypt, AES-GCM: ct || tag
    decrypt: Callable[[bytes], bytes]  # C_DecryptInit + C_Decrypt, AES-GCM
    random: Callable[[int], bytes]  # C_GenerateRandom of n bytes


@contextlib.contextmanager
def calls(
    token: PKCS11Token, iv: bytes, aad: bytes, *, session_copy: bool = False
) -> Iterator[RawCalls]:
    """A fresh AES-256 token object made like a master key (sensitive, not extractable, not
    modifiable) and raw AES-GCM calls on it with ``iv`` and ``aad``, destroyed on exit.

    ``session_copy``: the calls run on a C_CopyObject session copy instead. SoftHSM2 refuses
    to copy a CKA_MODIFIABLE=false object with any attribute changed, so the token object is
    then modifiable: a twin of a master key, to show what copies would buy."""
    made: list[Any] = []
    param = GCMParams(iv, aad, TAG_BITS)

    def create() -> Any:
        template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}
        if not session_copy:
            template[Attribute.MODIFIABLE] = False
        key = token._session.generate_key(
            KeyType.AES, 256, store=True, label="hsmkms-raw", template=template
        )
        made.append(key)
        if session_copy:
            key = key.copy({Attribute.TOKEN: False})
            made.append(key)
        return key

    def destroy() -> None:
        for obj in reversed(made):
            with contextlib.suppress(Exception):
                obj.destroy()

    key = token._run("make a key for raw calls", create)
    session = token._session
    try:
        yield RawCalls(
            encrypt=lambda data: key.encrypt(
                data, mechanism=Mechanism.AES_GCM, mechanism_param=param
            ),
            decrypt=lambda data: key.decrypt(
                data, mechanism=Mechanism.AES_GCM, mechanism_param=param
            ),
            random=lambda n: session.generate_random(8 * n),  # python-pkcs11 counts bits
        )
    finally:
        token._run("destroy the key of raw calls", destroy)
