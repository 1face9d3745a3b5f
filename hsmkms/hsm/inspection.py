"""Inspection for ``hsmkms doctor``: is a master key sealed (DESIGN decision 3), asked and tried.

The attributes say what the token claims (CKA_SENSITIVE, CKA_NEVER_EXTRACTABLE, ...); reading
CKA_VALUE and wrapping the key under itself test it. A sound key answers
CKR_ATTRIBUTE_SENSITIVE and CKR_KEY_UNEXTRACTABLE, which :func:`check` reports as
``value_readable=False, wrappable=False``.
"""

from __future__ import annotations

from typing import Any

import pkcs11
from pkcs11 import Attribute, Mechanism

from hsmkms.hsm import errors
from hsmkms.hsm.contract import MasterKeyCheck

_NAMES = {
    Attribute.LABEL: "label",
    Attribute.TOKEN: "token",
    Attribute.PRIVATE: "private",
    Attribute.SENSITIVE: "sensitive",
    Attribute.ALWAYS_SENSITIVE: "always_sensitive",
    Attribute.EXTRACTABLE: "extractable",
    Attribute.NEVER_EXTRACTABLE: "never_extractable",
    Attribute.MODIFIABLE: "modifiable",
    Attribute.ENCRYPT: "encrypt",
    Attribute.DECRYPT: "decrypt",
    Attribute.WRAP: "wrap",
    Attribute.UNWRAP: "unwrap",
    Attribute.VALUE_LEN: "value_len",
}

# What C_WrapKey of a sealed key answers, or of a token that wraps with neither mechanism.
_NOT_WRAPPED: tuple[type[Exception], ...] = (
    pkcs11.exceptions.KeyUnextractable,
    pkcs11.exceptions.KeyNotWrappable,
    *errors.REFUSED,
)


def check(obj: Any) -> MasterKeyCheck:
    """Read a master key object's protection attributes and try to extract it."""
    attrs = obj.get_attributes(list(_NAMES))
    values: dict[str, Any] = {_NAMES[a]: v for a, v in attrs.items()}
    try:
        obj[Attribute.VALUE]
        value_readable = True
    except (pkcs11.exceptions.AttributeSensitive, pkcs11.exceptions.AttributeTypeInvalid):
        value_readable = False
    wrappable = False
    for mechanism in (Mechanism.AES_KEY_WRAP_PAD, Mechanism.AES_KEY_WRAP):
        try:
            obj.wrap_key(obj, mechanism=mechanism)  # the key under itself: any wrap will do
            wrappable = True
        except _NOT_WRAPPED:
            continue
    return MasterKeyCheck(
        label=str(values.get("label", "")),
        bits=8 * int(values.get("value_len", 0)),
        token=bool(values.get("token")),
        private=bool(values.get("private")),
        sensitive=bool(values.get("sensitive")),
        always_sensitive=bool(values.get("always_sensitive")),
        extractable=bool(values.get("extractable")),
        never_extractable=bool(values.get("never_extractable")),
        modifiable=bool(values.get("modifiable")),
        encrypt=bool(values.get("encrypt")),
        decrypt=bool(values.get("decrypt")),
        wrap=bool(values.get("wrap")),
        unwrap=bool(values.get("unwrap")),
        value_readable=value_readable,
        wrappable=wrappable,
    )
