"""Test support that needs the token's insides. Never use it outside tests.

A master key's value never leaves the token, so a test cannot compare the token's AES-GCM
with another implementation under the same key. :func:`known_key` puts a session key of a
value the test chose under a fresh material id, so the real :meth:`Token.encrypt` path runs on
it and its output can be compared byte for byte with ``cryptography``'s ``AESGCM``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from pkcs11 import Attribute, KeyType, ObjectClass

from hsmkms.hsm.token import MATERIAL_ID_BYTES, Token, _Master


@contextlib.contextmanager
def known_key(token: Token, value: bytes) -> Iterator[bytes]:
    """A session AES key holding ``value`` (16/24/32 bytes); yields its material id."""
    mid = os.urandom(MATERIAL_ID_BYTES)

    def create() -> None:
        obj = token._session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: bytes(value),
                Attribute.TOKEN: False,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
            }
        )
        token._keys[mid] = _Master(obj, want_copy=False)

    token._run("create a test key", create)
    try:
        yield mid
    finally:

        def destroy() -> None:
            entry = token._keys.pop(mid, None)
            if entry is not None:
                Token._destroy(entry.obj)

        token._run("destroy a test key", destroy)
