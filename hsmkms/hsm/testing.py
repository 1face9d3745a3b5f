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

from hsmkms.hsm.contract import MATERIAL_ID_BYTES
from hsmkms.hsm.session import destroy
from hsmkms.hsm.token import PKCS11Token


@contextlib.contextmanager
def known_key(token: PKCS11Token, value: bytes) -> Iterator[bytes]:
    """A session AES key holding ``value`` (16/24/32 bytes); yields its material id."""
    mid = os.urandom(MATERIAL_ID_BYTES)
    login, cache = token._login, token._handles

    def create() -> None:
        obj = login.session.create_object(
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
        cache.keys[mid] = obj

    token._run("create a test key", create)
    try:
        yield mid
    finally:

        def remove() -> None:
            destroy(cache.keys.pop(mid, None))

        token._run("destroy a test key", remove)


def key_pair_objects(token: PKCS11Token) -> int:
    """How many public or private key objects the process sees: key pair calls leave none."""

    def count() -> int:
        return sum(
            1
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
            for _ in token._login.session.get_objects({Attribute.CLASS: cls})
        )

    return token._run("count key pair objects", count)
