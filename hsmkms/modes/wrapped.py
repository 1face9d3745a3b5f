"""The wrapped mode (``master_keys = "wrapped"``, DESIGN decision 9): key materials in the
store, each wrapped under a token-resident domain key, for more keys than a token holds.

A material is generated on the token as a session object, wrapped there under the active
domain key (hsm/wrapping.py), and only the wrap is stored (store/wraps.py); on first use in a
process it is unwrapped into a sensitive, never-extractable session object, kept among a
bounded number of loaded keys (``loaded_keys``; the least recently used destroyed), and every
verb then runs on it as the token mode's run on token objects. A cold key costs one store read
and one C_UnwrapKey, never a search; the token holds the domain keys (and the import wrapping
keys), whatever the number of KMS keys.

Materials that are token objects are served as :class:`TokenObjects` serves them: those made
in the token mode before a home moved to this one (never extractable, so they cannot be
wrapped out: see ``hsmkms migrate``), imported materials (the import unwraps them into token
objects), and keys of a kind the token cannot unwrap (SoftHSM2 2.6.1: Ed25519), found at the
first such key and logged. The same class runs the token mode of a home that still holds wraps
(``new_materials="token"``): a move back to the token mode in progress.

Rotating the domain key (:meth:`rotate_domain_key`) makes a new one active; the old one retires
while :meth:`maintain` (the server's scheduler, or ``hsmkms domain-key rotate``) rewraps its
materials in batches, each batch one transaction that moves only wraps still under it; the old
key is destroyed once none is left. Every step can be interrupted and resumed: a wrap is under
one domain key or the other, both on the token until the end, and a process that read a wrap
under a key destroyed meanwhile reads it again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from hsmkms import hsm
from hsmkms.modes.token_objects import DOMAIN_LABEL, MATERIAL_BYTES, TokenObjects
from hsmkms.service.masterkeys import HeldMaterial, ImportedMaterial, WrappedPrivateKey
from hsmkms.specs import (
    DataKeyPairSpec,
    EncryptionAlgorithm,
    KeySpec,
    KeyUsage,
    MacAlgorithm,
    SigningAlgorithm,
    WrappingAlgorithm,
)
from hsmkms.store import Store
from hsmkms.store.wraps import (
    ACTIVE,
    DESTROYED,
    RETIRED,
    RETIRING,
    Rewrap,
    WrappedMaterialRecord,
)

log = logging.getLogger("hsmkms.wrapped")

T = TypeVar("T")

_USES = {
    KeyUsage.SIGN_VERIFY: "sign",
    KeyUsage.ENCRYPT_DECRYPT: "decrypt",
    KeyUsage.KEY_AGREEMENT: "derive",
}


def domain_label(created: datetime) -> str:
    return f"{DOMAIN_LABEL}{int(created.timestamp())}"


@dataclass(frozen=True)
class RotationProgress:
    """Where the domain-key rotations stand: wraps moved by this call, wraps still under a
    retiring key, and domain keys destroyed by this call."""

    moved: int
    left: int
    destroyed: int


class WrappedMaterials:
    """:class:`hsmkms.service.masterkeys.MasterKeys` with materials wrapped in ``store``."""

    def __init__(
        self,
        token: hsm.Token,
        store: Store,
        *,
        token_pairs: bool = False,
        new_materials: str = "wrapped",
    ) -> None:
        self.token = token
        self.store = store
        self.objects = TokenObjects(token, token_pairs=token_pairs)
        self.wrapping = token.wrapping
        self.new_wrapped = new_materials == "wrapped"
        self._domain: str | None = None  # the active domain key, as last read
        self._token_only: set[KeySpec] = set()  # kinds this token could not unwrap
        self._domain_checks: dict[str, list[str]] = {}  # doctor: each domain key's, once
        self._stuck: set[str] = set()  # materials whose wrap would not rewrap (logged once)
        self._first_lock = threading.Lock()  # one first domain key per process, not one each

    @property
    def pair_specs(self) -> frozenset[DataKeyPairSpec]:
        return self.objects.pair_specs

    # -- new materials -----------------------------------------------------------------------

    def create(self, key_id: str, created: datetime) -> str:
        if not self.new_wrapped:
            return self.objects.create(key_id, created)
        return self._make(key_id, created, KeySpec.SYMMETRIC_DEFAULT, None)[0]

    def create_private_key(
        self, key_id: str, created: datetime, spec: KeySpec, usage: KeyUsage
    ) -> tuple[str, bytes]:
        if not self.new_wrapped or spec in self._token_only:
            return self.objects.create_private_key(key_id, created, spec, usage)
        try:
            mid, public = self._make(key_id, created, spec, _USES[usage])
        except (hsm.MechanismUnsupported, hsm.IntegrityError) as exc:
            # A token that cannot wrap or unwrap a kind of private key (SoftHSM2 2.6.1:
            # Ed25519, CKR_KEY_NOT_WRAPPABLE; NSS: EC keys, CKR_TEMPLATE_INCOMPLETE): such
            # keys stay token objects, as in the token mode (doctor counts them).
            log.warning("%s keys stay token objects: the token cannot unwrap them (%s)", spec, exc)
            self._token_only.add(spec)
            return self.objects.create_private_key(key_id, created, spec, usage)
        assert public is not None
        return mid, public

    def create_hmac_key(self, key_id: str, created: datetime, spec: KeySpec) -> str:
        if not self.new_wrapped:
            return self.objects.create_hmac_key(key_id, created, spec)
        return self._make(key_id, created, spec, None)[0]

    def _make(
        self, key_id: str, created: datetime, spec: KeySpec, use: str | None
    ) -> tuple[str, bytes | None]:
        """Generate, wrap, unwrap once (the wrap opens, and the key is loaded for its first
        use), then store the wrap: under the domain key still active at that moment."""
        for _ in range(3):
            domain = self.active_domain()
            raw = bytes.fromhex(domain)
            wrapped = self.wrapping.generate(raw, spec, use)
            mid = self.token.random(MATERIAL_BYTES)
            try:
                self.wrapping.load(mid, raw, wrapped, spec, use)
            except hsm.TokenError as exc:
                if isinstance(exc, hsm.TokenUnavailable | hsm.KeyNotFound):
                    raise
                raise hsm.MechanismUnsupported(
                    f"a wrapped {spec} key does not unwrap: {exc}"
                ) from None
            record = WrappedMaterialRecord(
                material_id=mid.hex(), key_id=key_id, spec=spec.value, use=use, domain_id=domain,
                mechanism=wrapped.mechanism, wrapped=wrapped.data,
                public_key=wrapped.public_key, created_at=created,
            )  # fmt: skip
            try:
                stored = self.store.put_wrap(record)
            except BaseException:
                self.wrapping.unload(mid)
                raise
            if stored:
                return mid.hex(), wrapped.public_key
            self.wrapping.unload(mid)
            self._domain = None  # a rotation made another domain key active meanwhile
        raise hsm.TokenError("the active domain key changed three times while a key was made")

    # -- domain keys ---------------------------------------------------------------------------

    def active_domain(self) -> str:
        """The active domain key's id (made now if the home has none yet)."""
        if self._domain is not None:
            return self._domain
        with self._first_lock:
            for _ in range(2):
                active = [k for k in self.store.domain_keys() if k.state == ACTIVE]
                if active:
                    self._domain = active[-1].domain_id
                    return self._domain
                # The home's first: made once, whatever the number of processes and requests
                # that ask at once (another process's may win; ours is destroyed then).
                made = self._new_domain_key(first=True)
                if made is not None:
                    return made
        raise hsm.TokenError("no domain key became active")

    def rotate_domain_key(self) -> str:
        """A new domain key on the token, active from now on; the one before retires (its
        materials move by :meth:`maintain`). The id of the new one."""
        made = self._new_domain_key(first=False)
        assert made is not None
        return made

    def _new_domain_key(self, *, first: bool) -> str | None:
        created = datetime.now(UTC)
        new = self.token.random(MATERIAL_BYTES)
        self.wrapping.create_domain_key(new, domain_label(created))
        try:
            added = self.store.add_domain_key(new.hex(), created, first=first)
        except BaseException:
            self._destroy_unrecorded(new)
            raise
        if not added:
            self._destroy_unrecorded(new)
            return None
        log.info("domain key %s is active", new.hex()[:16])
        self._domain = new.hex()
        return self._domain

    def _destroy_unrecorded(self, domain_id: bytes) -> None:
        try:
            self.token.destroy_master_key(domain_id)
        except hsm.TokenError:
            log.warning("domain key %s was never recorded and is left on the token (label "
                        "%s..., nothing is wrapped under it)", domain_id.hex()[:16],
                        DOMAIN_LABEL)  # fmt: skip

    def maintain(self, still: Callable[[], bool] = lambda: True, *, batch: int = 256) -> None:
        """The background part of a domain-key rotation (called by the server's scheduler):
        rewrap what is under retiring keys, a batch at a time while ``still()``."""
        while still():
            progress = self.rewrap_step(batch=batch)
            if not progress.moved and not progress.destroyed:
                return

    def rewrap_step(self, *, batch: int = 256) -> RotationProgress:
        """One batch of a rotation: up to ``batch`` wraps moved from a retiring domain key to
        the active one (one transaction), or, when none is left under it, the key retired and
        destroyed. What was done, and how many wraps are still under retiring keys."""
        keys = self.store.domain_keys()
        active = [k.domain_id for k in keys if k.state == ACTIVE]
        moved = destroyed = 0
        for key in keys:
            if key.state == RETIRED:
                destroyed += self._destroy_domain_key(key.domain_id)
            elif key.state == RETIRING and active:
                moved += self._rewrap_batch(key.domain_id, active[-1], batch)
                if not moved and self.store.retire_domain_key(key.domain_id):
                    destroyed += self._destroy_domain_key(key.domain_id)
            if moved or destroyed:
                break
        left = sum(self.store.count_wraps(k.domain_id) for k in keys if k.state == RETIRING)
        return RotationProgress(moved, left, destroyed)

    def _rewrap_batch(self, old: str, new: str, batch: int) -> int:
        """Up to ``batch`` wraps under ``old`` moved under ``new``. A wrap that does not open
        (damaged, or not a key of its spec) is left where it is and named in the log once:
        the old domain key then stays (it is all that could open it, were it repaired), the
        rotation moves the rest, and ``doctor --deep`` reports that one."""
        moves: list[Rewrap] = []
        after = ""
        while len(moves) < batch and (page := self.store.wraps(domain_id=old, after=after)):
            for w in page:
                if w.material_id in self._stuck or len(moves) >= batch:
                    continue
                try:
                    again = self.wrapping.rewrap(
                        bytes.fromhex(old), bytes.fromhex(new),
                        hsm.Wrapped(w.mechanism, w.wrapped), w.spec, w.use,
                    )  # fmt: skip
                except (hsm.IntegrityError, hsm.MechanismUnsupported, ValueError) as exc:
                    self._stuck.add(w.material_id)
                    log.error(
                        "key material %s of key %s does not rewrap (%s): it stays under domain "
                        "key %s, which stays too", w.material_id, w.key_id, exc, old[:16],
                    )  # fmt: skip
                    continue
                moves.append(Rewrap(w.material_id, old, new, again.mechanism, again.data))
            after = page[-1].material_id
        return self.store.rewrap(moves)

    def _destroy_domain_key(self, domain_id: str) -> int:
        try:
            self.token.destroy_master_key(bytes.fromhex(domain_id))
        except hsm.KeyNotFound:
            pass  # destroyed before a crash, not yet recorded
        self.store.set_domain_key_state(domain_id, DESTROYED)
        log.info("domain key %s destroyed: no material is wrapped under it", domain_id[:16])
        return 1

    # -- use -----------------------------------------------------------------------------------

    def _use(self, material_id: str, call: Callable[[], T]) -> T:
        """``call`` on the material, loading it from its wrap first if it is not loaded (or
        was pushed out, or died with a re-initialised token, meanwhile)."""
        if not self.token.has_master(bytes.fromhex(material_id)):
            self.load(material_id)
        try:
            return call()
        except hsm.KeyNotFound:
            if not self.load(material_id):
                raise
            return call()

    def load(self, material_id: str) -> bool:
        """Unwrap the material's wrap into a loaded session object; False: it has no wrap
        (a token object, or nothing: the token's lookup says which)."""
        if hsm.NO_SEARCH.get():  # on the event loop: a store read and an unwrap may wait
            raise hsm.WouldSearch(f"key material {material_id} is not loaded")
        wrap = self.store.get_wrap(material_id)
        for _ in range(3):
            if wrap is None:
                return False
            try:
                self.wrapping.load(
                    bytes.fromhex(material_id), bytes.fromhex(wrap.domain_id),
                    hsm.Wrapped(wrap.mechanism, wrap.wrapped), wrap.spec, wrap.use,
                )  # fmt: skip
                return True
            except hsm.KeyNotFound:
                # Its domain key was destroyed: a rotation moved this wrap after we read it.
                again = self.store.get_wrap(material_id)
                if again is not None and again.domain_id == wrap.domain_id:
                    raise hsm.KeyNotFound(
                        f"key material {material_id} is wrapped under domain key "
                        f"{wrap.domain_id[:16]}..., which is not on the token"
                    ) from None
                wrap = again
        return False

    def sign(self, material_id: str, algorithm: SigningAlgorithm, data: bytes) -> bytes:
        return self._use(material_id, lambda: self.objects.sign(material_id, algorithm, data))

    def decrypt(self, material_id: str, algorithm: EncryptionAlgorithm, ciphertext: bytes) -> bytes:
        return self._use(
            material_id, lambda: self.objects.decrypt(material_id, algorithm, ciphertext)
        )

    def derive(self, material_id: str, peer_point: bytes, length: int) -> bytes:
        return self._use(material_id, lambda: self.objects.derive(material_id, peer_point, length))

    def mac(self, material_id: str, algorithm: MacAlgorithm, message: bytes) -> bytes:
        return self._use(material_id, lambda: self.objects.mac(material_id, algorithm, message))

    def verify_mac(
        self, material_id: str, algorithm: MacAlgorithm, message: bytes, mac: bytes
    ) -> bool:
        return self._use(
            material_id, lambda: self.objects.verify_mac(material_id, algorithm, message, mac)
        )

    def seal(self, material_id: str, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._use(material_id, lambda: self.objects.seal(material_id, iv, plaintext, aad))

    def unseal(self, material_id: str, iv: bytes, sealed: bytes, aad: bytes) -> bytes:
        return self._use(material_id, lambda: self.objects.unseal(material_id, iv, sealed, aad))

    def key_pair(self, spec: DataKeyPairSpec) -> tuple[bytes, bytes]:
        return self.objects.key_pair(spec)

    def key_pair_sealed(
        self, material_id: str, spec: DataKeyPairSpec
    ) -> tuple[bytes, WrappedPrivateKey]:
        return self._use(material_id, lambda: self.objects.key_pair_sealed(material_id, spec))

    def unseal_private_key(self, material_id: str, wrapped: WrappedPrivateKey) -> bytes:
        return self._use(material_id, lambda: self.objects.unseal_private_key(material_id, wrapped))

    # -- the rest ------------------------------------------------------------------------------

    def destroy(self, material_id: str) -> None:
        if self.store.get_wrap(material_id) is None:
            self.objects.destroy(material_id)
            return
        self.wrapping.unload(bytes.fromhex(material_id))
        self.store.delete_wrap(material_id)

    def create_wrapping_key(self, key_id: str, created: datetime, bits: int) -> tuple[str, bytes]:
        return self.objects.create_wrapping_key(key_id, created, bits)

    def destroy_wrapping_key(self, wrapping_id: str) -> None:
        self.objects.destroy_wrapping_key(wrapping_id)

    def import_material(
        self,
        wrapping_id: str,
        algorithm: WrappingAlgorithm,
        encrypted: bytes,
        key_id: str,
        created: datetime,
        spec: KeySpec,
        usage: KeyUsage,
    ) -> ImportedMaterial:
        return self.objects.import_material(
            wrapping_id, algorithm, encrypted, key_id, created, spec, usage
        )

    def holds(self, material_id: str) -> bool:
        wrap = self.store.get_wrap(material_id)
        if wrap is None:
            return self.objects.holds(material_id)
        return self.token.has_master_key(bytes.fromhex(wrap.domain_id))

    def ready(self, material_id: str) -> bool:
        return self.token.has_master(bytes.fromhex(material_id))

    def random(self, n: int) -> bytes:
        return self.objects.random(n)

    def refresh(self) -> None:
        self.objects.refresh()

    def status(self) -> dict[str, Any]:
        return {
            **self.objects.status(),
            "master_keys": "wrapped" if self.new_wrapped else "token",
            "loaded_keys": self.wrapping.loaded(),
        }

    def inventory(self) -> dict[str, HeldMaterial]:
        """Token objects, and the wraps whose domain key is on the token (a wrap under a
        domain key the token lacks holds nothing anybody can use: doctor finds it missing)."""
        held = self.objects.inventory()
        present: dict[str, bool] = {}
        after = ""
        while page := self.store.wraps(after=after, limit=5000):
            for w in page:
                if w.domain_id not in present:
                    present[w.domain_id] = self.token.has_master_key(bytes.fromhex(w.domain_id))
                if present[w.domain_id]:
                    label = f"wrapped under domain key {w.domain_id[:16]}"
                    held[w.material_id] = HeldMaterial(
                        w.material_id, label, w.key_id, w.created_at, wrapped_under=w.domain_id
                    )
            after = page[-1].material_id
        return held

    def unsound(self, material_id: str, *, imported: bool = False) -> list[str]:
        wrap = self.store.get_wrap(material_id)
        if wrap is None:
            return self.objects.unsound(material_id, imported=imported)
        if wrap.domain_id not in self._domain_checks:
            self._domain_checks[wrap.domain_id] = self.objects.unsound(wrap.domain_id)
        reasons = [f"domain key: {r}" for r in self._domain_checks[wrap.domain_id]]
        try:
            check = self.wrapping.check(
                bytes.fromhex(wrap.domain_id), hsm.Wrapped(wrap.mechanism, wrap.wrapped),
                wrap.spec, wrap.use,
            )  # fmt: skip
        except hsm.KeyNotFound:
            return [*reasons, f"its domain key {wrap.domain_id[:16]}... is not on the token"]
        except hsm.IntegrityError:
            return [*reasons, f"its wrap does not open under domain key {wrap.domain_id[:16]}..."]
        for name, bad in (
            ("CKA_SENSITIVE false once unwrapped", not check.sensitive),
            ("CKA_EXTRACTABLE true once unwrapped", check.extractable),
            ("its value was readable", check.value_readable),
            ("it could be wrapped out", check.wrappable),
            (
                f"{check.bits}-bit, not 256",
                wrap.spec == KeySpec.SYMMETRIC_DEFAULT and check.bits not in (0, 256),
            ),
        ):
            if bad:
                reasons.append(name)
        return reasons

    def objects_for(self, spec: KeySpec) -> int:
        if not self.new_wrapped or spec in self._token_only:
            return 1
        return 0  # Ed25519 before the first one found out: counted when it falls back

    def token_materials(self, recorded: int) -> int:
        return recorded - self.store.count_wraps()

    def close(self) -> None:
        self.objects.close()
