"""Keys that sign, decrypt, derive or MAC on the token (DESIGN decision 13).

A private key (RSA, EC, Ed25519) or an HMAC key is a token object like a master key: CKA_ID
is its 32-byte material id, CKA_LABEL names it, and it is sensitive, never extractable and not
modifiable, with exactly one usage (CKA_SIGN, CKA_DECRYPT or CKA_DERIVE; an HMAC key signs and
verifies). A pair's public key is a session object, read once for its SubjectPublicKeyInfo and
destroyed: the caller keeps the SPKI, and public-key operations run on the host.

Every private operation runs on the token: signatures (the caller hashes; the token signs the
digest: CKM_RSA_PKCS over a DigestInfo, CKM_RSA_PKCS_PSS, CKM_ECDSA; CKM_EDDSA over the
message), CKM_RSA_PKCS_OAEP, CKM_ECDH1_DERIVE, CKM_SHA*_HMAC. Where the token lacks OAEP with
a hash (SoftHSM2 2.6.1: everything but SHA-1), the token does the raw RSA decryption
(CKM_RSA_X_509) and OpenSSL decodes the padding in constant time (:mod:`hsmkms.hsm.oaep`).

EC and HMAC keys are made on the request session (milliseconds) and cached at once; an RSA key
(0.1 s at 2048 bits, 1.5 s at 4096 on SoftHSM2) is made on a side session, beside the request
path, and its first use finds it by the handle cache's search.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from pkcs11 import MGF, Attribute, KeyType, Mechanism
from pkcs11.constants import DEFAULT
from pkcs11.mechanisms import KDF

from hsmkms.hsm import IntegrityError, MechanismUnsupported, TokenError, der, errors, oaep
from hsmkms.hsm.handles import Miss, check_material_id
from hsmkms.hsm.session import destroy
from hsmkms.specs import HASH_BYTES, DataKeyPairSpec, Family, KeySpec

if TYPE_CHECKING:
    from hsmkms.hsm.calls import CallPath

# What a private key may do: one of these (CKA_SIGN, CKA_DECRYPT, CKA_DERIVE).
USES = ("sign", "decrypt", "derive")

_MECHANISMS = {
    "SHA1": (Mechanism.SHA_1, MGF.SHA1),
    "SHA224": (Mechanism.SHA224, MGF.SHA224),
    "SHA256": (Mechanism.SHA256, MGF.SHA256),
    "SHA384": (Mechanism.SHA384, MGF.SHA384),
    "SHA512": (Mechanism.SHA512, MGF.SHA512),
}
_HMAC = {
    "SHA224": Mechanism.SHA224_HMAC,
    "SHA256": Mechanism.SHA256_HMAC,
    "SHA384": Mechanism.SHA384_HMAC,
    "SHA512": Mechanism.SHA512_HMAC,
}
# DER of DigestInfo up to the digest (RFC 8017 section 9.2, note 1): EMSA-PKCS1-v1_5's T.
_DIGEST_INFO = {
    "SHA224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "SHA256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "SHA384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "SHA512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
# CKM_RSA_PKCS_OAEP's answers when the token does not do OAEP with a hash.
_NO_OAEP: tuple[type[Exception], ...] = (*errors.REFUSED, errors.px.ArgumentsBad)
_SEALED = {
    Attribute.TOKEN: True,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
}


def digest_info(hash_name: str, digest: bytes) -> bytes:
    """EMSA-PKCS1-v1_5's DigestInfo (RFC 8017 section 9.2) of ``digest``."""
    return _DIGEST_INFO[hash_name] + bytes(digest)


class KeyObjects:
    """The verbs of KMS-usable token keys, on a token's call path."""

    def __init__(self, calls: CallPath) -> None:
        self._calls = calls
        self._login = calls.login
        self._handles = calls.handles
        # Hashes the token's CKM_RSA_PKCS_OAEP refused: decoded on the host from then on.
        self._host_oaep: set[str] = set()

    # -- generation ---------------------------------------------------------------------------

    def create_private_key(
        self, material_id: bytes, label: str, spec: KeySpec | str, use: str
    ) -> bytes:
        """A token private key of ``spec`` (RSA_*, ECC_*) allowed only ``use``; its SPKI DER."""
        mid = check_material_id(material_id)
        kind = KeySpec(spec)
        if use not in USES:
            raise ValueError(f"a private key's use is one of {USES}")
        if kind.family not in (Family.RSA, Family.EC, Family.EDWARDS):
            raise MechanismUnsupported(f"no {kind} private keys on a PKCS#11 token")
        private = {**_SEALED, Attribute.ID: mid, Attribute.LABEL: label}
        private.update({_USE[u]: u == use for u in USES})

        def generate(session: Any) -> tuple[Any, Any]:
            return generate_pair(session, kind, private, store=True)

        if kind.family is Family.RSA:

            def side() -> bytes:
                with self._login.side_session() as session:
                    pub, _priv = generate(session)
                    try:
                        return _spki(kind, pub)
                    finally:
                        destroy(pub)

            # No retry after token loss: a second attempt could leave two keys under one id.
            return self._calls.run(
                f"create a {kind} key", side, side=True, recover=False, storing=True
            )

        def op() -> bytes:
            self._check_new(mid)
            pub, priv = generate(self._login.session)
            try:
                spki = _spki(kind, pub)
            except BaseException:
                destroy(priv)
                raise
            finally:
                destroy(pub)
            self._handles.put(mid, priv)
            return spki

        return self._calls.run(f"create a {kind} key", op, storing=True, recover=False)

    def create_secret_key(self, material_id: bytes, label: str, bits: int) -> None:
        """A token HMAC key (CKK_GENERIC_SECRET) of ``bits``, that only signs and verifies."""
        mid = check_material_id(material_id)

        def op() -> None:
            self._check_new(mid)
            obj = self._login.session.generate_key(
                KeyType.GENERIC_SECRET, bits, id=mid, label=label, store=True, capabilities=0,
                template={**_SEALED, Attribute.SIGN: True, Attribute.VERIFY: True},
            )  # fmt: skip
            self._handles.put(mid, obj)

        self._calls.run("create an HMAC key", op, storing=True, recover=False)

    def _check_new(self, mid: bytes) -> None:
        cache = self._handles
        if not cache.filled:
            raise Miss(None)
        if mid in cache.keys:
            raise TokenError(f"a key with material id {mid.hex()} already exists")

    # -- use ----------------------------------------------------------------------------------

    def sign(self, material_id: bytes, scheme: str, hash_name: str, data: bytes) -> bytes:
        """A signature by the private key. ``data`` is the digest for PKCS1, PSS and ECDSA
        (ECDSA answers DER, X9.62), the message for EDDSA (64 raw bytes, RFC 8032)."""
        mid = check_material_id(material_id)
        payload, mechanism, param = bytes(data), None, None
        if scheme == "PKCS1":
            payload, mechanism = digest_info(hash_name, payload), Mechanism.RSA_PKCS
        elif scheme == "PSS":
            mechanism = Mechanism.RSA_PKCS_PSS
            param = (*_MECHANISMS[hash_name], HASH_BYTES[hash_name])
        elif scheme == "ECDSA":
            mechanism = Mechanism.ECDSA
        elif scheme == "EDDSA":
            mechanism = Mechanism.EDDSA
        else:
            raise MechanismUnsupported(f"no {scheme} signatures on token {self._login.label!r}")

        def run(key: Any) -> bytes:
            signature = bytes(key.sign(payload, mechanism=mechanism, mechanism_param=param))
            if scheme != "ECDSA":
                return signature
            try:
                return der.ecdsa_signature(signature)
            except der.DerError as exc:
                raise TokenError(f"the token made a broken ECDSA signature: {exc}") from None

        return self._calls.run("sign", lambda: self._handles.with_master(mid, run))

    def decrypt(self, material_id: bytes, hash_name: str, ciphertext: bytes) -> bytes:
        """RSAES-OAEP decryption (MGF1 and the label hash both ``hash_name``, empty label);
        :class:`IntegrityError` for a ciphertext that does not decrypt, whatever the reason."""
        mid = check_material_id(material_id)
        data = bytes(ciphertext)
        digest, mgf = _MECHANISMS[hash_name]

        def on_token(key: Any) -> bytes | None:
            if hash_name in self._host_oaep:
                return None
            try:
                return bytes(
                    key.decrypt(data, mechanism=Mechanism.RSA_PKCS_OAEP,
                                mechanism_param=(digest, mgf, None))
                )  # fmt: skip
            except _NO_OAEP:
                if not self._calls.healthy():
                    raise
                self._host_oaep.add(hash_name)
                return None

        def run(key: Any) -> bytes:
            plain = on_token(key)
            if plain is not None:
                return plain
            modulus = int.from_bytes(key[Attribute.MODULUS], "big")
            if not oaep.supports(modulus):
                raise MechanismUnsupported(
                    f"token {self._login.label!r} has no RSA-OAEP with {hash_name}, and a "
                    f"{modulus.bit_length()}-bit modulus cannot be decoded on the host"
                )
            encoded = bytes(key.decrypt(data, mechanism=Mechanism.RSA_X_509))
            try:
                return oaep.decode(encoded, modulus.bit_length(), hash_name)
            except oaep.OaepError:
                raise IntegrityError("the ciphertext does not decrypt") from None

        return self._calls.run(
            "decrypt", lambda: self._handles.with_master(mid, run), integrity=errors.INTEGRITY
        )

    def derive(self, material_id: bytes, peer_point: bytes, length: int) -> bytes:
        """ECDH (CKM_ECDH1_DERIVE, no KDF) with an uncompressed peer point: the shared
        secret's x-coordinate, ``length`` bytes, read out of a short-lived session object."""
        mid = check_material_id(material_id)
        point = bytes(peer_point)

        def run(key: Any) -> bytes:
            secret = key.derive_key(
                KeyType.GENERIC_SECRET, 8 * length, mechanism=Mechanism.ECDH1_DERIVE,
                mechanism_param=(KDF.NULL, None, point), store=False, capabilities=0,
                template={Attribute.TOKEN: False, Attribute.SENSITIVE: False,
                          Attribute.EXTRACTABLE: True, Attribute.ENCRYPT: DEFAULT,
                          Attribute.DECRYPT: DEFAULT, Attribute.WRAP: DEFAULT,
                          Attribute.UNWRAP: DEFAULT, Attribute.SIGN: DEFAULT,
                          Attribute.VERIFY: DEFAULT, Attribute.DERIVE: DEFAULT},
            )  # fmt: skip
            try:
                return bytes(secret[Attribute.VALUE])
            finally:
                destroy(secret)

        return self._calls.run(
            "derive a shared secret",
            lambda: self._handles.with_master(mid, run),
            integrity=(errors.px.DomainParamsInvalid, errors.px.MechanismParamInvalid),
        )

    def mac(self, material_id: bytes, hash_name: str, message: bytes) -> bytes:
        """HMAC (RFC 2104) of ``message`` under the token key."""
        mid = check_material_id(material_id)
        data, mechanism = bytes(message), _HMAC[hash_name]
        return self._calls.run(
            "compute a MAC",
            lambda: self._handles.with_master(
                mid, lambda key: bytes(key.sign(data, mechanism=mechanism))
            ),
        )

    def verify_mac(self, material_id: bytes, hash_name: str, message: bytes, mac: bytes) -> bool:
        """Whether ``mac`` is the HMAC of ``message``: C_Verify on the token."""
        mid = check_material_id(material_id)
        data, tag, mechanism = bytes(message), bytes(mac), _HMAC[hash_name]

        def run(key: Any) -> bool:
            with contextlib.suppress(errors.px.SignatureInvalid, errors.px.SignatureLenRange):
                return bool(key.verify(data, tag, mechanism=mechanism))
            return False

        return self._calls.run("verify a MAC", lambda: self._handles.with_master(mid, run))


_USE = {"sign": Attribute.SIGN, "decrypt": Attribute.DECRYPT, "derive": Attribute.DERIVE}


def _spki(spec: KeySpec, public: Any) -> bytes:
    try:
        if spec.family is Family.RSA:
            attrs = public.get_attributes([Attribute.MODULUS, Attribute.PUBLIC_EXPONENT])
            return der.rsa_public_spki(attrs[Attribute.MODULUS], attrs[Attribute.PUBLIC_EXPONENT])
        if spec.family is Family.EDWARDS:
            return der.ed25519_public_spki(public[Attribute.EC_POINT])
        return der.ec_public_spki(DataKeyPairSpec(spec), public[Attribute.EC_POINT])
    except der.DerError as exc:
        raise TokenError(f"the token made a broken {spec} public key: {exc}") from None


def generate_pair(
    session: Any, kind: KeySpec, private: dict[Any, Any], *, store: bool
) -> tuple[Any, Any]:
    """A key pair of ``kind`` (RSA, EC, Ed25519) on ``session``: the private key as
    ``private`` says, the public key a session object that does nothing (its SPKI is read,
    then it is destroyed; public-key operations run on the host)."""
    public = {Attribute.TOKEN: False, Attribute.VERIFY: False, Attribute.ENCRYPT: False}
    public.update({Attribute.WRAP: False, Attribute.DERIVE: False})
    if kind.family is Family.RSA:
        return session.generate_keypair(  # type: ignore[no-any-return]
            KeyType.RSA, kind.bits, store=store, capabilities=0,
            public_template=public, private_template=private,
        )  # fmt: skip
    assert kind.curve is not None
    key_type = KeyType.EC_EDWARDS if kind.family is Family.EDWARDS else KeyType.EC
    params = session.create_domain_parameters(
        key_type, {Attribute.EC_PARAMS: kind.curve.oid_der}, local=True
    )
    return params.generate_keypair(  # type: ignore[no-any-return]
        store=store, capabilities=0, public_template=public, private_template=private
    )


spki_of = _spki  # the public key's SubjectPublicKeyInfo, for hsm/wrapping.py too

__all__ = ["USES", "KeyObjects", "digest_info", "generate_pair", "spki_of"]
