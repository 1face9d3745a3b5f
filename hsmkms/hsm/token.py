"""The token: one PKCS#11 library, one login, master keys by CKA_ID, and the verbs of
:mod:`hsmkms.hsm` on top.

How calls meet the library (measured on SoftHSM2 2.6.1 + python-pkcs11 0.10.1 with
``scripts/bench_token.py``):

* The library is initialised with ``CKF_OS_LOCKING_OK`` (PKCS#11 v2.40 section 5.4) so that it
  guards itself, and the request path runs on one logged-in session behind one lock per
  process (a PKCS#11 session is not for concurrent use, and python-pkcs11 binds every key
  object to one session). Key pair generation, which takes up to seconds for RSA-4096, runs
  on a session of its own outside that lock: with one lock alone, AES-GCM calls waited up to
  1.9 s behind an RSA-4096 generation; with OS locking they kept running (max 4 ms). More
  threads do not add throughput either way (the GIL): scale with processes.
* Master-key handles are cached by CKA_ID; C_FindObjects (a linear scan in SoftHSM2) runs
  once at start-up to fill the cache and afterwards only on a miss or a dead handle. That
  search reads CKA_ID of every AES key (1-2 s at 10,000 keys: SoftHSM2 re-checks an object's
  file on every attribute read), so it runs on a session of its own *outside* the request
  lock, and calls on cached keys go on meanwhile; concurrent misses wait for one search
  instead of each making its own. python-pkcs11 binds an object to the session that found
  it, so that session stays open while its objects are cached (until the next search
  replaces them). :meth:`Token.has_master` tells a caller that must not wait (an event
  loop) whether a call would search, and :data:`hsmkms.hsm.NO_SEARCH` makes a miss raise
  :class:`~hsmkms.hsm.WouldSearch` instead of searching.
* AES-GCM runs on the token objects themselves, not on C_CopyObject session copies: a copy
  is 2x faster on SoftHSM2 (67k vs 31k ops/s, 32 bytes), which re-reads a token object's
  file state on every use; but SoftHSM2 refuses to copy a CKA_MODIFIABLE=false object
  with any attribute changed (CKR_ATTRIBUTE_READ_ONLY, so the copy could only be another
  token object), and a copy would keep working after another process destroyed the key.
* Token loss is absorbed here: C_Finalize + C_Initialize, login again, forget every handle,
  retry the call once, at most one re-initialisation per ``reinit_interval``.
* An ambiguous failure (SoftHSM2's CKR_GENERAL_ERROR is both "GCM tag mismatch" and "token
  directory gone") is settled by probing the token, so a tampered ciphertext is an
  :class:`IntegrityError` only while the token is provably healthy.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.constants import DEFAULT
from pkcs11.mechanisms import GCMParams

from hsmkms.hsm import (
    NO_SEARCH,
    IntegrityError,
    KeyNotFound,
    LoginFailed,
    MasterKeyCheck,
    MechanismUnsupported,
    TokenError,
    TokenFull,
    TokenStatus,
    TokenUnavailable,
    WouldSearch,
    WrappedKey,
    der,
    errors,
    native,
)
from hsmkms.hsm.errors import Lost
from hsmkms.hsm.gate import Gate

log = logging.getLogger("hsmkms.hsm")

T = TypeVar("T")

MATERIAL_ID_BYTES = 32
IV_BYTES = 12
TAG_BYTES = 16
KWP_BLOCK = 8  # RFC 5649: the output is a multiple of 64 bits, at least two blocks

GCM = "AES_GCM"
KWP = "AES_KEY_WRAP_PAD"

# Every mechanism flag PKCS#11 v3.0 defines. SoftHSM2 2.6.1 leaves CK_MECHANISM_INFO.flags
# uninitialised for CKM_AES_GCM (we read stack addresses such as 0x7fb20f39c740), so a
# report with bits outside this set is noise, and a trial decides instead.
_KNOWN_MECHANISM_FLAGS = 0x8000_0000 | 0x03FF_FFFF

_AES_SEARCH = {
    Attribute.CLASS: ObjectClass.SECRET_KEY,
    Attribute.KEY_TYPE: KeyType.AES,
    Attribute.TOKEN: True,
}
_SEARCH_BATCH = 256  # handles per C_FindObjects (python-pkcs11's default is 10)

# Unwrap failures that mean "this blob is not what it claims" once the token is known to be well.
_UNWRAP_INTEGRITY = errors.INTEGRITY + (
    pkcs11.exceptions.TemplateInconsistent,
    pkcs11.exceptions.AttributeValueInvalid,
    pkcs11.exceptions.KeyTypeInconsistent,
)
# Answers that are final whatever the token's health: it does not do this.
_REFUSED = (
    pkcs11.exceptions.MechanismInvalid,
    pkcs11.exceptions.MechanismParamInvalid,
    pkcs11.exceptions.FunctionNotSupported,
)


@dataclass(frozen=True)
class _Options:
    reinit_interval: float = 1.0
    os_locking: bool = True
    # Fill the handle cache when opening. Off for a process that only checks the token
    # (the parent of several server workers): at 10,000 keys the search takes 1-2 s.
    preload: bool = True

    @classmethod
    def parse(cls, options: dict[str, object]) -> _Options:
        unknown = set(options) - {"reinit_interval", "os_locking", "preload"}
        if unknown:
            raise TypeError(f"unknown token option(s): {', '.join(sorted(unknown))}")
        interval = options.get("reinit_interval", cls.reinit_interval)
        if not isinstance(interval, int | float) or interval < 0:
            raise TypeError("reinit_interval must be a number of seconds >= 0")
        return cls(
            reinit_interval=float(interval),
            os_locking=bool(options.get("os_locking", cls.os_locking)),
            preload=bool(options.get("preload", cls.preload)),
        )


class _Module:
    """One loaded PKCS#11 library per process, shared by every :class:`Token` opened on it.

    Initialisation, login state and handles belong to the process, not to a Token, so the
    things that change them live here: the gate, the generation, the re-init rate limit.
    """

    _registry: dict[str, _Module] = {}
    _registry_lock = threading.Lock()

    @classmethod
    def get(cls, path: str, os_locking: bool) -> _Module:
        real = os.path.realpath(path)
        with cls._registry_lock:
            module = cls._registry.get(real)
            # A forked child inherits the parent's library state, which PKCS#11 says it must
            # not use ("Applications and processes"): it starts over with its own C_Initialize.
            if module is None or module.pid != os.getpid():
                module = cls(real, os_locking)
                cls._registry[real] = module
            return module

    def __init__(self, path: str, os_locking: bool) -> None:
        self.path = path
        try:
            # python-pkcs11 loads the module and calls C_Initialize(NULL) ...
            self.lib: Any = pkcs11.lib(path)
            self.cryptoki = native.Cryptoki(path)
        except (pkcs11.PKCS11Error, OSError) as exc:
            hint = " (for SoftHSM2: is SOFTHSM2_CONF right?)" if "softhsm" in path else ""
            raise TokenUnavailable(
                f"cannot load the PKCS#11 module {path}: {errors.name(exc)} {exc}{hint}".rstrip()
            ) from None
        self.pid = os.getpid()
        self.gate = Gate()
        self.generation = 0  # bumped by every C_Finalize: all sessions and handles are void
        self.initialized = True
        self.last_reinit = float("-inf")
        self.users: dict[str, int] = {}  # token label -> open Tokens (the last one logs out)
        self.pins: dict[str, str] = {}  # token label -> the PIN that logged in
        # ... which tells SoftHSM2 we are single-threaded (and, after fork(), is the parent's
        # state). Start again, with OS locking unless told not to.
        self.cryptoki.finalize()
        rv = self.cryptoki.initialize(os_locking) if os_locking else native.CKR_CANT_LOCK
        self.os_locking = os_locking and rv == native.CKR_OK
        if not self.os_locking:
            # CKR_CANT_LOCK: the module cannot lock; every call goes through one lock.
            rv = self.cryptoki.initialize(os_locking=False)
            if rv != native.CKR_OK:
                self.initialized = False
                raise TokenUnavailable(f"C_Initialize of {path} failed: CK_RV 0x{rv:x}")

    def reinitialize(self) -> None:
        """C_Finalize + C_Initialize. The caller holds the gate exclusively."""
        self.generation += 1
        if self.initialized:
            self.initialized = False
            self.cryptoki.finalize()  # its CK_RV does not matter: we start over either way
        rv = self.cryptoki.initialize(self.os_locking)
        if rv not in (native.CKR_OK, native.CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise Lost(f"C_Initialize returned CK_RV 0x{rv:x}")
        self.initialized = True


class _Miss(Exception):
    """Internal: the handle cache lacks ``mid`` (None: it was never filled). Raised under
    ``Token._lock``; :meth:`Token._run` fills the cache outside the lock and runs the call
    once more."""

    def __init__(self, mid: bytes | None) -> None:
        super().__init__(mid)
        self.mid = mid


def _check_material_id(material_id: bytes) -> bytes:
    if not isinstance(material_id, bytes | bytearray) or len(material_id) != MATERIAL_ID_BYTES:
        raise ValueError(f"a key material id is {MATERIAL_ID_BYTES} bytes")
    return bytes(material_id)


def _mechanism_flags_credible(flags: int) -> bool:
    return 0 <= flags and not flags & ~_KNOWN_MECHANISM_FLAGS


class Token:
    """A logged-in PKCS#11 token. Thread-safe; one per process is enough (see module doc)."""

    def __init__(self, module: _Module, label: str, pin: str, options: _Options) -> None:
        self._module = module
        self._label = label
        self._pin = pin
        # Set once the token refuses the PIN: every later call fails at once, without C_Login.
        # A wrong PIN never becomes right by itself, and an HSM locks after a few tries.
        self._refused: str | None = None
        self._options = options
        # RLock: a side operation (key pair generation) re-enters it around the wrap.
        self._lock = threading.RLock()
        self._gen = -1
        self._ptoken: Any = None  # python-pkcs11 Token of our slot
        self._session: Any = None  # the logged-in session every request uses
        self._keys: dict[bytes, Any] = {}  # CKA_ID -> python-pkcs11 key object
        self._filled = False  # whether _keys holds every key (a search since the last connect)
        # The session of the search that found the objects in _keys (python-pkcs11 binds an
        # object to its session): open while they are cached; closed when the next replaces it.
        self._found_on: Any = None
        # While a search runs: what this process put in (object) or dropped from (None) _keys
        # since it began, which its result cannot know. None when no search runs.
        self._changed: dict[bytes, Any] | None = None
        # Single flight: one search at a time; a miss waits for a search that began after it.
        self._fill_cond = threading.Condition(threading.Lock())
        self._filling = False
        self._fills_begun = 0
        self._fills_ended = 0  # every search up to this number has ended
        self._closed = False
        self._described = False
        self._wrap_mechanism: str | None = None
        self._unwrap_mechanisms: frozenset[str] = frozenset()
        self._keypair_specs: frozenset[str] = frozenset()

    # -- opening and closing -----------------------------------------------------------------

    @classmethod
    def open(cls, module: str, label: str, pin: str, **options: object) -> Token:
        """Load ``module``, find the token labelled ``label``, log in once with ``pin``.

        Options: ``reinit_interval`` (seconds between two re-initialisations of the library
        after token loss, default 1.0), ``os_locking`` (default True), ``preload`` (fill the
        handle cache now, default True; else on the first miss).
        """
        opts = _Options.parse(dict(options))
        mod = _Module.get(module, opts.os_locking)
        token = cls(mod, label, pin, opts)
        # No recovery on a fresh library: a token missing now is a configuration error to
        # report. A library other Tokens of this process use may just be recovering.
        with _Module._registry_lock:
            in_use = any(mod.users.values())
        token._run("open the token", lambda: None, recover=in_use)
        with _Module._registry_lock:
            mod.users[label] = mod.users.get(label, 0) + 1
        if opts.preload:
            try:
                token._run("read the master keys", token._need_filled, recover=in_use)
            except BaseException:
                token.close()
                raise
        log.info(
            "token %r open (%s), %d master keys, wrap %s, os locking %s",
            label, mod.path, len(token._keys), token._wrap_mechanism, mod.os_locking,
        )
        return token

    def close(self) -> None:
        """Forget the handles; the last Token of a label logs the process out."""
        mod = self._module
        if mod.pid != os.getpid():
            self._closed = True  # the parent's session: not ours to log out or close
            self._forget()
            return
        mod.gate.enter()
        try:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                with _Module._registry_lock:
                    left = mod.users.get(self._label, 1) - 1
                    mod.users[self._label] = left
                session = self._session if self._gen == mod.generation else None
                if session is not None and self._found_on is not None:
                    with contextlib.suppress(errors.PKCS11Error):
                        self._found_on.close()
                if session is not None:
                    if left <= 0:
                        mod.cryptoki.logout(session.handle)
                        mod.pins.pop(self._label, None)
                    with contextlib.suppress(errors.PKCS11Error):
                        session.close()  # opened without a PIN: python-pkcs11 does not log out
                self._forget()
        finally:
            mod.gate.leave()

    def __enter__(self) -> Token:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def label(self) -> str:
        return self._label

    @property
    def keypair_specs(self) -> frozenset[str]:
        """The DataKeyPairSpecs this token can generate (decided from its mechanisms at open)."""
        return self._keypair_specs

    @property
    def wrap_mechanism(self) -> str | None:
        """``"AES_GCM"`` or ``"AES_KEY_WRAP_PAD"``: what C_WrapKey uses here; None if neither."""
        return self._wrap_mechanism

    @property
    def os_locking(self) -> bool:
        """Whether the library guards itself (CKF_OS_LOCKING_OK) so key pairs generate aside."""
        return self._module.os_locking

    # -- master keys ------------------------------------------------------------------------

    def create_master_key(self, material_id: bytes, label: str) -> None:
        """A new AES-256 token object with CKA_ID = ``material_id`` that never leaves the token."""
        mid = _check_material_id(material_id)

        def op() -> None:
            # The cache holds every key of this token (filled at open, kept by this process),
            # so this check costs no C_FindObjects; ids are random, so other processes cannot
            # collide in practice.
            if not self._filled:
                raise _Miss(None)  # opened without preload, or re-initialised: fill it once
            existing = self._keys.get(mid)
            if existing is not None:
                if existing[Attribute.LABEL] == label:
                    return  # made by our first attempt before the token went: done
                raise TokenError(f"a master key with material id {mid.hex()} already exists")
            obj = self._session.generate_key(
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
            self._put(mid, obj)

        self._run("create a master key", op, storing=True)

    def destroy_master_key(self, material_id: bytes) -> None:
        """Destroy the token object; :class:`KeyNotFound` if there is none."""
        mid = _check_material_id(material_id)

        def destroy(obj: Any) -> None:
            obj.destroy()

        def op() -> None:
            self._with_master(mid, destroy)
            self._drop(mid)

        self._run("destroy a master key", op)

    def has_master_key(self, material_id: bytes) -> bool:
        mid = _check_material_id(material_id)

        def op() -> bool:
            obj = self._keys.get(mid)
            if obj is not None:
                try:
                    obj[Attribute.CLASS]  # cheap: is the handle still an object?
                    return True
                except errors.HANDLE:
                    self._drop(mid)
            self._master(mid)  # a miss searches, then this runs again
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
        return (
            self._keys.get(bytes(material_id)) is not None
            and self._session is not None
            and self._gen == self._module.generation
        )

    def list_master_keys(self) -> list[tuple[bytes, str]]:
        """(CKA_ID, CKA_LABEL) of every AES master key on the token. Searches (on a session of
        its own, not holding up other calls): not for requests."""

        def op() -> list[tuple[bytes, str]]:
            with self._side_session() as session:
                found = self._search(session, labels=True)
            return sorted((mid, label) for mid, label, _ in found)

        return self._run("list master keys", op, side=True)

    def check_master_key(self, material_id: bytes) -> MasterKeyCheck:
        """Read a master key's protection attributes and try to extract it (CKA_VALUE, C_WrapKey).

        For ``doctor`` and the tests: a sound key answers AttributeSensitive and
        KeyUnextractable, which this reports as ``value_readable=False, wrappable=False``.
        """
        mid = _check_material_id(material_id)
        return self._run(
            "check a master key", lambda: self._with_master(mid, self._check)
        )

    # -- AES-GCM and random -----------------------------------------------------------------

    def encrypt(self, material_id: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM (NIST SP 800-38D) with a 96-bit IV and a 128-bit tag: ciphertext || tag.

        Byte-identical to ``cryptography``'s ``AESGCM(key).encrypt(iv, plaintext, aad)``.
        """
        mid = _check_material_id(material_id)
        param = self._gcm(iv, aad)
        data = bytes(plaintext)

        def encrypt(key: Any) -> bytes:
            return bytes(key.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=param))

        return self._run("encrypt", lambda: self._with_master(mid, encrypt))

    def decrypt(
        self, material_id: bytes, iv: bytes, ciphertext_and_tag: bytes, aad: bytes
    ) -> bytes:
        """The inverse of :meth:`encrypt`; :class:`IntegrityError` if the tag does not verify."""
        mid = _check_material_id(material_id)
        param = self._gcm(iv, aad)
        data = bytes(ciphertext_and_tag)
        if len(data) < TAG_BYTES:
            raise IntegrityError("the ciphertext is shorter than its 16-byte GCM tag")

        def decrypt(key: Any) -> bytes:
            return bytes(key.decrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=param))

        return self._run(
            "decrypt", lambda: self._with_master(mid, decrypt), integrity=errors.INTEGRITY
        )

    def random(self, n: int) -> bytes:
        """``n`` bytes from the token's RNG (C_GenerateRandom)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if n == 0:
            return b""
        return self._run(
            "generate random bytes", lambda: bytes(self._session.generate_random(8 * n))
        )

    @staticmethod
    def _gcm(iv: bytes, aad: bytes) -> GCMParams:
        if len(iv) != IV_BYTES:
            raise ValueError(f"the GCM IV is {IV_BYTES} bytes")
        return GCMParams(bytes(iv), bytes(aad), 8 * TAG_BYTES)

    # -- key pairs --------------------------------------------------------------------------

    def generate_key_pair(self, spec: str) -> tuple[bytes, bytes]:
        """A key pair made by the token: (SubjectPublicKeyInfo DER, PKCS#8 DER, RFC 5958 v1).

        Generated as non-sensitive session objects, read out, rebuilt as standard DER by
        :mod:`hsmkms.hsm.der`, destroyed.
        """
        pair = self._pair_spec(spec, for_generation=True)

        def op() -> tuple[bytes, bytes]:
            with self._side_session() as session:
                public, private = self._generate(session, pair, sensitive=False)
                try:
                    return self._read_pair(pair, public, private)
                finally:
                    self._destroy(public, private)

        return self._run(f"generate a {spec} key pair", op, side=True)

    def generate_wrapped_key_pair(
        self, spec: str, material_id: bytes
    ) -> tuple[bytes, WrappedKey]:
        """A key pair whose private key leaves the token only wrapped under a master key.

        The private key is a sensitive, extractable session object wrapped with C_WrapKey:
        AES-GCM where the token wraps with it, else AES Key Wrap with Padding (RFC 5649).
        Its plaintext never enters this process. Returns (SubjectPublicKeyInfo DER, WrappedKey).
        """
        pair = self._pair_spec(spec, for_generation=True)
        mid = _check_material_id(material_id)

        def op() -> tuple[bytes, WrappedKey]:
            if self._wrap_mechanism is None:
                raise MechanismUnsupported(
                    f"token {self._label!r} wraps with neither CKM_AES_GCM nor "
                    "CKM_AES_KEY_WRAP_PAD: it cannot export private keys under a master key"
                )
            with self._lock:
                self._master(mid)  # KeyNotFound now, not after seconds of RSA generation
            with self._side_session() as session:
                public, private = self._generate(session, pair, sensitive=True)
                try:
                    spki = self._read_public(pair, public)
                    with self._lock:  # the master key's object lives on the main session
                        wrapped = self._with_master(mid, lambda e: self._wrap(e, pair, private))
                    return spki, wrapped
                finally:
                    self._destroy(public, private)

        return self._run(f"generate a wrapped {spec} key pair", op, side=True)

    def unwrap_private_key(self, material_id: bytes, wrapped: WrappedKey) -> bytes:
        """The private key of ``wrapped`` as standard PKCS#8 DER (RFC 5958 v1).

        Unwrapped into a short-lived, non-sensitive session object whose components are read
        and rebuilt (SoftHSM2's own PKCS#8 is zero-padded and lacks the EC public key), then
        destroyed. A blob that does not unwrap is an :class:`IntegrityError`.
        """
        mid = _check_material_id(material_id)
        pair = self._pair_spec(wrapped.spec, for_generation=False)
        if wrapped.mechanism not in (GCM, KWP):
            raise MechanismUnsupported(f"unknown wrapping mechanism {wrapped.mechanism!r}")
        if wrapped.mechanism not in self._unwrap_mechanisms:
            raise MechanismUnsupported(
                f"token {self._label!r} cannot unwrap with {wrapped.mechanism}"
            )
        data = bytes(wrapped.data)
        if wrapped.mechanism == KWP and (len(data) < 2 * KWP_BLOCK or len(data) % KWP_BLOCK):
            raise IntegrityError("an RFC 5649 wrapped key is a multiple of 8 bytes, at least 16")
        if wrapped.mechanism == GCM and len(data) < IV_BYTES + TAG_BYTES:
            raise IntegrityError("a GCM wrapped key is at least its IV and tag long")

        def unwrap(key: Any) -> bytes:
            return self._unwrap(key, pair, wrapped.mechanism, data)

        return self._run(
            "unwrap a private key",
            lambda: self._with_master(mid, unwrap),
            integrity=_UNWRAP_INTEGRITY,
        )

    # -- health -----------------------------------------------------------------------------

    def status(self) -> TokenStatus:
        """C_GetTokenInfo and the login state; a lost token is re-initialised (rate-limited)."""

        def op() -> TokenStatus:
            if not self._logged_in():
                raise Lost("the session is no longer logged in")
            info = self._ptoken.slot.get_token()
            return TokenStatus(
                ok=True, label=info.label, manufacturer=info.manufacturer_id, model=info.model
            )

        try:
            return self._run("read the token status", op)
        except TokenError as exc:
            return TokenStatus(ok=False, label=self._label, detail=str(exc))

    # -- the call path ----------------------------------------------------------------------

    def _run(
        self,
        what: str,
        op: Callable[[], T],
        *,
        integrity: tuple[type[Exception], ...] = (),
        side: bool = False,
        recover: bool = True,
        storing: bool = False,
    ) -> T:
        """Run ``op`` against a ready token, turn every CKR_* into our errors, and after token
        loss re-initialise and run it once more."""
        mod = self._module
        if mod.pid != os.getpid():
            raise TokenError(
                f"token {self._label!r} was opened in process {mod.pid}, and a PKCS#11 library "
                "does not survive fork(): open the token again in this process"
            )
        detail = ""
        for attempt in (1, 2):
            generation = mod.generation
            mod.gate.enter()
            try:
                try:
                    try:
                        return self._attempt(op, side)
                    except _Miss as miss:
                        self._fill_for(miss.mid)  # outside self._lock
                    try:
                        return self._attempt(op, side)
                    except _Miss as miss:
                        raise self._missing(miss.mid) from None
                except errors.PKCS11Error as exc:
                    with self._lock:
                        raise self._classify(exc, what, integrity, storing=storing) from None
            except Lost as lost:
                detail = lost.detail
            finally:
                mod.gate.leave()
            if attempt == 2 or not recover:
                break
            self._recover(generation, detail)
        raise TokenUnavailable(f"token {self._label!r} is unavailable: {detail}")

    def _attempt(self, op: Callable[[], T], side: bool) -> T:
        with self._lock:
            self._ensure_ready()
            if not (side and self._module.os_locking):
                return op()
        return op()  # side operation: runs beside the request path

    def _classify(
        self,
        exc: Exception,
        what: str,
        integrity: tuple[type[Exception], ...],
        *,
        storing: bool = False,
    ) -> Exception:
        """One CKR_* -> one of our exceptions (or Lost), probing the token where ambiguous."""
        code = errors.name(exc)
        if isinstance(exc, errors.LOGIN):
            return LoginFailed(f"token {self._label!r} refused the login ({code})")
        if isinstance(exc, errors.LOSS):
            return Lost(f"{code} while trying to {what}")
        if isinstance(exc, _REFUSED):
            return MechanismUnsupported(f"token {self._label!r} cannot {what} ({code})")
        if not self._healthy():
            return Lost(f"{code} while trying to {what}, and the token does not answer")
        if isinstance(exc, integrity):
            return IntegrityError(f"could not {what}: the data does not authenticate ({code})")
        if isinstance(exc, errors.STORING if storing else errors.STORAGE):
            return TokenFull(f"token {self._label!r} has no room to {what} ({code})")
        if isinstance(exc, errors.MECHANISM):
            return MechanismUnsupported(f"token {self._label!r} cannot {what} ({code})")
        return TokenError(f"token {self._label!r} failed to {what} ({code})")

    def refresh(self) -> None:
        """Re-read the token from scratch (C_Finalize + C_Initialize, login, forget handles).

        For a master key another process created that this process cannot see: SoftHSM2 can
        index another process's object file while it is half written and keep that view until
        the token changes again. Rate-limited like recovery (TokenUnavailable when too soon)."""
        self._recover(self._module.generation, "a master key the store knows is not visible")

    def _recover(self, generation: int, detail: str) -> None:
        """C_Finalize + C_Initialize, unless another thread just did, or did too recently."""
        mod = self._module
        mod.gate.enter_exclusive()
        try:
            if mod.generation != generation:
                return  # someone re-initialised since our call began: just retry
            now = time.monotonic()
            wait = mod.last_reinit + self._options.reinit_interval - now
            if wait > 0:
                # A token that stays away must not turn every request into a C_Initialize.
                raise TokenUnavailable(
                    f"token {self._label!r} is unavailable: {detail}; "
                    f"next reconnect attempt in {wait:.1f} s"
                )
            mod.last_reinit = now
            log.warning("token %r lost (%s): re-initialising %s", self._label, detail, mod.path)
            try:
                mod.reinitialize()
            except Lost as lost:
                raise TokenUnavailable(
                    f"token {self._label!r} is unavailable: {lost.detail}"
                ) from None
        finally:
            mod.gate.leave_exclusive()

    def _ensure_ready(self) -> None:
        """Have a logged-in session of the current library generation. Holds self._lock."""
        if self._closed:
            raise TokenError(f"token {self._label!r} was closed")
        if self._refused is not None:
            raise LoginFailed(self._refused)
        mod = self._module
        if self._session is not None and self._gen == mod.generation:
            return
        self._forget()
        if not mod.initialized:
            raise Lost(f"the PKCS#11 library {mod.path} is not initialised")
        self._connect()

    def _connect(self) -> None:
        mod = self._module
        try:
            ptoken = mod.lib.get_token(token_label=self._label)
        except pkcs11.exceptions.NoSuchToken:
            raise Lost(f"no token labelled {self._label!r} in {mod.path}") from None
        except pkcs11.exceptions.MultipleTokensReturned:
            raise TokenError(f"more than one token is labelled {self._label!r}") from None
        except errors.PKCS11Error as exc:
            raise Lost(f"cannot list the slots of {mod.path} ({errors.name(exc)})") from None
        try:
            session = ptoken.open(rw=True)  # no PIN: we log in ourselves, see native.py
        except errors.PKCS11Error as exc:
            raise Lost(f"cannot open a session on {self._label!r} ({errors.name(exc)})") from None
        rv = mod.cryptoki.login(session.handle, self._pin)
        refused = rv in native.PIN_ERRORS
        if rv == native.CKR_USER_ALREADY_LOGGED_IN:
            # The login is the process's: another Token of this process made it.
            known = mod.pins.get(self._label)
            refused = known is not None and not hmac.compare_digest(known, self._pin)
        elif rv != native.CKR_OK and not refused:
            with contextlib.suppress(errors.PKCS11Error):
                session.close()
            raise Lost(f"C_Login on {self._label!r} returned CK_RV 0x{rv:x}")
        if refused:
            with contextlib.suppress(errors.PKCS11Error):
                session.close()
            message = f"token {self._label!r} refused the PIN (CK_RV 0x{rv:x}); not retried"
            if rv in native.PIN_ERRORS:
                # Say so for good: a token re-initialised, or its PIN changed, while we ran
                # would otherwise see one more C_Login per request until it locks.
                self._refused = message + ": restart hsmkms with the right PIN"
                log.error("%s", self._refused)
            raise LoginFailed(message)
        mod.pins[self._label] = self._pin
        self._ptoken, self._session, self._gen = ptoken, session, mod.generation
        try:
            if not self._described:
                self._describe()
                self._described = True
        except errors.PKCS11Error as exc:
            failure = self._classify(exc, "read what the token holds", ())
            with contextlib.suppress(errors.PKCS11Error):
                session.close()
            self._forget()  # half-ready is not ready: the next call connects again
            raise failure from None

    def _forget(self) -> None:
        """Drop the session and every cached handle, without calling the token:
        after C_Finalize they are void, and their numbers may already name other objects."""
        self._session = None
        self._ptoken = None
        self._keys = {}
        self._filled = False
        self._found_on = None

    def _healthy(self) -> bool:
        """The probe that tells a bad input from a sick token: still logged in on our session
        (C_GetSessionInfo), and the token still readable (C_GetTokenInfo: SoftHSM2 answers
        CKR_GENERAL_ERROR once its directory is gone; C_GenerateRandom would still work)."""
        if self._session is None or self._gen != self._module.generation:
            return False
        try:
            if not self._logged_in():
                return False
            self._ptoken.slot.get_token()
        except errors.PKCS11Error:
            return False
        return True

    def _logged_in(self) -> bool:
        rv, state = self._module.cryptoki.session_state(self._session.handle)
        return rv == native.CKR_OK and state in native.LOGGED_IN_STATES

    @contextlib.contextmanager
    def _side_session(self) -> Any:
        """A session of its own for slow work; closing it destroys what it made."""
        session = self._open_side_session()
        try:
            yield session
        finally:
            with contextlib.suppress(errors.PKCS11Error):
                session.close()  # opened without a PIN, so this does not log out

    def _open_side_session(self) -> Any:
        with self._lock:
            ptoken = self._ptoken
        return ptoken.open(rw=True)  # rw: a cached key's session may destroy it

    # -- the handle cache -------------------------------------------------------------------

    @staticmethod
    def _search(session: Any, *, labels: bool) -> list[tuple[bytes, str, Any]]:
        """(CKA_ID, CKA_LABEL or "", object) of every AES token key with a material id, by one
        C_FindObjects on ``session``. The label costs a little more; only listings need it."""
        wanted = [Attribute.ID, Attribute.LABEL] if labels else [Attribute.ID]
        found: list[tuple[bytes, str, Any]] = []
        for obj in session.get_objects(_AES_SEARCH, batch_size=_SEARCH_BATCH):
            attrs = obj.get_attributes(wanted)
            mid = bytes(attrs.get(Attribute.ID, b""))
            if len(mid) == MATERIAL_ID_BYTES:  # else not one of ours
                found.append((mid, str(attrs.get(Attribute.LABEL, "")), obj))
        return found

    def _need_filled(self) -> None:
        """Holds self._lock: a cache that was never filled is filled (by _run)."""
        if not self._filled:
            raise _Miss(None)

    def _fill_for(self, mid: bytes | None) -> None:
        """Have the handle cache filled by a search that began after the miss on ``mid``
        (None: a cache never filled), or by one already running that found it. Not under
        self._lock.

        A miss is a key another process created after our last search, and those come in
        batches (keys created through another worker): SoftHSM2's C_FindObjects reads every
        object whatever the template (170 ms at 10,000), so one search per missing key would
        cost that per key; one search of every key picks up the whole batch for ~1.5x the price.
        Concurrent misses share it: a thread that misses while a search runs waits for it, and
        searches again only if its key was created too late for it."""
        if NO_SEARCH.get():
            what = "the master keys" if mid is None else f"master key {mid.hex()}"
            raise WouldSearch(f"{what} of {self._label!r} would need a search of the token")
        with self._fill_cond:
            wanted = self._fills_begun + 1  # the first search to begin after this miss
            while self._fills_ended < wanted:
                if not self._filling:
                    self._filling = True
                    self._fills_begun += 1
                    break  # this thread searches
                self._fill_cond.wait()
                if self._filled if mid is None else self._keys.get(mid) is not None:
                    return  # the search that was running found it
            else:
                return  # a search that began after the miss has ended
        try:
            self._fill()
        except errors.PKCS11Error as exc:
            with self._lock:
                raise self._classify(exc, "search the master keys", ()) from None
        finally:
            with self._fill_cond:
                self._filling = False
                self._fills_ended = self._fills_begun
                self._fill_cond.notify_all()

    def _fill(self) -> None:
        """One search of every master key on a session of its own, without self._lock (calls
        on cached keys go on meanwhile, unless the library cannot lock: then with it); its
        objects then replace the cache, with what this process changed meanwhile on top."""
        mod = self._module
        with self._lock:
            self._ensure_ready()
            generation = self._gen
            self._changed = {}
        serial: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if mod.os_locking else self._lock
        )
        session = None
        try:
            with serial:
                session = self._open_side_session()
                found = self._search(session, labels=False)
        except BaseException:
            with self._lock:
                self._changed = None
            if session is not None:
                with contextlib.suppress(errors.PKCS11Error):
                    session.close()
            raise
        with self._lock:
            changed, self._changed = self._changed or {}, None
            if self._closed or self._gen != generation or mod.generation != generation:
                # Closed, or re-initialised (the gate keeps that from happening during a
                # search, but not between two calls): these handles are void or unwanted.
                if mod.generation == generation:
                    with contextlib.suppress(errors.PKCS11Error):
                        session.close()
                return
            keys: dict[bytes, Any] = {}
            for mid, _label, obj in found:
                if mid in keys:
                    log.warning("several objects share CKA_ID %s; using the first", mid.hex())
                    continue
                keys[mid] = obj
            for mid, obj in changed.items():
                if obj is None:
                    keys.pop(mid, None)
                else:
                    keys[mid] = obj
            # Every object of the previous search is replaced or gone, and objects are only
            # used under self._lock: its session can close now.
            old, self._found_on = self._found_on, session
            self._keys = keys
            self._filled = True
            if old is not None:
                with contextlib.suppress(errors.PKCS11Error):
                    old.close()

    def _put(self, mid: bytes, obj: Any) -> None:
        """Holds self._lock."""
        self._keys[mid] = obj
        if self._changed is not None:
            self._changed[mid] = obj

    def _drop(self, mid: bytes) -> None:
        """Holds self._lock."""
        self._keys.pop(mid, None)
        if self._changed is not None:
            self._changed[mid] = None

    def _missing(self, mid: bytes | None) -> Exception:
        """What a miss after a search means."""
        with self._lock:
            # SoftHSM2 finds nothing, without an error, once its token directory is gone.
            if not self._healthy():
                return Lost("the token stopped answering during a key lookup")
        if mid is None:
            return TokenError(f"could not read the master keys of {self._label!r}")
        return KeyNotFound(f"no master key with material id {mid.hex()} on {self._label!r}")

    def _master(self, mid: bytes) -> Any:
        """The cached key. Holds self._lock; a miss raises :class:`_Miss`, on which
        :meth:`_run` searches outside the lock and runs the call again."""
        obj = self._keys.get(mid)
        if obj is None:
            raise _Miss(mid)
        return obj

    def _with_master(self, mid: bytes, fn: Callable[[Any], T]) -> T:
        """``fn`` on the cached key; on a dead handle (another process destroyed the key, or
        the token went) look the key up once more. Holds self._lock."""
        key = self._master(mid)
        try:
            return fn(key)
        except errors.HANDLE:
            self._drop(mid)
        raise _Miss(mid)

    def _check(self, obj: Any) -> MasterKeyCheck:
        names = {
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
        attrs = obj.get_attributes(list(names))
        values: dict[str, Any] = {names[a]: v for a, v in attrs.items()}
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
            except (
                pkcs11.exceptions.KeyUnextractable,
                pkcs11.exceptions.KeyNotWrappable,
                *_REFUSED,
            ):
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

    # -- what the token can do, decided once ------------------------------------------------

    def _describe(self) -> None:
        """Key pair specs from the generation mechanisms, wrap mechanisms from a trial."""
        slot = self._ptoken.slot
        offered = slot.get_mechanisms()
        specs: set[str] = set()
        generators = (("RSA", Mechanism.RSA_PKCS_KEY_PAIR_GEN), ("EC", Mechanism.EC_KEY_PAIR_GEN))
        for kind, mechanism in generators:
            if mechanism not in offered:
                continue
            info = slot.get_mechanism_info(mechanism)
            low, high = int(info.min_key_length), int(info.max_key_length)
            for pair in der.PAIR_SPECS.values():
                if pair.kind == kind and low <= pair.bits and (high == 0 or pair.bits <= high):
                    specs.add(pair.name)
        self._keypair_specs = frozenset(specs)

        usable: list[str] = []
        for name, mechanism in ((GCM, Mechanism.AES_GCM), (KWP, Mechanism.AES_KEY_WRAP_PAD)):
            if mechanism not in offered:
                continue
            flags = int(slot.get_mechanism_info(mechanism).flags)
            wraps = MechanismFlag.WRAP | MechanismFlag.UNWRAP
            if _mechanism_flags_credible(flags) and flags & wraps != wraps:
                continue  # the token says no, and its answer is well-formed
            if self._trial_wrap(name):
                usable.append(name)
        self._wrap_mechanism = usable[0] if usable else None
        self._unwrap_mechanisms = frozenset(usable)

    def _trial_wrap(self, name: str) -> bool:
        """Wrap and unwrap a throwaway key: the only reliable answer on SoftHSM2, which
        reports garbage flags for CKM_AES_GCM and then refuses it in C_WrapKey."""
        session = self._session
        kek = session.generate_key(
            KeyType.AES, 256, store=False,
            capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
        key = session.generate_key(
            KeyType.GENERIC_SECRET, 160, store=False, capabilities=0,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
        )
        unwrapped = None
        try:
            mechanism, param = self._wrap_params(name, bytes(IV_BYTES))
            blob = kek.wrap_key(key, mechanism=mechanism, mechanism_param=param)
            unwrapped = kek.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, blob,
                mechanism=mechanism, mechanism_param=param, store=False, capabilities=0,
            )
            return True
        except errors.PKCS11Error as exc:
            if isinstance(exc, errors.LOSS) or not self._healthy():
                raise
            return False
        finally:
            self._destroy(key, kek, unwrapped)

    @staticmethod
    def _wrap_params(name: str, iv: bytes) -> tuple[Mechanism, GCMParams | None]:
        if name == GCM:
            return Mechanism.AES_GCM, GCMParams(iv, b"", 8 * TAG_BYTES)
        return Mechanism.AES_KEY_WRAP_PAD, None

    # -- key pair internals -----------------------------------------------------------------

    def _pair_spec(self, spec: str, *, for_generation: bool) -> der.PairSpec:
        pair = der.PAIR_SPECS.get(spec)
        if pair is None:
            raise MechanismUnsupported(f"no key pair spec {spec!r} on a PKCS#11 token")
        if for_generation and spec not in self._keypair_specs:
            raise MechanismUnsupported(f"token {self._label!r} cannot generate {spec} key pairs")
        return pair

    @staticmethod
    def _generate(session: Any, pair: der.PairSpec, *, sensitive: bool) -> tuple[Any, Any]:
        """A session key pair. Extractable always (to read or wrap it), sensitive when it must
        leave only wrapped, and with no usage at all: it exists only to be exported."""
        private_template = {
            Attribute.TOKEN: False,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: sensitive,
            Attribute.EXTRACTABLE: True,
        }
        public_template = {Attribute.TOKEN: False}
        if pair.kind == "RSA":
            return session.generate_keypair(  # type: ignore[no-any-return]
                KeyType.RSA, pair.bits, store=False, capabilities=0,
                public_template=public_template, private_template=private_template,
            )
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: pair.curve_der}, local=True
        )
        return params.generate_keypair(  # type: ignore[no-any-return]
            store=False, capabilities=0,
            public_template=public_template, private_template=private_template,
        )

    @staticmethod
    def _read_public(pair: der.PairSpec, public: Any) -> bytes:
        try:
            if pair.kind == "RSA":
                attrs = public.get_attributes([Attribute.MODULUS, Attribute.PUBLIC_EXPONENT])
                return der.rsa_public_spki(
                    attrs[Attribute.MODULUS], attrs[Attribute.PUBLIC_EXPONENT]
                )
            return der.ec_public_spki(pair, public[Attribute.EC_POINT])
        except der.DerError as exc:
            raise TokenError(f"the token made a broken {pair.name} public key: {exc}") from None

    @staticmethod
    def _private_der(pair: der.PairSpec, private: Any) -> tuple[bytes, bytes]:
        """(SPKI, PKCS#8) rebuilt from a non-sensitive private key object's components."""
        if pair.kind == "RSA":
            a = private.get_attributes(
                [
                    Attribute.MODULUS, Attribute.PUBLIC_EXPONENT, Attribute.PRIVATE_EXPONENT,
                    Attribute.PRIME_1, Attribute.PRIME_2, Attribute.EXPONENT_1,
                    Attribute.EXPONENT_2, Attribute.COEFFICIENT,
                ]
            )
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
        a = private.get_attributes([Attribute.EC_PARAMS, Attribute.VALUE])
        if bytes(a[Attribute.EC_PARAMS]) != pair.curve_der:
            raise der.DerError(f"the key is not on the curve of {pair.name}")
        return der.ec_private_pkcs8(pair, a[Attribute.VALUE])

    def _read_pair(self, pair: der.PairSpec, public: Any, private: Any) -> tuple[bytes, bytes]:
        try:
            spki, pkcs8 = self._private_der(pair, private)
        except der.DerError as exc:
            raise TokenError(f"the token made a broken {pair.name} key: {exc}") from None
        if spki != self._read_public(pair, public):
            raise TokenError(f"the token's {pair.name} public key does not match its private key")
        return spki, pkcs8

    def _wrap(self, master: Any, pair: der.PairSpec, private: Any) -> WrappedKey:
        name = self._wrap_mechanism
        assert name is not None  # checked by the caller before generating
        iv = bytes(self._session.generate_random(8 * IV_BYTES)) if name == GCM else b""
        mechanism, param = self._wrap_params(name, iv)
        data = master.wrap_key(private, mechanism=mechanism, mechanism_param=param)
        return WrappedKey(mechanism=name, spec=pair.name, data=iv + bytes(data))

    def _unwrap(self, master: Any, pair: der.PairSpec, name: str, data: bytes) -> bytes:
        iv, blob = (data[:IV_BYTES], data[IV_BYTES:]) if name == GCM else (b"", data)
        mechanism, param = self._wrap_params(name, iv)
        obj = master.unwrap_key(
            ObjectClass.PRIVATE_KEY,
            KeyType.RSA if pair.kind == "RSA" else KeyType.EC,
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
            _, pkcs8 = self._private_der(pair, obj)
        except der.DerError as exc:
            raise IntegrityError(f"the wrapped key is not a valid {pair.name} key: {exc}") from None
        finally:
            self._destroy(obj)
        return pkcs8

    @staticmethod
    def _destroy(*objs: Any) -> None:
        for obj in objs:
            if obj is not None:
                with contextlib.suppress(errors.PKCS11Error):
                    obj.destroy()
