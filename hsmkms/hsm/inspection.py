"""Inspection for ``hsmkms doctor``: is a master key sealed (DESIGN decision 3), asked and tried.

The attributes say what the token claims (CKA_SENSITIVE, CKA_NEVER_EXTRACTABLE, ...); reading
CKA_VALUE and wrapping the key under itself test it. A sound key answers
CKR_ATTRIBUTE_SENSITIVE and CKR_KEY_UNEXTRACTABLE, which :func:`check` reports as
``value_readable=False, wrappable=False``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag

from hsmkms.hsm import errors
from hsmkms.hsm.contract import MasterKeyCheck
from hsmkms.hsm.session import destroy

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
    Attribute.SIGN: "sign",
    Attribute.DERIVE: "derive",
}

# What C_WrapKey of a sealed key answers, or of a token that wraps with neither mechanism.
_NOT_WRAPPED: tuple[type[Exception], ...] = (
    pkcs11.exceptions.KeyUnextractable,
    pkcs11.exceptions.KeyNotWrappable,
    *errors.REFUSED,
)


# The secret each kind of key holds: what a sealed key refuses to show.
_SECRET = {
    KeyType.AES: Attribute.VALUE,
    KeyType.GENERIC_SECRET: Attribute.VALUE,
    KeyType.RSA: Attribute.PRIVATE_EXPONENT,
    KeyType.EC: Attribute.VALUE,
    KeyType.EC_EDWARDS: Attribute.VALUE,
}
_KINDS = {
    KeyType.AES: "AES",
    KeyType.GENERIC_SECRET: "HMAC",
    KeyType.RSA: "RSA",
    KeyType.EC: "EC",
    KeyType.EC_EDWARDS: "EDWARDS",
}


def check(obj: Any) -> MasterKeyCheck:
    """Read a key material object's protection attributes and try to extract it: a master
    key, or a private or HMAC key of :mod:`hsmkms.hsm.keyobjects`."""
    key_type = obj[Attribute.KEY_TYPE]
    if key_type != KeyType.AES:
        return _check_other(obj, key_type)
    attrs = obj.get_attributes(list(_NAMES))
    values: dict[str, Any] = {_NAMES[a]: v for a, v in attrs.items()}
    value_readable = _readable(obj, Attribute.VALUE)
    wrappable = False
    for mechanism in (Mechanism.AES_KEY_WRAP_PAD, Mechanism.AES_KEY_WRAP):
        try:
            obj.wrap_key(obj, mechanism=mechanism)  # the key under itself: any wrap will do
            wrappable = True
        except _NOT_WRAPPED:
            continue
    return _result(values, value_readable, wrappable, "AES")


def _readable(obj: Any, attribute: Attribute) -> bool:
    try:
        obj[attribute]
        return True
    except (pkcs11.exceptions.AttributeSensitive, pkcs11.exceptions.AttributeTypeInvalid):
        return False


def _check_other(obj: Any, key_type: KeyType) -> MasterKeyCheck:
    """A private or HMAC key: its attributes one by one (the set differs by class), its
    secret read, and a wrap tried under a throwaway session key."""
    values: dict[str, Any] = {}
    for attribute, name in _NAMES.items():
        with contextlib.suppress(pkcs11.exceptions.AttributeTypeInvalid):
            values[name] = obj[attribute]
    if key_type == KeyType.RSA:
        values["value_len"] = len(obj[Attribute.MODULUS])
    elif key_type != KeyType.GENERIC_SECRET:
        values.pop("value_len", None)
    value_readable = _readable(obj, _SECRET.get(key_type, Attribute.VALUE))
    kek = obj.session.generate_key(
        KeyType.AES, 256, store=False, capabilities=MechanismFlag.WRAP,
        template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
    )  # fmt: skip
    wrappable = False
    try:
        kek.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        wrappable = True
    except _NOT_WRAPPED:
        pass
    finally:
        destroy(kek)
    return _result(values, value_readable, wrappable, _KINDS.get(key_type, str(key_type)))


def _result(
    values: dict[str, Any], value_readable: bool, wrappable: bool, kind: str
) -> MasterKeyCheck:
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
        kind=kind,
        sign=bool(values.get("sign")),
        derive=bool(values.get("derive")),
    )
