"""Imported key material (BYOK): wrapping keys, and material unwrapped into the token.

A wrapping key is an RSA key pair made on the token: its private key is a token object
(sensitive, never extractable, not modifiable, allowed CKA_UNWRAP and CKA_DECRYPT only) whose
CKA_ID is 33 bytes, so that the material search (32-byte ids, :func:`handles.search`) never
counts it; its public key is read once as SubjectPublicKeyInfo and destroyed.

:meth:`Imports.import_key` unwraps the caller's material into the token, as AWS's wrapping
algorithms define it:

* ``RSAES_OAEP``: C_UnwrapKey with CKM_RSA_PKCS_OAEP under the wrapping key.
* ``RSA_AES_KEY_WRAP``: the first modulus-length bytes are an RSA-OAEP wrap of an ephemeral
  AES key, unwrapped into a session object; the rest is that key's AES Key Wrap with Padding
  (RFC 5649) of the material, unwrapped by C_UnwrapKey with CKM_AES_KEY_WRAP_PAD.

Where the token lacks CKM_RSA_PKCS_OAEP with the hash (SoftHSM2 2.6.1: everything but SHA-1),
the token decrypts raw (CKM_RSA_X_509) and OpenSSL decodes the OAEP padding in constant time
(:mod:`hsmkms.hsm.oaep`), and the result becomes a session object by C_CreateObject: the
ephemeral AES key (RSA_AES_KEY_WRAP_SHA_256: the material itself is still unwrapped on the
token) or, for RSAES_OAEP_SHA_256, the material, which then exists in this process's memory
for the length of the call. Python cannot wipe that copy (DESIGN decision 13, docs/import.md).

Each import unwraps twice: first into a short-lived session object that is checked (its
length, type, RSA size or curve), whose KeyMaterialId is computed on the token, and that is
destroyed; then, unless the token already holds a material with that id (a reimport of the
same material), into the token object that stays. The KeyMaterialId is deterministic in the
(KMS key, material) pair, so that reimporting the same material is recognised and different
material is not, without the material ever leaving the token:

* AES and HMAC: SP 800-108 in counter mode with the material's own PRF (AES-CMAC, or HMAC with
  the key's hash) over ``context``, two blocks, the first 32 bytes.
* RSA and EC: SHA-256 over ``context`` and the key's SubjectPublicKeyInfo (the public key is
  no secret). An EC private key object has no CKA_EC_POINT: the token gives the public x
  (ECDH with the generator), and a signature on the token tells which of the two points is it.

A session object's length comes from CKA_VALUE_LEN where the token fills it in; SoftHSM2
leaves it 0 for unwrapped keys, so the check object is made extractable (never the object
that stays) and wrapped under a throwaway session key: the wrap's length bounds the value's
to 8 bytes, and the mechanism itself refuses the rest (AES only takes 16, 24 or 32 bytes;
SoftHSM2's HMAC refuses keys shorter than its hash).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.constants import DEFAULT

from hsmkms.hsm import (
    ImportedKey,
    IntegrityError,
    KeyNotFound,
    MechanismUnsupported,
    WrongKeyMaterial,
    der,
    errors,
)
from hsmkms.hsm import material_checks as checks
from hsmkms.hsm import oaep as host_oaep
from hsmkms.hsm.handles import check_material_id
from hsmkms.hsm.session import destroy
from hsmkms.specs import Family, KeySpec

if TYPE_CHECKING:
    from hsmkms.hsm.calls import CallPath

WRAPPING_ID_BYTES = 33
RSAES_OAEP = "RSAES_OAEP"
RSA_AES_KEY_WRAP = "RSA_AES_KEY_WRAP"
SCHEMES = (RSAES_OAEP, RSA_AES_KEY_WRAP)

_OAEP = {"SHA1": (Mechanism.SHA_1, MGF.SHA1), "SHA256": (Mechanism.SHA256, MGF.SHA256)}
_HMAC = {
    224: (Mechanism.SHA224_HMAC, 64),
    256: (Mechanism.SHA256_HMAC, 64),
    384: (Mechanism.SHA384_HMAC, 128),
    512: (Mechanism.SHA512_HMAC, 128),
}
_NO_OAEP: tuple[type[Exception], ...] = (*errors.REFUSED, errors.px.ArgumentsBad)
# What C_UnwrapKey answers when the wrap opened but what it held is not a key of the type
# asked (SoftHSM2: a PKCS#8 of another algorithm, or not PKCS#8 at all).
_NOT_THE_KEY: tuple[type[Exception], ...] = (
    errors.px.FunctionFailed,
    errors.px.TemplateInconsistent,
    errors.px.AttributeValueInvalid,
    errors.px.KeyTypeInconsistent,
    errors.px.WrappedKeyInvalid,
)
# Attributes a private key object does not have: left out of python-pkcs11's template.
_NO_PUBLIC_USES = {Attribute.ENCRYPT: DEFAULT, Attribute.WRAP: DEFAULT, Attribute.VERIFY: DEFAULT}
_KEPT = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
}
_CHECKED = {Attribute.TOKEN: False, Attribute.SENSITIVE: True}
_X962 = (serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
_USES = {"sign": Attribute.SIGN, "decrypt": Attribute.DECRYPT, "derive": Attribute.DERIVE}


class Imports:
    """Wrapping keys and imports, on a token's call path (side sessions throughout: an import
    searches for its wrapping key and makes objects the request session never caches)."""

    def __init__(self, calls: CallPath) -> None:
        self._calls = calls
        self._login = calls.login
        self._host_oaep: set[str] = set()  # OAEP hashes this token's C_UnwrapKey refused
        self._mechanisms: frozenset[Mechanism] | None = None

    def _offers(self, mechanism: Mechanism) -> bool:
        if self._mechanisms is None:
            self._mechanisms = frozenset(self._login.ptoken.slot.get_mechanisms())
        return mechanism in self._mechanisms

    # -- wrapping keys ------------------------------------------------------------------------

    def create_wrapping_key(self, wrapping_id: bytes, label: str, bits: int) -> bytes:
        """An RSA key pair of ``bits`` whose private key (a token object with CKA_ID
        ``wrapping_id``) only unwraps and decrypts: its public key's SPKI DER."""
        wid = _check_wrapping_id(wrapping_id)
        private = {**_KEPT, Attribute.ID: wid, Attribute.LABEL: label, Attribute.UNWRAP: True}
        private.update({Attribute.DECRYPT: True, Attribute.SIGN: False, Attribute.DERIVE: False})
        public = {Attribute.TOKEN: False, Attribute.VERIFY: False, Attribute.ENCRYPT: True}
        public.update({Attribute.WRAP: True, Attribute.DERIVE: False})

        def op() -> bytes:
            with self._login.side_session() as session:
                pub, _priv = session.generate_keypair(
                    KeyType.RSA, bits, store=True, capabilities=0,
                    public_template=public, private_template=private,
                )  # fmt: skip
                try:
                    attrs = pub.get_attributes([Attribute.MODULUS, Attribute.PUBLIC_EXPONENT])
                    return der.rsa_public_spki(
                        attrs[Attribute.MODULUS], attrs[Attribute.PUBLIC_EXPONENT]
                    )
                finally:
                    destroy(pub)

        return self._calls.run(
            f"create an RSA-{bits} wrapping key", op, side=True, recover=False, storing=True
        )

    def destroy_wrapping_key(self, wrapping_id: bytes) -> None:
        """Destroy the wrapping key; :class:`KeyNotFound` if there is none."""
        wid = _check_wrapping_id(wrapping_id)

        def op() -> None:
            with self._login.side_session() as session:
                destroy(_wrapping_key(session, wid))

        self._calls.run("destroy a wrapping key", op, side=True)

    # -- importing ----------------------------------------------------------------------------

    def import_key(
        self,
        wrapping_id: bytes,
        scheme: str,
        hash_name: str,
        encrypted: bytes,
        spec: KeySpec | str,
        use: str | None,
        context: bytes,
        label: Callable[[bytes], str],
    ) -> ImportedKey:
        """Unwrap ``encrypted`` (``scheme`` with OAEP ``hash_name``) under the wrapping key into
        a token object of ``spec`` (allowed ``use`` alone, for a private key), named
        ``label(material_id)``. IntegrityError when the wrap does not open, WrongKeyMaterial
        when it holds no key of ``spec``, KeyNotFound when the wrapping key is gone."""
        wid = _check_wrapping_id(wrapping_id)
        kind = KeySpec(spec)
        if scheme not in SCHEMES or hash_name not in _OAEP:
            raise ValueError(f"no import scheme {scheme} with {hash_name}")
        if kind.family not in (Family.AES, Family.HMAC, Family.RSA, Family.EC):
            raise MechanismUnsupported(f"{kind} key material cannot be imported into this token")
        data = bytes(encrypted)

        def op() -> ImportedKey:
            with self._login.side_session() as session:
                source = _Source(self, session, _wrapping_key(session, wid), scheme, hash_name)
                try:
                    source.open(data)
                    checked = source.make(kind, _check_template(kind, use), kept=False)
                    try:
                        mid, spki = self._identify(session, kind, checked, context)
                    finally:
                        destroy(checked)
                    if _find(session, mid) is not None:
                        return ImportedKey(mid, spki, created=False)
                    # CKA_ID and CKA_LABEL ahead of the template: SoftHSM2 applies a
                    # template in order, and refuses them after CKA_MODIFIABLE false.
                    named = {Attribute.ID: mid, Attribute.LABEL: label(mid)}
                    source.make(kind, {**named, **_kept_template(kind, use)}, kept=True)
                    return ImportedKey(mid, spki, created=True)
                finally:
                    source.close()

        return self._calls.run(
            "import key material",
            op,
            side=True,
            recover=False,
            storing=True,
            integrity=errors.UNWRAP_INTEGRITY,
        )

    def _identify(
        self, session: Any, kind: KeySpec, obj: Any, context: bytes
    ) -> tuple[bytes, bytes | None]:
        """Check the session object ``obj`` against ``kind``; (material id, SPKI or None)."""
        if kind.family is Family.AES:
            wrong = WrongKeyMaterial("symmetric key material must be 256 bits (32 bytes)")
            if checks.length(session, obj) != 32:
                raise wrong
            if not self._offers(Mechanism.AES_CMAC):
                raise MechanismUnsupported("this token has no AES-CMAC to name imported keys")
            try:
                prf = checks.counter_kdf(
                    lambda m: obj.sign(m, mechanism=Mechanism.AES_CMAC), context
                )
            except errors.MECHANISM:
                raise wrong from None  # SoftHSM2: a 25-31 byte "AES key" (MechanismInvalid)
            return prf, None
        if kind.family is Family.HMAC:
            mechanism, block = _HMAC[kind.bits]
            n = checks.length(session, obj)
            if not kind.bits // 8 <= n <= block:
                raise WrongKeyMaterial(
                    f"{kind} key material must be {kind.bits // 8} to {block} bytes"
                )
            try:
                return checks.counter_kdf(lambda m: obj.sign(m, mechanism=mechanism), context), None
            except errors.px.KeySizeRange:
                raise WrongKeyMaterial(
                    f"{kind} key material must be {kind.bits // 8} to {block} bytes"
                ) from None
        spki = (
            checks.rsa_spki(kind, obj) if kind.family is Family.RSA else checks.ec_spki(kind, obj)
        )
        return hashlib.sha256(b"\x01" + context + spki).digest(), spki


class _Source:
    """Where an import's material comes from, for the two unwraps of one call: the RSA step
    done once (on the token, or on the host where the token lacks the OAEP hash), then
    :meth:`make` makes an object of the material each time it is asked."""

    def __init__(self, imports: Imports, session: Any, wrapping: Any, scheme: str, hash_name: str):
        self._imports, self._session, self._wrapping = imports, session, wrapping
        self._scheme, self._hash = scheme, hash_name
        self._ephemeral: Any = None  # RSA_AES_KEY_WRAP: the AES key, a session object
        self._payload = b""  # RSAES_OAEP on the token: the RSA ciphertext; else the KWP part
        self._plain: bytes | None = None  # RSAES_OAEP on the host: the decoded material

    def open(self, data: bytes) -> None:
        k = (int.from_bytes(self._wrapping[Attribute.MODULUS], "big").bit_length() + 7) // 8
        if self._scheme == RSAES_OAEP:
            if len(data) != k:
                raise IntegrityError("the wrapped key material is not one RSA ciphertext long")
            if self._on_token():
                self._payload = data
            else:
                self._plain = self._host_decode(data)
            return
        if len(data) <= k:
            raise IntegrityError("the wrapped key material has no AES key wrap after its RSA part")
        rsa_part, self._payload = data[:k], data[k:]
        aes = {**_CHECKED, Attribute.EXTRACTABLE: False, Attribute.UNWRAP: True}
        if self._on_token():
            self._ephemeral = self._rsa_unwrap(rsa_part, ObjectClass.SECRET_KEY, KeyType.AES, aes)
            if self._ephemeral is not None:
                return
        plain = self._host_decode(rsa_part)
        self._ephemeral = self._session.create_object(
            {**aes, Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
             Attribute.VALUE: plain, Attribute.ENCRYPT: False, Attribute.DECRYPT: False}
        )  # fmt: skip

    def _on_token(self) -> bool:
        return self._hash not in self._imports._host_oaep

    def _rsa_unwrap(self, data: bytes, cls: ObjectClass, key_type: KeyType, template: dict) -> Any:
        """C_UnwrapKey with OAEP; None (and the host from now on) when the token refuses it."""
        digest, mgf = _OAEP[self._hash]
        try:
            return self._wrapping.unwrap_key(
                cls, key_type, data, mechanism=Mechanism.RSA_PKCS_OAEP,
                mechanism_param=(digest, mgf, None), capabilities=0, **_named(template),
            )  # fmt: skip
        except _NO_OAEP:
            if not self._imports._calls.healthy():
                raise
            self._imports._host_oaep.add(self._hash)
            return None

    def _host_decode(self, data: bytes) -> bytes:
        modulus = int.from_bytes(self._wrapping[Attribute.MODULUS], "big")
        if not host_oaep.supports(modulus):
            raise MechanismUnsupported(
                f"this token has no RSA-OAEP with {self._hash}, and a {modulus.bit_length()}-bit "
                f"modulus cannot be decoded on the host"
            )
        encoded = bytes(self._wrapping.decrypt(data, mechanism=Mechanism.RSA_X_509))
        try:
            return host_oaep.decode(encoded, modulus.bit_length(), self._hash)
        except host_oaep.OaepError:
            raise IntegrityError("the wrapped key material does not decrypt") from None

    def make(self, kind: KeySpec, template: dict, *, kept: bool) -> Any:
        """An object of the material with ``template`` (a session object to check, or the
        token object that stays)."""
        cls, key_type = _TYPES[kind.family]
        try:
            if self._plain is not None:
                value = checks.ec_value(kind, self._plain) if kind.family is Family.EC else {
                    Attribute.VALUE: self._plain
                }  # fmt: skip
                given = {a: v for a, v in template.items() if v is not DEFAULT}
                return self._session.create_object(
                    {Attribute.CLASS: cls, Attribute.KEY_TYPE: key_type, **given, **value}
                )  # fmt: skip
            if self._ephemeral is None:
                obj = self._rsa_unwrap(self._payload, cls, key_type, template)
                if obj is not None:
                    return obj
                self._plain = self._host_decode(self._payload)  # the token refused the hash
                return self.make(kind, template, kept=kept)
            return self._ephemeral.unwrap_key(
                cls, key_type, self._payload, mechanism=Mechanism.AES_KEY_WRAP_PAD,
                capabilities=0, **_named(template),
            )  # fmt: skip
        except _NOT_THE_KEY as exc:
            if kept or not self._imports._calls.healthy():
                raise
            if isinstance(exc, errors.px.FunctionFailed) and self._ephemeral is None:
                raise  # an RSA unwrap: the wrap itself did not open (integrity)
            raise WrongKeyMaterial(f"the wrapped key material is not a {kind} key") from None

    def close(self) -> None:
        destroy(self._ephemeral)
        self._ephemeral, self._plain = None, None


_TYPES = {
    Family.AES: (ObjectClass.SECRET_KEY, KeyType.AES),
    Family.HMAC: (ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET),
    Family.RSA: (ObjectClass.PRIVATE_KEY, KeyType.RSA),
    Family.EC: (ObjectClass.PRIVATE_KEY, KeyType.EC),
}


def _check_template(kind: KeySpec, use: str | None) -> dict:
    """The short-lived object that is checked: it may compute the id (CMAC, HMAC, an ECDH and
    a signature), and be wrapped once to measure it; it never outlives the call."""
    if kind.family is Family.AES:
        return {**_CHECKED, Attribute.EXTRACTABLE: True, Attribute.SIGN: True}
    if kind.family is Family.HMAC:
        return {**_CHECKED, Attribute.EXTRACTABLE: True, Attribute.SIGN: True}
    uses = {Attribute.SIGN: kind.family is Family.EC, Attribute.DERIVE: kind.family is Family.EC}
    return {**_CHECKED, Attribute.EXTRACTABLE: False, **uses, **_NO_PUBLIC_USES}


def _kept_template(kind: KeySpec, use: str | None) -> dict:
    """The token object that stays: like a generated material of ``kind`` (DESIGN 3)."""
    if kind.family is Family.AES:
        uses = {Attribute.ENCRYPT: True, Attribute.DECRYPT: True, Attribute.WRAP: True}
        return {**_KEPT, **uses, Attribute.UNWRAP: True}
    if kind.family is Family.HMAC:
        return {**_KEPT, Attribute.SIGN: True, Attribute.VERIFY: True}
    if use not in _USES:
        raise ValueError(f"a private key's use is one of {tuple(_USES)}")
    template = {**_KEPT, **_NO_PUBLIC_USES, Attribute.UNWRAP: False}
    template.update({attr: name == use for name, attr in _USES.items()})
    return template


def _named(template: dict) -> dict[str, Any]:
    """python-pkcs11's unwrap_key arguments for ``template``: CKA_ID and CKA_LABEL as its
    ``id`` and ``label`` (which it puts first), the rest as the template."""
    rest = dict(template)
    return {
        "id": rest.pop(Attribute.ID, None),
        "label": rest.pop(Attribute.LABEL, None),
        "store": bool(rest.get(Attribute.TOKEN)),
        "template": rest,
    }


def _check_wrapping_id(wrapping_id: bytes) -> bytes:
    if not isinstance(wrapping_id, bytes | bytearray) or len(wrapping_id) != WRAPPING_ID_BYTES:
        raise ValueError(f"a wrapping key id is {WRAPPING_ID_BYTES} bytes")
    return bytes(wrapping_id)


def _wrapping_key(session: Any, wid: bytes) -> Any:
    for obj in session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.ID: wid}):
        return obj
    raise KeyNotFound("the wrapping key is not on the token")


def _find(session: Any, mid: bytes) -> Any:
    check_material_id(mid)
    for cls in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY):
        for obj in session.get_objects({Attribute.CLASS: cls, Attribute.ID: mid}):
            return obj
    return None


__all__ = ["RSAES_OAEP", "RSA_AES_KEY_WRAP", "WRAPPING_ID_BYTES", "ImportedKey", "Imports"]
