"""The PKCS#11 token: :class:`PKCS11Token`, the :class:`~hsmkms.hsm.Token` that
:func:`~hsmkms.hsm.open_token` returns. It reads as the list of verbs; each concern it stands
on is a collaborator of its own, in a file of its own:

* :mod:`~hsmkms.hsm.library` — the one PKCS#11 library of the process, its C_Initialize with
  OS locking, its re-initialisation after token loss (the gate, the generation, the rate limit);
* :mod:`~hsmkms.hsm.session` — the login and the one request session with its lock;
* :mod:`~hsmkms.hsm.calls` — the call path: readiness, CKR_* classification with the probe that
  tells a bad GCM tag from a dead token, recovery and one retry;
* :mod:`~hsmkms.hsm.handles` — master-key handles by CKA_ID, and the single-flight search;
* :mod:`~hsmkms.hsm.capabilities` — which pair specs and wrap mechanisms the token has, by trial;
* :mod:`~hsmkms.hsm.pairs` — key pair generation, wrapping and unwrapping;
* :mod:`~hsmkms.hsm.inspection` — what ``doctor`` asks of a master key.

AES-GCM runs on the token objects themselves, not on C_CopyObject session copies (measured on
SoftHSM2 2.6.1 + python-pkcs11 0.10.1 with ``python -m bench.token_layer``): a copy is 2x faster on
SoftHSM2 (67k vs 31k ops/s, 32 bytes), which re-reads a token object's file state on every
use; but SoftHSM2 refuses to copy a CKA_MODIFIABLE=false object with any attribute changed
(CKR_ATTRIBUTE_READ_ONLY, so the copy could only be another token object), and a copy would
keep working after another process destroyed the key.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag
from pkcs11.mechanisms import GCMParams

from hsmkms.hsm import (
    ImportedKey,
    IntegrityError,
    KeyNotFound,
    MasterKeyCheck,
    MechanismUnsupported,
    TokenError,
    TokenStatus,
    WrappedKey,
    contract,
    errors,
    gcm_ecb,
    handles,
    inspection,
)
from hsmkms.hsm.calls import CallPath
from hsmkms.hsm.capabilities import Capabilities, mechanisms
from hsmkms.hsm.contract import IV_BYTES, MATERIAL_ID_BYTES, TAG_BYTES
from hsmkms.hsm.errors import Lost
from hsmkms.hsm.handles import Miss, check_material_id
from hsmkms.hsm.imports import Imports
from hsmkms.hsm.keyobjects import KeyObjects
from hsmkms.hsm.library import Library
from hsmkms.hsm.pairs import KeyPairs
from hsmkms.hsm.session import Login, destroy
from hsmkms.hsm.wrapping import Wrapping
from hsmkms.specs import DataKeyPairSpec, KeySpec

log = logging.getLogger("hsmkms.hsm")

__all__ = ["MATERIAL_ID_BYTES", "Options", "PKCS11Token"]


@dataclass(frozen=True)
class Options:
    """The options of :func:`~hsmkms.hsm.open_token`."""

    reinit_interval: float = 1.0
    os_locking: bool = True
    # Fill the handle cache when opening. Off for a process that only checks the token
    # (the parent of several server workers): at 10,000 keys the search takes 1-2 s.
    preload: bool = True
    call_timeout: float = 5.0  # seconds a call may take (0: no deadline; deadline.py)
    slow_call_timeout: float = 60.0  # for key pair generation and other side work
    init_args: str | None = None  # CK_C_INITIALIZE_ARGS.pReserved: the module's parameters
    mechanisms_off: str = ""  # CKM_ names not to use though offered (capabilities.py)
    loaded_keys: int = 20_000  # unwrapped keys of the wrapped mode kept (hsm/wrapping.py)

    @classmethod
    def parse(cls, options: dict[str, object]) -> Options:
        numbers = ("reinit_interval", "call_timeout", "slow_call_timeout")
        texts = ("init_args", "mechanisms_off")
        unknown = set(options) - {*numbers, *texts, "os_locking", "preload", "loaded_keys"}
        if unknown:
            raise TypeError(f"unknown token option(s): {', '.join(sorted(unknown))}")
        seconds = {name: options.get(name, getattr(cls, name)) for name in numbers}
        for name, value in seconds.items():
            if not isinstance(value, int | float) or value < 0:
                raise TypeError(f"{name} must be a number of seconds >= 0")
        init_args = options.get("init_args")
        return cls(
            **{name: float(value) for name, value in seconds.items()},  # type: ignore[arg-type]
            os_locking=bool(options.get("os_locking", cls.os_locking)),
            preload=bool(options.get("preload", cls.preload)),
            init_args=None if init_args is None else str(init_args),
            mechanisms_off=str(options.get("mechanisms_off") or ""),
            loaded_keys=int(options.get("loaded_keys", cls.loaded_keys)),  # type: ignore[call-overload]
        )


class PKCS11Token:
    """A logged-in PKCS#11 token. Thread-safe; one per process is enough (see the modules)."""

    def __init__(self, library: Library, label: str, pin: str, options: Options) -> None:
        self._library = library
        self._login = Login(library, label, pin)
        self._capabilities = Capabilities(mechanisms(options.mechanisms_off))
        self._calls = CallPath(
            library,
            self._login,
            self._capabilities,
            reinit_interval=options.reinit_interval,
            search=self._search,
            call_timeout=options.call_timeout,
            slow_call_timeout=options.slow_call_timeout,
        )
        self._handles = self._calls.handles
        self._handles.loaded_capacity = max(1, options.loaded_keys)
        self.wrapping = Wrapping(self._calls)  # the wrapped mode's verbs
        self._pairs = KeyPairs(self._calls)
        self._objects = KeyObjects(self._calls)
        self._imports = Imports(self._calls)
        self._run = self._calls.run  # every verb's way to the token

    # -- opening and closing -----------------------------------------------------------------

    @classmethod
    def open(cls, module: str, label: str, pin: str, **options: object) -> Self:
        """Load ``module``, find the token labelled ``label``, log in once with ``pin``.

        Options: see :mod:`hsmkms.hsm` (reinit_interval, os_locking, preload, call_timeout,
        slow_call_timeout, init_args).
        """
        opts = Options.parse(dict(options))
        library = Library.get(module, opts.os_locking, opts.init_args)
        token = cls(library, label, pin, opts)
        # No recovery on a fresh library: a token missing now is a configuration error to
        # report. A library other tokens of this process use may just be recovering.
        in_use = library.in_use()
        token._run("open the token", lambda: None, recover=in_use)
        library.acquire(label)
        if opts.preload:
            try:
                token._run("read the master keys", token._handles.need_filled, recover=in_use)
            except BaseException:
                token.close()
                raise
        log.info(
            "token %r open (%s), %d master keys, wrap %s, os locking %s",
            label, library.path, len(token._handles.keys), token.wrap_mechanism,
            library.os_locking,
        )  # fmt: skip
        return token

    def close(self) -> None:
        """Forget the handles; the last token of a label logs the process out."""
        library, login = self._library, self._login
        if library.pid != os.getpid():
            login.closed = True  # the parent's session: not ours to log out or close
            self._calls.forget()
            return
        library.gate.enter()
        try:
            with login.lock:
                if login.closed:
                    return
                login.closed = True
                left = library.release(login.label)
                if login.current():
                    self._handles.close_search_session()
                    login.end(logout=left <= 0)
                self._calls.forget()
        finally:
            library.gate.leave()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def label(self) -> str:
        return self._login.label

    @property
    def keypair_specs(self) -> frozenset[DataKeyPairSpec]:
        """The DataKeyPairSpecs this token can generate (decided from its mechanisms at open)."""
        return self._capabilities.keypair_specs

    @property
    def wrap_mechanism(self) -> str | None:
        """``"AES_GCM"`` or ``"AES_KEY_WRAP_PAD"``: what C_WrapKey uses here; None if neither."""
        return self._capabilities.wrap_mechanism

    @property
    def os_locking(self) -> bool:
        """Whether the library guards itself (CKF_OS_LOCKING_OK) so key pairs generate aside."""
        return self._library.os_locking

    # -- master keys ------------------------------------------------------------------------

    def create_master_key(self, material_id: bytes, label: str) -> None:
        """A new AES-256 token object with CKA_ID = ``material_id`` that never leaves the token."""
        mid = check_material_id(material_id)
        cache = self._handles

        def op() -> None:
            # The cache holds every key of this token (filled at open, kept by this process),
            # so this check costs no C_FindObjects; ids are random, so other processes cannot
            # collide in practice.
            if not cache.filled:
                raise Miss(None)  # opened without preload, or re-initialised: fill it once
            existing = cache.keys.get(mid)
            if existing is not None:
                if existing[Attribute.LABEL] == label:
                    return  # made by our first attempt before the token went: done
                raise TokenError(f"a master key with material id {mid.hex()} already exists")
            obj = self._login.session.generate_key(
                KeyType.AES,
                256,
                id=mid,
                label=label,
                store=True,
                capabilities=(
                    MechanismFlag.ENCRYPT
                    | MechanismFlag.DECRYPT
                    | MechanismFlag.WRAP
                    | MechanismFlag.UNWRAP
                ),
                template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.MODIFIABLE: False,
                },
            )
            cache.put(mid, obj)

        self._run("create a master key", op, storing=True)

    def destroy_master_key(self, material_id: bytes) -> None:
        """Destroy the token object; :class:`KeyNotFound` if there is none."""
        mid = check_material_id(material_id)

        def destroy_one(obj: Any) -> None:
            obj.destroy()

        def op() -> None:
            self._handles.with_master(mid, destroy_one)
            self._handles.drop(mid)

        self._run("destroy a master key", op)

    def has_master_key(self, material_id: bytes) -> bool:
        mid = check_material_id(material_id)
        cache = self._handles

        def op() -> bool:
            obj = cache.keys.get(mid)
            if obj is not None:
                try:
                    obj[Attribute.CLASS]  # cheap: is the handle still an object?
                    return True
                except errors.HANDLE:
                    cache.drop(mid)
            cache.master(mid)  # a miss searches, then this runs again
            return True

        try:
            return self._run("look up a master key", op)
        except KeyNotFound:
            return False

    def has_master(self, material_id: bytes) -> bool:
        """Whether the master key's handle is cached: a call on it then makes no search.

        No token call and no lock, for a caller that must decide quickly whether it may run
        a call where it cannot wait. False does not mean the key is missing (that is
        :meth:`has_master_key`, which searches)."""
        return self._handles.cached(bytes(material_id))

    def list_master_keys(self) -> list[tuple[bytes, str]]:
        """(CKA_ID, CKA_LABEL) of every AES master key on the token. Searches (on a session of
        its own, not holding up other calls): not for requests."""

        def op() -> list[tuple[bytes, str]]:
            with self._login.side_session() as session:
                found = self._search(session, labels=True)
            return sorted((mid, label) for mid, label, _ in found)

        return self._run("list master keys", op, side=True)

    def check_master_key(self, material_id: bytes) -> MasterKeyCheck:
        """Read a master key's protection attributes and try to extract it (CKA_VALUE, C_WrapKey).

        For ``doctor`` and the tests: a sound key answers AttributeSensitive and
        KeyUnextractable, which this reports as ``value_readable=False, wrappable=False``.
        """
        mid = check_material_id(material_id)
        return self._run(
            "check a master key", lambda: self._handles.with_master(mid, inspection.check)
        )

    def _search(self, session: Any, *, labels: bool) -> list[tuple[bytes, str, Any]]:
        """Every master key on ``session`` by one C_FindObjects (:func:`handles.search`):
        the cache's fills and the listings both come here, where tests spy on them."""
        return handles.search(session, labels=labels)

    # -- AES-GCM and random -----------------------------------------------------------------

    def encrypt(self, material_id: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM (NIST SP 800-38D) with a 96-bit IV and a 128-bit tag: ciphertext || tag.

        Byte-identical to ``cryptography``'s ``AESGCM(key).encrypt(iv, plaintext, aad)``.
        """
        mid = check_material_id(material_id)
        param = self._gcm(iv, aad)
        data = bytes(plaintext)

        def encrypt(key: Any) -> bytes:
            if self._gcm_mode() == "ECB":
                return gcm_ecb.encrypt(_ecb(key), iv, data, aad)
            return bytes(key.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=param))

        return self._run("encrypt", lambda: self._handles.with_master(mid, encrypt))

    def decrypt(
        self, material_id: bytes, iv: bytes, ciphertext_and_tag: bytes, aad: bytes
    ) -> bytes:
        """The inverse of :meth:`encrypt`; :class:`IntegrityError` if the tag does not verify."""
        mid = check_material_id(material_id)
        param = self._gcm(iv, aad)
        data = bytes(ciphertext_and_tag)
        if len(data) < TAG_BYTES:
            raise IntegrityError("the ciphertext is shorter than its 16-byte GCM tag")

        def decrypt(key: Any) -> bytes:
            if self._gcm_mode() == "ECB":
                plain = gcm_ecb.decrypt(_ecb(key), iv, data, aad)
                if plain is None:
                    raise IntegrityError("could not decrypt: the data does not authenticate")
                return plain
            return bytes(key.decrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=param))

        return self._run(
            "decrypt", lambda: self._handles.with_master(mid, decrypt), integrity=errors.INTEGRITY
        )

    def random(self, n: int) -> bytes:
        """``n`` bytes from the token's RNG (C_GenerateRandom)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if n == 0:
            return b""
        return self._run(
            "generate random bytes", lambda: bytes(self._login.session.generate_random(8 * n))
        )

    def _gcm_mode(self) -> str:
        mode = self._capabilities.gcm
        if mode is None:
            raise MechanismUnsupported(f"token {self.label!r} has neither AES-GCM nor AES-ECB")
        return mode

    @staticmethod
    def _gcm(iv: bytes, aad: bytes) -> GCMParams:
        if len(iv) != IV_BYTES:
            raise ValueError(f"the GCM IV is {IV_BYTES} bytes")
        return GCMParams(bytes(iv), bytes(aad), 8 * TAG_BYTES)

    # -- key pairs (pairs.py) -----------------------------------------------------------------

    def generate_key_pair(self, spec: DataKeyPairSpec | str) -> tuple[bytes, bytes]:
        """A key pair made by the token: (SubjectPublicKeyInfo DER, PKCS#8 DER, RFC 5958 v1)."""
        return self._pairs.generate(spec)

    def generate_wrapped_key_pair(
        self, spec: DataKeyPairSpec | str, material_id: bytes
    ) -> tuple[bytes, WrappedKey]:
        """A key pair whose private key leaves the token only wrapped under a master key:
        (SubjectPublicKeyInfo DER, WrappedKey)."""
        return self._pairs.generate_wrapped(spec, material_id)

    def unwrap_private_key(self, material_id: bytes, wrapped: WrappedKey) -> bytes:
        """The private key of ``wrapped`` as standard PKCS#8 DER (RFC 5958 v1)."""
        return self._pairs.unwrap(material_id, wrapped)

    # -- keys that sign, decrypt, derive or MAC (keyobjects.py) ------------------------------

    def create_private_key(
        self, material_id: bytes, label: str, spec: KeySpec | str, use: str
    ) -> bytes:
        return self._objects.create_private_key(material_id, label, spec, use)

    def create_secret_key(self, material_id: bytes, label: str, bits: int) -> None:
        self._objects.create_secret_key(material_id, label, bits)

    def sign(self, material_id: bytes, scheme: str, hash_name: str, data: bytes) -> bytes:
        return self._objects.sign(material_id, scheme, hash_name, data)

    def decrypt_oaep(self, material_id: bytes, hash_name: str, ciphertext: bytes) -> bytes:
        return self._objects.decrypt(material_id, hash_name, ciphertext)

    def derive(self, material_id: bytes, peer_point: bytes, length: int) -> bytes:
        return self._objects.derive(material_id, peer_point, length)

    def mac(self, material_id: bytes, hash_name: str, message: bytes) -> bytes:
        return self._objects.mac(material_id, hash_name, message)

    def verify_mac(self, material_id: bytes, hash_name: str, message: bytes, mac: bytes) -> bool:
        return self._objects.verify_mac(material_id, hash_name, message, mac)

    # -- imported key material (imports.py) ---------------------------------------------------

    def create_wrapping_key(self, wrapping_id: bytes, label: str, bits: int) -> bytes:
        return self._imports.create_wrapping_key(wrapping_id, label, bits)

    def destroy_wrapping_key(self, wrapping_id: bytes) -> None:
        self._imports.destroy_wrapping_key(wrapping_id)

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
        return self._imports.import_key(
            wrapping_id, scheme, hash_name, encrypted, spec, use, context, label
        )

    # -- health -----------------------------------------------------------------------------

    def status(self) -> TokenStatus:
        """C_GetTokenInfo and the login state; a lost token is re-initialised (rate-limited)."""
        login = self._login

        def op() -> TokenStatus:
            if not login.logged_in():
                raise Lost("the session is no longer logged in")
            info = login.ptoken.slot.get_token()
            return TokenStatus(
                ok=True, label=info.label, manufacturer=info.manufacturer_id, model=info.model
            )

        try:
            return self._run("read the token status", op)
        except TokenError as exc:
            return TokenStatus(ok=False, label=login.label, detail=str(exc))

    def refresh(self) -> None:
        """Re-read the token from scratch (C_Finalize + C_Initialize, login, forget handles).

        For a master key another process created that this process cannot see: SoftHSM2 can
        index another process's object file while it is half written and keep that view until
        the token changes again. Rate-limited like recovery, but a re-read made moments ago
        (for the key before this one, in a burst of keys another process made) is waited out,
        at most ``reinit_interval``, rather than refused: that re-read predates this object.
        Called on a worker thread only (the event loop hands such a call over first)."""
        generation = self._library.generation
        interval = self._calls.reinit_interval
        wait = self._library.last_reinit + interval - time.monotonic()
        if 0 < wait <= interval:
            time.sleep(wait)  # recover() returns at once if another thread re-read meanwhile
        self._calls.bounded(
            "re-read the token",
            lambda: self._calls.recover(generation, "a master key the store knows is not visible"),
        )

    # -- the back door of hsm/testing.py and hsm/raw.py (the benchmark's raw calls) -----------
    # ``self._run`` (set in __init__) runs a function of theirs on the call path.

    @property
    def _session(self) -> Any:
        """The request session: use it only inside ``_run``."""
        return self._login.session

    _destroy = staticmethod(destroy)


def _ecb(key: Any) -> Callable[[bytes], bytes]:
    return lambda blocks: bytes(key.encrypt(blocks, mechanism=Mechanism.AES_ECB))


if TYPE_CHECKING:

    def _conforms(token: PKCS11Token) -> contract.Token:
        return token  # mypy proves here that PKCS11Token satisfies the protocol
