"""Keys kept off the token, wrapped under a domain key (the wrapped master-key mode).

A domain key is an AES-256 token object like a master key (its CKA_ID 32 random bytes, its
label ``hsmkms-domain:...``) that only wraps and unwraps: sensitive, never extractable, not
modifiable. Each key material of the wrapped mode is generated on the token as a *session*
object (sensitive; extractable only so that C_WrapKey can take it), wrapped under the domain
key with AES Key Wrap with Padding (RFC 5649; AES-GCM where the token wraps with it and not
with KWP), and destroyed: only the wrap leaves the token, and the caller stores it. For use it
is unwrapped (C_UnwrapKey) into a sensitive, never-extractable session object whose CKA_ID is
the material id, kept in the handle cache's bounded set of loaded keys: every verb of the
token (encrypt, sign, mac, ...) then finds it as it finds a token object, with no search.

Measured on SoftHSM2 2.6.1 (``/tmp`` trial, 50,000 AES keys): C_UnwrapKey 10.7k/s, a session
object ~12 KB of the process's memory, AES-GCM on a session object 28k/s picked at random.

Kinds: ``SYMMETRIC_DEFAULT`` (an AES-256 master key: encrypts, decrypts, wraps and unwraps
as a token master key does), ``HMAC_*`` (a generic secret that signs and verifies), ``RSA_*``
/ ``ECC_*`` (a private key allowed its one ``use``). A token that cannot unwrap a kind
(SoftHSM2 2.6.1: Ed25519) fails the first :meth:`Wrapping.load` of such a key: the wrapped
mode loads each new wrap once before it stores it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass
from pkcs11.constants import DEFAULT

from hsmkms.hsm import (
    IntegrityError,
    KeyNotFound,
    MasterKeyCheck,
    MechanismUnsupported,
    errors,
    inspection,
)
from hsmkms.hsm.capabilities import wrap_params
from hsmkms.hsm.contract import GCM, IV_BYTES, KWP, TAG_BYTES, Wrapped
from hsmkms.hsm.handles import Miss, check_material_id
from hsmkms.hsm.keyobjects import USES, generate_pair, spki_of
from hsmkms.hsm.session import destroy
from hsmkms.specs import Family, KeySpec

if TYPE_CHECKING:
    from hsmkms.hsm.calls import CallPath

_KWP_BLOCK = 8
_SECRET = {
    Attribute.TOKEN: False,
    Attribute.PRIVATE: True,
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.MODIFIABLE: False,
}
# A key generated to be wrapped: sensitive, extractable for the one C_WrapKey, no usage.
_TO_WRAP = {**_SECRET, Attribute.EXTRACTABLE: True}
_USE_ATTRIBUTE = {"sign": Attribute.SIGN, "decrypt": Attribute.DECRYPT, "derive": Attribute.DERIVE}


class Wrapping:
    """The wrapped mode's verbs of a token, on its call path (``token.wrapping``)."""

    def __init__(self, calls: CallPath) -> None:
        self._calls = calls
        self._login = calls.login
        self._handles = calls.handles
        self._capabilities = calls.capabilities
        # Domain key id -> (request session, its object there): see _domain.
        self._domains: dict[bytes, tuple[Any, Any]] = {}

    def _domain(self, domain_id: bytes) -> Any:
        """The domain key's object *on the request session* (under the lock). C_UnwrapKey
        makes its object on the unwrapping key's session, and a session object dies with its
        session: the handle cache's objects belong to its last search's session, which the
        next search closes (with every key loaded under them). The request session lasts as
        long as the login. One C_FindObjects per domain key and session (few objects on a
        wrapped home's token)."""
        session = self._login.session
        hit = self._domains.get(domain_id)
        if hit is not None and hit[0] is session:
            return hit[1]
        template = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.ID: domain_id}
        for obj in session.get_objects(template):
            self._domains[domain_id] = (session, obj)
            return obj
        raise KeyNotFound(f"no domain key {domain_id.hex()[:16]}... on {self._login.label!r}")

    @property
    def capacity(self) -> int:
        """How many unwrapped keys this process keeps (``loaded_keys``)."""
        return self._handles.loaded_capacity

    @capacity.setter
    def capacity(self, n: int) -> None:
        """Fewer pushes the least recently used out now (destroyed)."""
        self._handles.loaded_capacity = max(1, int(n))
        self._calls.run("destroy unwrapped keys", self._handles.trim)

    def loaded(self) -> int:
        return len(self._handles.loaded)

    # -- domain keys --------------------------------------------------------------------------

    def create_domain_key(self, domain_id: bytes, label: str) -> None:
        """A new AES-256 token object that wraps and unwraps only, never extractable."""
        did = check_material_id(domain_id)

        def op() -> None:
            obj = self._login.session.generate_key(
                KeyType.AES, 256, id=did, label=label, store=True,
                capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
                template={**_SECRET, Attribute.TOKEN: True},
            )  # fmt: skip
            self._handles.put(did, obj)

        self._calls.run("create a domain key", op, storing=True, recover=False)

    # -- wrapped keys ------------------------------------------------------------------------

    def generate(self, domain_id: bytes, spec: KeySpec | str, use: str | None) -> Wrapped:
        """A new key of ``spec`` wrapped under the domain key; the plaintext never leaves the
        token. The caller unwraps it once (:meth:`load`) before it trusts it."""
        did = check_material_id(domain_id)
        kind = KeySpec(spec)
        _check_use(kind, use)
        name = self._mechanism()
        login, handles = self._login, self._handles

        def wrap(obj: Any) -> bytes:
            iv = bytes(login.session.generate_random(8 * IV_BYTES)) if name == GCM else b""
            mechanism, param = wrap_params(name, iv)
            return iv + bytes(
                handles.with_master(
                    did, lambda dk: dk.wrap_key(obj, mechanism=mechanism, mechanism_param=param)
                )
            )

        if kind.family in (Family.RSA, Family.EC, Family.EDWARDS):

            def side() -> Wrapped:
                with login.lock:
                    handles.master(did)  # KeyNotFound now, not after the generation
                with login.side_session() as session:
                    public, private = generate_pair(session, kind, _TO_WRAP, store=False)
                    try:
                        spki = spki_of(kind, public)
                        with login.lock:  # the domain key's object lives on the main session
                            return Wrapped(name, wrap(private), spki)
                    finally:
                        destroy(public, private)

            return self._calls.run(f"generate a wrapped {kind} key", side, side=True)

        def op() -> Wrapped:
            obj = _generate_secret(login.session, kind)
            try:
                return Wrapped(name, wrap(obj))
            finally:
                destroy(obj)

        return self._calls.run(f"generate a wrapped {kind} key", op)

    def load(
        self, material_id: bytes, domain_id: bytes, wrapped: Wrapped, spec: KeySpec | str,
        use: str | None,
    ) -> None:  # fmt: skip
        """Unwrap into a sensitive, never-extractable session object with CKA_ID
        ``material_id``, kept among the loaded keys (the least recently used destroyed beyond
        the capacity). IntegrityError: the wrap does not open under the domain key."""
        mid, did = check_material_id(material_id), check_material_id(domain_id)
        kind = KeySpec(spec)
        _check_use(kind, use)
        self._check_wrap(wrapped)

        def op() -> None:
            template = {Attribute.ID: mid}
            try:
                obj = _unwrap(self._domain(did), wrapped, kind, use, template)
            except errors.HANDLE:  # destroyed by another process, or the session went
                self._domains.pop(did, None)
                obj = _unwrap(self._domain(did), wrapped, kind, use, template)
            self._handles.load(mid, obj)

        self._calls.run("unwrap a key", op, integrity=errors.UNWRAP_INTEGRITY)

    def unload(self, material_id: bytes) -> bool:
        """Destroy the loaded session object of ``material_id``; whether there was one."""
        mid = check_material_id(material_id)
        return self._calls.run("unload a key", lambda: self._handles.unload(mid))

    def is_loaded(self, material_id: bytes) -> bool:
        """Whether ``material_id`` is a loaded (unwrapped) session object: no call, no lock."""
        return bytes(material_id) in self._handles.loaded

    def rewrap(
        self, old_domain: bytes, new_domain: bytes, wrapped: Wrapped, spec: KeySpec | str,
        use: str | None,
    ) -> Wrapped:  # fmt: skip
        """The same key wrapped under ``new_domain`` instead (unwrapped into a transient,
        extractable but sensitive session object for the one C_WrapKey, then destroyed)."""
        old, new = check_material_id(old_domain), check_material_id(new_domain)
        kind = KeySpec(spec)
        self._check_wrap(wrapped)
        name = self._mechanism()

        def op() -> Wrapped:
            handles, session = self._handles, self._login.session
            handles.master(new)  # KeyNotFound before anything is unwrapped
            obj = handles.with_master(
                old,
                lambda dk: _unwrap(dk, wrapped, kind, use, {Attribute.EXTRACTABLE: True}),
            )
            try:
                iv = bytes(session.generate_random(8 * IV_BYTES)) if name == GCM else b""
                mechanism, param = wrap_params(name, iv)
                data = handles.with_master(
                    new, lambda dk: dk.wrap_key(obj, mechanism=mechanism, mechanism_param=param)
                )
            finally:
                destroy(obj)
            return Wrapped(name, iv + bytes(data), wrapped.public_key)

        return self._calls.run("rewrap a key", op, integrity=errors.UNWRAP_INTEGRITY)

    def check(
        self, domain_id: bytes, wrapped: Wrapped, spec: KeySpec | str, use: str | None
    ) -> MasterKeyCheck:
        """What the key a wrap holds says of itself once unwrapped (into a transient session
        object, destroyed after): for ``doctor``. IntegrityError: it does not open."""
        did = check_material_id(domain_id)
        kind = KeySpec(spec)
        self._check_wrap(wrapped)

        def op() -> MasterKeyCheck:
            obj = self._handles.with_master(did, lambda dk: _unwrap(dk, wrapped, kind, use, {}))
            try:
                return inspection.check(obj)
            finally:
                destroy(obj)

        return self._calls.run("check a wrapped key", op, integrity=errors.UNWRAP_INTEGRITY)

    def store(
        self, material_id: bytes, label: str, domain_id: bytes, wrapped: Wrapped,
        spec: KeySpec | str, use: str | None,
    ) -> bool:  # fmt: skip
        """Unwrap into a token object (sealed, as the token mode makes them) with CKA_ID
        ``material_id``: the move of a material back to the token mode. False: the token
        holds that id already (a resumed move), nothing was made."""
        mid, did = check_material_id(material_id), check_material_id(domain_id)
        kind = KeySpec(spec)
        self._check_wrap(wrapped)
        handles = self._handles

        def op() -> bool:
            if not handles.filled:
                raise Miss(None)
            if mid in handles.keys:
                return False
            template = {**_SECRET, Attribute.TOKEN: True, Attribute.ID: mid}
            template[Attribute.LABEL] = label
            obj = handles.with_master(did, lambda dk: _unwrap(dk, wrapped, kind, use, template))
            handles.put(mid, obj)
            return True

        return self._calls.run(
            "move a key onto the token", op, integrity=errors.UNWRAP_INTEGRITY, storing=True
        )

    # -- helpers -----------------------------------------------------------------------------

    @property
    def mechanism(self) -> str:
        """How this token wraps (``"AES_KEY_WRAP_PAD"``, else ``"AES_GCM"``);
        MechanismUnsupported when it can do neither: no wrapped mode on it."""
        return self._calls.run("read the wrap mechanisms", self._mechanism)

    def _mechanism(self) -> str:
        mechanisms = self._capabilities.unwrap_mechanisms
        if KWP in mechanisms:
            return KWP
        if GCM in mechanisms:
            return GCM
        raise MechanismUnsupported(
            f"token {self._login.label!r} wraps with neither CKM_AES_KEY_WRAP_PAD nor "
            "CKM_AES_GCM: it cannot keep key materials wrapped under a domain key"
        )

    def _check_wrap(self, wrapped: Wrapped) -> None:
        data = bytes(wrapped.data)
        if wrapped.mechanism not in (GCM, KWP):
            raise MechanismUnsupported(f"unknown wrapping mechanism {wrapped.mechanism!r}")
        if wrapped.mechanism not in self._capabilities.unwrap_mechanisms:
            label = self._login.label
            raise MechanismUnsupported(f"token {label!r} cannot unwrap with {wrapped.mechanism}")
        if wrapped.mechanism == KWP and (len(data) < 2 * _KWP_BLOCK or len(data) % _KWP_BLOCK):
            raise IntegrityError("an RFC 5649 wrapped key is a multiple of 8 bytes, at least 16")
        if wrapped.mechanism == GCM and len(data) < IV_BYTES + TAG_BYTES:
            raise IntegrityError("a GCM wrapped key is at least its IV and tag long")


def _check_use(kind: KeySpec, use: str | None) -> None:
    if kind.family in (Family.RSA, Family.EC, Family.EDWARDS):
        if use not in USES:
            raise ValueError(f"a private key's use is one of {USES}")
    elif kind.family not in (Family.AES, Family.HMAC):
        raise MechanismUnsupported(f"no wrapped {kind} keys on a PKCS#11 token")


def _generate_secret(session: Any, kind: KeySpec) -> Any:
    """A session secret key that exists to be wrapped (:data:`_TO_WRAP`)."""
    if kind.family is Family.HMAC:
        return session.generate_key(
            KeyType.GENERIC_SECRET, kind.bits, store=False, capabilities=0, template=_TO_WRAP
        )
    return session.generate_key(KeyType.AES, 256, store=False, capabilities=0, template=_TO_WRAP)


def _unwrap(
    domain: Any, wrapped: Wrapped, kind: KeySpec, use: str | None, extra: dict[Any, Any]
) -> Any:
    """C_UnwrapKey under ``domain``: a sensitive, never-extractable session object of the
    kind with its usage (``extra`` overrides the template: a token object, an extractable
    transient for a rewrap)."""
    data = bytes(wrapped.data)
    iv, blob = (data[:IV_BYTES], data[IV_BYTES:]) if wrapped.mechanism == GCM else (b"", data)
    mechanism, param = wrap_params(wrapped.mechanism, iv)
    template: dict[Any, Any] = dict(_SECRET)
    if kind.family in (Family.AES, Family.HMAC):
        aes = kind.family is Family.AES
        object_class, key_type = (
            ObjectClass.SECRET_KEY,
            (KeyType.AES if aes else KeyType.GENERIC_SECRET),
        )
        for attribute in (Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.WRAP, Attribute.UNWRAP):
            template[attribute] = aes
        template[Attribute.SIGN] = template[Attribute.VERIFY] = not aes
        template[Attribute.DERIVE] = False
    else:
        object_class = ObjectClass.PRIVATE_KEY
        key_type = {Family.RSA: KeyType.RSA, Family.EC: KeyType.EC}.get(
            kind.family, KeyType.EC_EDWARDS
        )
        for name, attribute in _USE_ATTRIBUTE.items():
            template[attribute] = name == use
        # python-pkcs11 puts every capability in an unwrap template; a private key has no
        # CKA_ENCRYPT/VERIFY/WRAP and SoftHSM2 refuses them.
        template.update(
            {Attribute.ENCRYPT: DEFAULT, Attribute.VERIFY: DEFAULT, Attribute.WRAP: DEFAULT}
        )
        template[Attribute.UNWRAP] = False  # SoftHSM2 would allow it: beyond the key's use
    template.update(extra)
    # CKA_ID and CKA_LABEL as python-pkcs11's id and label, which it puts first: SoftHSM2
    # applies a template in order and refuses them after CKA_MODIFIABLE false.
    return domain.unwrap_key(
        object_class, key_type, blob, id=template.pop(Attribute.ID, None),
        label=template.pop(Attribute.LABEL, None), mechanism=mechanism, mechanism_param=param,
        store=bool(template.get(Attribute.TOKEN)), capabilities=0, template=template,
    )  # fmt: skip


__all__ = ["Wrapped", "Wrapping"]
