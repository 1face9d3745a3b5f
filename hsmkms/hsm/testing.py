"""Test support that needs the token's insides. Never use it outside tests.

A master key's value never leaves the token, so a test cannot compare the token's AES-GCM
with another implementation under the same key. :func:`known_key` puts a session key of a
value the test chose under a fresh material id, so the real :meth:`Token.encrypt` path runs on
it and its output can be compared byte for byte with ``cryptography``'s ``AESGCM``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from pkcs11 import Attribute, KeyType, ObjectClass

from hsmkms.hsm.contract import MATERIAL_ID_BYTES
from hsmkms.hsm.session import destroy
from hsmkms.hsm.token import PKCS11Token, Token  # Token: the old name raw_gcm_rates uses


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


def raw_gcm_rates(token: Token, seconds: float = 2.0) -> dict[str, float]:
    """AES-GCM (32 bytes) ops/s straight on python-pkcs11: a token key and its session copy.

    Master keys cannot be copied (SoftHSM2 refuses C_CopyObject of a CKA_MODIFIABLE=false
    object with any change), so this measures a modifiable twin: what copies would buy.
    """
    from pkcs11 import Mechanism
    from pkcs11.mechanisms import GCMParams

    def measure() -> dict[str, float]:
        session = token._session
        twin = session.generate_key(
            KeyType.AES, 256, store=True, label="bench-twin",
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
        copy = twin.copy({Attribute.TOKEN: False})
        param = GCMParams(bytes(12), b"aad", 128)
        data = os.urandom(32)
        rates = {}
        try:
            for name, key in (("token object", twin), ("session copy", copy)):
                n, start = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - start) < seconds:
                    for _ in range(200):
                        key.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=param)
                    n += 200
                rates[name] = n / elapsed
        finally:
            Token._destroy(copy, twin)
        return rates

    return token._run("measure AES-GCM", measure)
