"""Data key pairs made on the token: generated as session objects, read out or wrapped under a
master key, rebuilt as standard DER by :mod:`hsmkms.hsm.der`, destroyed.

A pair is generated on a side session, outside the request lock where the library locks
itself (RSA-4096 takes seconds on SoftHSM2), and extractable always (to read or wrap it),
sensitive when it must leave only wrapped, and with no usage at all: it exists only to be
exported. It is wrapped with AES-GCM where the token wraps with it, else with AES Key Wrap with
Padding (RFC 5649), under the master key's object, which lives on the request session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.constants import DEFAULT

from hsmkms.hsm import IntegrityError, MechanismUnsupported, TokenError, der, errors
from hsmkms.hsm.capabilities import FAMILIES, wrap_params
from hsmkms.hsm.contract import GCM, IV_BYTES, KWP, TAG_BYTES, WrappedKey
from hsmkms.hsm.handles import check_material_id
from hsmkms.hsm.session import destroy
from hsmkms.specs import DataKeyPairSpec, Family

if TYPE_CHECKING:
    from hsmkms.hsm.calls import CallPath

KWP_BLOCK = 8  # RFC 5649: the output is a multiple of 64 bits, at least two blocks


class KeyPairs:
    """The three key pair verbs of a token, on its call path and capabilities."""

    def __init__(self, calls: CallPath) -> None:
        self._calls = calls
        self._login = calls.login
        self._capabilities = calls.capabilities
        self._handles = calls.handles

    def generate(self, spec: DataKeyPairSpec | str) -> tuple[bytes, bytes]:
        """(SubjectPublicKeyInfo DER, PKCS#8 DER, RFC 5958 v1) of a pair made by the token:
        non-sensitive session objects, read out, rebuilt, destroyed."""
        pair = self._spec(spec, for_generation=True)

        def op() -> tuple[bytes, bytes]:
            with self._login.side_session() as session:
                public, private = _generate(session, pair, sensitive=False)
                try:
                    return _read_pair(pair, public, private)
                finally:
                    destroy(public, private)

        return self._calls.run(f"generate a {pair} key pair", op, side=True)

    def generate_wrapped(
        self, spec: DataKeyPairSpec | str, material_id: bytes
    ) -> tuple[bytes, WrappedKey]:
        """(SubjectPublicKeyInfo DER, WrappedKey) of a pair whose private key, a sensitive,
        extractable session object, leaves the token only by C_WrapKey under the master key:
        its plaintext never enters this process."""
        pair = self._spec(spec, for_generation=True)
        mid = check_material_id(material_id)
        login, handles = self._login, self._handles

        def op() -> tuple[bytes, WrappedKey]:
            if self._capabilities.wrap_mechanism is None:
                raise MechanismUnsupported(
                    f"token {login.label!r} wraps with neither CKM_AES_GCM nor "
                    "CKM_AES_KEY_WRAP_PAD: it cannot export private keys under a master key"
                )
            with login.lock:
                handles.master(mid)  # KeyNotFound now, not after seconds of RSA generation
            with login.side_session() as session:
                public, private = _generate(session, pair, sensitive=True)
                try:
                    spki = _read_public(pair, public)
                    with login.lock:  # the master key's object lives on the main session
                        wrapped = handles.with_master(mid, lambda m: self._wrap(m, pair, private))
                    return spki, wrapped
                finally:
                    destroy(public, private)

        return self._calls.run(f"generate a wrapped {pair} key pair", op, side=True)

    def unwrap(self, material_id: bytes, wrapped: WrappedKey) -> bytes:
        """The private key of ``wrapped`` as standard PKCS#8 DER (RFC 5958 v1).

        Unwrapped into a short-lived, non-sensitive session object whose components are read
        and rebuilt (SoftHSM2's own PKCS#8 is zero-padded and lacks the EC public key), then
        destroyed. A blob that does not unwrap is an :class:`IntegrityError`.
        """
        mid = check_material_id(material_id)
        pair = self._spec(wrapped.spec, for_generation=False)
        label = self._login.label
        if wrapped.mechanism not in (GCM, KWP):
            raise MechanismUnsupported(f"unknown wrapping mechanism {wrapped.mechanism!r}")
        if wrapped.mechanism not in self._capabilities.unwrap_mechanisms:
            raise MechanismUnsupported(f"token {label!r} cannot unwrap with {wrapped.mechanism}")
        data = bytes(wrapped.data)
        if wrapped.mechanism == KWP and (len(data) < 2 * KWP_BLOCK or len(data) % KWP_BLOCK):
            raise IntegrityError("an RFC 5649 wrapped key is a multiple of 8 bytes, at least 16")
        if wrapped.mechanism == GCM and len(data) < IV_BYTES + TAG_BYTES:
            raise IntegrityError("a GCM wrapped key is at least its IV and tag long")

        def unwrap(key: Any) -> bytes:
            return _unwrap(key, pair, wrapped.mechanism, data)

        return self._calls.run(
            "unwrap a private key",
            lambda: self._handles.with_master(mid, unwrap),
            integrity=errors.UNWRAP_INTEGRITY,
        )

    def _spec(self, spec: DataKeyPairSpec | str, *, for_generation: bool) -> DataKeyPairSpec:
        """The spec a caller named (a member or its string), if a token makes its pairs."""
        try:
            pair = DataKeyPairSpec(spec)
        except ValueError:
            pair = None
        if pair is None or pair.family not in FAMILIES:
            raise MechanismUnsupported(f"no key pair spec {str(spec)!r} on a PKCS#11 token")
        if for_generation and pair not in self._capabilities.keypair_specs:
            label = self._login.label
            raise MechanismUnsupported(f"token {label!r} cannot generate {pair} key pairs")
        return pair

    def _wrap(self, master: Any, pair: DataKeyPairSpec, private: Any) -> WrappedKey:
        """C_WrapKey of ``private`` under ``master``. Holds the lock (the IV comes from the
        request session's RNG)."""
        name = self._capabilities.wrap_mechanism
        assert name is not None  # checked by the caller before generating
        iv = bytes(self._login.session.generate_random(8 * IV_BYTES)) if name == GCM else b""
        mechanism, param = wrap_params(name, iv)
        data = master.wrap_key(private, mechanism=mechanism, mechanism_param=param)
        return WrappedKey(mechanism=name, spec=pair, data=iv + bytes(data))


# -- on python-pkcs11 objects -------------------------------------------------------------------


def _generate(session: Any, pair: DataKeyPairSpec, *, sensitive: bool) -> tuple[Any, Any]:
    """A session key pair. Extractable always (to read or wrap it), sensitive when it must
    leave only wrapped, and with no usage at all: it exists only to be exported."""
    private_template = {
        Attribute.TOKEN: False,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: sensitive,
        Attribute.EXTRACTABLE: True,
    }
    public_template = {Attribute.TOKEN: False}
    if pair.family is Family.RSA:
        return session.generate_keypair(  # type: ignore[no-any-return]
            KeyType.RSA,
            pair.bits,
            store=False,
            capabilities=0,
            public_template=public_template,
            private_template=private_template,
        )
    assert pair.curve is not None
    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: pair.curve.oid_der}, local=True
    )
    return params.generate_keypair(  # type: ignore[no-any-return]
        store=False,
        capabilities=0,
        public_template=public_template,
        private_template=private_template,
    )


def _read_public(pair: DataKeyPairSpec, public: Any) -> bytes:
    try:
        if pair.family is Family.RSA:
            attrs = public.get_attributes([Attribute.MODULUS, Attribute.PUBLIC_EXPONENT])
            return der.rsa_public_spki(attrs[Attribute.MODULUS], attrs[Attribute.PUBLIC_EXPONENT])
        return der.ec_public_spki(pair, public[Attribute.EC_POINT])
    except der.DerError as exc:
        raise TokenError(f"the token made a broken {pair} public key: {exc}") from None


def _private_der(pair: DataKeyPairSpec, private: Any) -> tuple[bytes, bytes]:
    """(SPKI, PKCS#8) rebuilt from a non-sensitive private key object's components."""
    if pair.family is Family.RSA:
        a = private.get_attributes(
            [
                Attribute.MODULUS, Attribute.PUBLIC_EXPONENT, Attribute.PRIVATE_EXPONENT,
                Attribute.PRIME_1, Attribute.PRIME_2, Attribute.EXPONENT_1,
                Attribute.EXPONENT_2, Attribute.COEFFICIENT,
            ]
        )  # fmt: skip
        if int.from_bytes(a[Attribute.MODULUS], "big").bit_length() != pair.bits:
            raise der.DerError(f"the modulus is not {pair.bits} bits")
        return der.rsa_private_pkcs8(
            modulus=a[Attribute.MODULUS],
            public_exponent=a[Attribute.PUBLIC_EXPONENT],
            private_exponent=a[Attribute.PRIVATE_EXPONENT],
            prime_1=a[Attribute.PRIME_1],
            prime_2=a[Attribute.PRIME_2],
            exponent_1=a[Attribute.EXPONENT_1],
            exponent_2=a[Attribute.EXPONENT_2],
            coefficient=a[Attribute.COEFFICIENT],
        )
    assert pair.curve is not None
    a = private.get_attributes([Attribute.EC_PARAMS, Attribute.VALUE])
    if bytes(a[Attribute.EC_PARAMS]) != pair.curve.oid_der:
        raise der.DerError(f"the key is not on the curve of {pair}")
    return der.ec_private_pkcs8(pair, a[Attribute.VALUE])


def _read_pair(pair: DataKeyPairSpec, public: Any, private: Any) -> tuple[bytes, bytes]:
    try:
        spki, pkcs8 = _private_der(pair, private)
    except der.DerError as exc:
        raise TokenError(f"the token made a broken {pair} key: {exc}") from None
    if spki != _read_public(pair, public):
        raise TokenError(f"the token's {pair} public key does not match its private key")
    return spki, pkcs8


def _unwrap(master: Any, pair: DataKeyPairSpec, name: str, data: bytes) -> bytes:
    iv, blob = (data[:IV_BYTES], data[IV_BYTES:]) if name == GCM else (b"", data)
    mechanism, param = wrap_params(name, iv)
    obj = master.unwrap_key(
        ObjectClass.PRIVATE_KEY,
        KeyType.RSA if pair.family is Family.RSA else KeyType.EC,
        blob,
        mechanism=mechanism,
        mechanism_param=param,
        store=False,
        capabilities=0,
        template={
            Attribute.TOKEN: False,
            Attribute.PRIVATE: True,
            # Readable for the moment it takes to rebuild standard PKCS#8: the caller
            # asked for the plaintext key, and C_Decrypt cannot undo a key wrap.
            Attribute.SENSITIVE: False,
            Attribute.EXTRACTABLE: True,
            # python-pkcs11 puts every capability in an unwrap template; a private key
            # has no CKA_ENCRYPT/VERIFY/WRAP and SoftHSM2 refuses them.
            Attribute.ENCRYPT: DEFAULT,
            Attribute.VERIFY: DEFAULT,
            Attribute.WRAP: DEFAULT,
        },
    )
    try:
        _, pkcs8 = _private_der(pair, obj)
    except der.DerError as exc:
        raise IntegrityError(f"the wrapped key is not a valid {pair} key: {exc}") from None
    finally:
        destroy(obj)
    return pkcs8
