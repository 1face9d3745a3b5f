"""What an import checks of the material it unwrapped, on the token (hsm/imports.py): its
length, its RSA size or curve, its public key, and its KeyMaterialId (the derivations are
documented there)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.constants import DEFAULT
from pkcs11.mechanisms import KDF

from hsmkms.hsm import TokenError, WrongKeyMaterial, der, errors
from hsmkms.hsm.session import destroy
from hsmkms.specs import DataKeyPairSpec, KeySpec

_X962 = (serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def ec_value(kind: KeySpec, pkcs8: bytes) -> dict:
    """C_CreateObject's attributes of an EC private key decoded on the host (the host OAEP
    route: the material is in this process's memory already): the curve and the scalar."""
    assert kind.curve is not None
    try:
        private = serialization.load_der_private_key(pkcs8, password=None)
    except (ValueError, TypeError):
        raise WrongKeyMaterial(f"the wrapped key material is not a {kind} key") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != kind.curve.name:
        raise WrongKeyMaterial(f"the wrapped key material is not a {kind} key")
    size = (private.curve.key_size + 7) // 8
    scalar = private.private_numbers().private_value.to_bytes(size, "big")
    return {Attribute.EC_PARAMS: kind.curve.oid_der, Attribute.VALUE: scalar}


def counter_kdf(prf: Callable[[bytes], Any], context: bytes) -> bytes:
    """NIST SP 800-108 KDF in counter mode: PRF(1 || context) || PRF(2 || context), 32 bytes."""
    return (bytes(prf(b"\x01" + context)) + bytes(prf(b"\x02" + context)))[:32]


def length(session: Any, obj: Any) -> int:
    """The value's length in bytes: CKA_VALUE_LEN, or where the token leaves it 0, the upper
    end of what a wrap under a throwaway key says (RFC 5649: 8 bytes more, rounded up to 8)."""
    with _SuppressMissing():
        n = int(obj[Attribute.VALUE_LEN] or 0)
        if n > 0:
            return n
    probe = session.generate_key(
        KeyType.AES, 256, store=False, capabilities=0,
        template={Attribute.TOKEN: False, Attribute.SENSITIVE: True,
                  Attribute.EXTRACTABLE: False, Attribute.WRAP: True},
    )  # fmt: skip
    try:
        return len(probe.wrap_key(obj, mechanism=Mechanism.AES_KEY_WRAP_PAD)) - 8
    finally:
        destroy(probe)


class _SuppressMissing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        return kind is not None and issubclass(kind, errors.px.AttributeTypeInvalid)


def rsa_spki(kind: KeySpec, obj: Any) -> bytes:
    attrs = obj.get_attributes([Attribute.MODULUS, Attribute.PUBLIC_EXPONENT])
    bits = int.from_bytes(attrs[Attribute.MODULUS], "big").bit_length()
    if bits != kind.bits:
        raise WrongKeyMaterial(f"the RSA key material is {bits}-bit, not {kind.bits}-bit")
    return der.rsa_public_spki(attrs[Attribute.MODULUS], attrs[Attribute.PUBLIC_EXPONENT])


def ec_spki(kind: KeySpec, obj: Any) -> bytes:
    """The EC key's SPKI: x from ECDH with the generator (d*G), y chosen by a signature."""
    assert kind.curve is not None
    if bytes(obj[Attribute.EC_PARAMS]) != kind.curve.oid_der:
        raise WrongKeyMaterial(f"the EC key material is not on the curve of {kind}")
    pair_spec = DataKeyPairSpec(kind)
    curve = der.curve(pair_spec)
    size = (curve.key_size + 7) // 8
    point = ec.derive_private_key(1, curve).public_key().public_bytes(*_X962)
    secret = obj.derive_key(
        KeyType.GENERIC_SECRET, 8 * size, mechanism=Mechanism.ECDH1_DERIVE,
        mechanism_param=(KDF.NULL, None, point), store=False, capabilities=0,
        template={Attribute.TOKEN: False, Attribute.SENSITIVE: False,
                  Attribute.EXTRACTABLE: True, Attribute.ENCRYPT: DEFAULT,
                  Attribute.DECRYPT: DEFAULT, Attribute.WRAP: DEFAULT, Attribute.UNWRAP: DEFAULT,
                  Attribute.SIGN: DEFAULT, Attribute.VERIFY: DEFAULT, Attribute.DERIVE: DEFAULT},
    )  # fmt: skip
    try:
        x = bytes(secret[Attribute.VALUE])  # d*G's x: public, the public key's own x
    finally:
        destroy(secret)
    digest = hashlib.sha256(b"hsmkms: which point is the public key").digest()
    try:
        signature = der.ecdsa_signature(bytes(obj.sign(digest, mechanism=Mechanism.ECDSA)))
    except der.DerError as exc:
        raise TokenError(f"the token made a broken ECDSA signature: {exc}") from None
    for prefix in (b"\x02", b"\x03"):
        candidate = ec.EllipticCurvePublicKey.from_encoded_point(curve, prefix + x)
        try:
            candidate.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        except InvalidSignature:
            continue
        return candidate.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    raise TokenError("the token's EC key signs for neither point of its public x")
