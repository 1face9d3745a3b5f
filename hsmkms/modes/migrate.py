"""Moving a home between the master-key modes, and a domain-key rotation run to its end: the
logic of ``hsmkms migrate`` and ``hsmkms domain-key`` (cli_masterkeys.py; docs/master-keys.md).

**wrapped -> token** (:func:`to_token`). Each wrap, paged by material id, is unwrapped onto the
token as a sealed token object with the material's CKA_ID and label (``Wrapping.store``), the
object is checked to hold the wrap's key (a probe through both, :func:`_holds_the_wrap`), and
only then is the wrap deleted from the store. With no wrap left, every domain key is retired
(one store transaction that finds no wrap under it), its token object destroyed, and marked
destroyed. A kill at any instant leaves one of:

* the wrap and no token object: the next run moves it;
* the wrap and a token object that is half made (SoftHSM2 writes an unwrapped object's
  attributes before its value, in two steps): ``store`` answers that the id is taken, the probe
  fails, and the object is destroyed and made again. The wrap was never deleted;
* the wrap and a whole token object: the probe passes, and the wrap is deleted;
* no wrap and the token object: moved.

A material is always whole in at least one place, and every process serves both (a token-mode
home whose store still holds wraps serves them: compose.master_keys), so no ciphertext is ever
without its key. The domain keys go last, once the store says no wrap is under them; a reader
that read a wrap just before finds it gone when it reads again (WrappedMaterials.load).

**token -> wrapped** (:func:`to_wrapped`). A token-mode material is a token object made never
extractable (CKA_EXTRACTABLE false for good, DESIGN decision 3): nothing can wrap it out, so it
stays where it is and keeps serving its ciphertexts. The home only gains an active domain key;
new materials (CreateKey, rotations) are wraps from then on. Safe to repeat: the domain key is
made once (the store keeps one active), an unfinished rotation is finished.

**A domain-key rotation** (:func:`rotate`): a new domain key made active (the one before
retires), then every wrap under a retiring key rewrapped, a batch per store transaction that
moves only wraps still under their old key, and each emptied key destroyed
(WrappedMaterials.rewrap_step). Run again while one is unfinished, it resumes that one instead
of making another key.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from hsmkms import hsm
from hsmkms.modes.token_objects import DOMAIN_LABEL, MATERIAL_BYTES, material_label
from hsmkms.modes.wrapped import WrappedMaterials
from hsmkms.specs import Family, KeySpec
from hsmkms.store import Store
from hsmkms.store.wraps import ACTIVE, DESTROYED, RETIRED, RETIRING, WrappedMaterialRecord

# A token object with a taken id that fails the probe is looked at again after this long
# before it is destroyed: another process may be finishing it (one migration at a time is the
# rule, cli_masterkeys.py locks the home; this covers what the lock cannot see).
RECHECK_SECONDS = 0.5
# How long a rotation run waits for wraps a concurrent rewrap (a server's scheduler) holds.
PATIENCE_SECONDS = 10.0


class MigrationRefused(Exception):
    """Nothing was done: the message says why, and what to do."""


@dataclass
class ToToken:
    """What :func:`to_token` did: wraps in the store when it began; moved onto the token (of
    which ``resumed`` were on the token already, left by an interrupted run, and ``remade``
    had to be made again: half made by a run killed in the middle); key materials that were
    token objects before; domain keys destroyed; wraps whose material was deleted while it
    moved (its new token object is an orphan: ``hsmkms doctor --fix``); the wraps that could
    not move, and why; wraps and domain keys (not destroyed) still in the store."""

    to_move: int = 0
    moved: int = 0
    resumed: int = 0
    remade: int = 0
    token_objects: int = 0
    domain_keys_destroyed: int = 0
    deleted_meanwhile: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    left: int = 0
    domain_keys_left: int = 0


@dataclass
class Rotation:
    """Where a domain-key rotation stands: the active domain key, whether this call made it
    (False: an unfinished rotation resumed), the keys it replaces, wraps rewrapped and domain
    keys destroyed by this call, wraps still under retiring keys, and whether every retiring
    key is destroyed."""

    domain_id: str
    made: bool
    previous: list[str]
    moved: int = 0
    destroyed: int = 0
    left: int = 0
    finished: bool = False


@dataclass
class ToWrapped:
    """What :func:`to_wrapped` did: the active domain key and whether it made it; the rotation
    it finished, if one was unfinished; token-object materials that stay token objects, by
    reason; wraps in the store."""

    domain_id: str
    made: bool
    rotation: Rotation | None
    stay: dict[str, int]
    wraps: int


@dataclass(frozen=True)
class DomainKeyStatus:
    """One domain key: its id, state (``on the token only``: no record in this store names
    it), when made, wraps under it, and whether the token holds it."""

    domain_id: str
    state: str
    created_at: datetime | None
    wraps: int
    on_token: bool


# -- wrapped -> token ------------------------------------------------------------------------


def to_token(
    masters: WrappedMaterials,
    store: Store,
    *,
    batch: int = 256,
    max_objects: int = 0,
    progress: Callable[[ToToken], None] | None = None,
) -> ToToken:
    """Move every wrap onto the token (module docstring), then destroy the domain keys.
    ``max_objects`` (``token_max_objects``): refuse up front (:class:`MigrationRefused`) when
    the token would then hold more key materials. Safe to interrupt and run again."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    held = set(masters.objects.inventory())  # token-object materials, domain keys aside
    counts = ToToken(token_objects=len(held))
    fresh = 0
    for page in _pages(store, batch=max(batch, 1000)):
        counts.to_move += len(page)
        fresh += sum(1 for w in page if w.material_id not in held)
    counts.token_objects -= counts.to_move - fresh  # moved before an interruption: not yet
    if max_objects and len(held) + fresh > max_objects:
        raise MigrationRefused(
            f"moving {fresh} wrapped key materials onto the token would make "
            f"{len(held) + fresh} key materials there, more than token_max_objects = "
            f"{max_objects}: delete keys you no longer need, or raise token_max_objects if the "
            "HSM has room. Nothing was moved"
        )
    for _ in range(3):  # again if wraps came meanwhile (a server still in the wrapped mode)
        for page in _pages(store, batch=batch):
            for wrap in page:
                _move(masters, store, wrap, counts)
            counts.left = store.count_wraps()
            if progress is not None:
                progress(counts)
        if store.count_wraps() <= len(counts.failed):
            break
    if store.count_wraps() == 0:
        _destroy_domain_keys(masters, store, counts)
    counts.left = store.count_wraps()
    counts.domain_keys_left = len(store.domain_keys())
    if progress is not None:
        progress(counts)
    return counts


def _pages(store: Store, *, batch: int) -> Any:
    after = ""
    while page := store.wraps(after=after, limit=batch):
        yield page
        after = page[-1].material_id


def _move(
    masters: WrappedMaterials, store: Store, wrap: WrappedMaterialRecord, counts: ToToken
) -> None:
    """One material onto the token, then its wrap out of the store (in that order)."""
    mid = bytes.fromhex(wrap.material_id)
    label = material_label(wrap.key_id, mid, wrap.created_at, moved=True)
    made = remade = False
    current: WrappedMaterialRecord | None = wrap
    for _ in range(4):
        if current is None:
            return  # deleted meanwhile (its key's deletion), before anything was made
        try:
            fresh = masters.wrapping.store(
                mid, label, bytes.fromhex(current.domain_id), _wrapped(current),
                current.spec, current.use,
            )  # fmt: skip
            made = made or fresh
            if _holds_the_wrap(masters, current) or (not fresh and _recheck(masters, current)):
                break
        except hsm.KeyNotFound:
            # The wrap's domain key is gone: a rotation moved the wrap after we read it.
            again = store.get_wrap(wrap.material_id)
            if again is not None and again.domain_id == current.domain_id:
                counts.failed[wrap.material_id] = (
                    f"its domain key {current.domain_id[:16]}... is not on the token"
                )
                return
            current = again
            continue
        except (hsm.IntegrityError, hsm.MechanismUnsupported, ValueError) as exc:
            counts.failed[wrap.material_id] = f"its wrap does not open: {exc}"
            return
        if fresh:
            counts.failed[wrap.material_id] = (
                "the token object unwrapped from it does not hold the same key (left as is)"
            )
            return
        # The id is taken by an object that does not hold the wrap's key: one a run killed
        # during C_UnwrapKey half made. The wrap still holds the key: make the object again.
        try:
            masters.token.destroy_master_key(mid)
        except hsm.KeyNotFound:
            pass
        remade = True
        current = store.get_wrap(wrap.material_id)
    else:
        counts.failed[wrap.material_id] = "its token object could not be made"
        return
    counts.remade += remade
    counts.resumed += not made
    masters.wrapping.unload(mid)  # a copy this process may hold: the token object serves now
    if store.delete_wrap(wrap.material_id):
        counts.moved += 1
    else:  # the key's deletion took the wrap meanwhile: what we made is an orphan
        counts.deleted_meanwhile += 1
    counts.failed.pop(wrap.material_id, None)


def _recheck(masters: WrappedMaterials, wrap: WrappedMaterialRecord) -> bool:
    time.sleep(RECHECK_SECONDS)
    return _holds_the_wrap(masters, wrap)


def _wrapped(wrap: WrappedMaterialRecord) -> hsm.Wrapped:
    return hsm.Wrapped(wrap.mechanism, wrap.wrapped, wrap.public_key)


def _holds_the_wrap(masters: WrappedMaterials, wrap: WrappedMaterialRecord) -> bool:
    """Whether the token object with the wrap's material id holds the wrap's key: a probe
    through each (a secret key: through a copy unwrapped under another id; a private key:
    through its public key, on the host). A token that cannot be reached raises; any other
    failure of the token object is a no. KeyNotFound: the wrap's domain key is gone."""
    mid = bytes.fromhex(wrap.material_id)
    token = masters.token
    spec = KeySpec(wrap.spec)
    probe = token.random(32)
    if spec.family in (Family.AES, Family.HMAC):
        copy = token.random(MATERIAL_BYTES)
        masters.wrapping.load(copy, bytes.fromhex(wrap.domain_id), _wrapped(wrap), spec, wrap.use)
        try:
            if spec.family is Family.HMAC:
                name = f"SHA{spec.bits}"
                expected = token.mac(copy, name, probe)
                return _try(lambda: token.mac(mid, name, probe) == expected)
            iv = token.random(12)
            sealed = token.encrypt(copy, iv, probe, b"hsmkms migrate")
            return _try(lambda: token.decrypt(mid, iv, sealed, b"hsmkms migrate") == probe)
        finally:
            masters.wrapping.unload(copy)
    if wrap.public_key is None:
        return False
    public = serialization.load_der_public_key(wrap.public_key)
    if wrap.use == "sign":
        return _try(lambda: _signs(token, mid, public, probe))
    if wrap.use == "decrypt" and isinstance(public, rsa.RSAPublicKey):
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        ciphertext = public.encrypt(probe, oaep)
        return _try(lambda: token.decrypt_oaep(mid, "SHA256", ciphertext) == probe)
    if wrap.use == "derive" and isinstance(public, ec.EllipticCurvePublicKey):
        peer = ec.generate_private_key(public.curve)
        point = peer.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        length = (public.curve.key_size + 7) // 8
        shared = peer.exchange(ec.ECDH(), public)
        return _try(lambda: token.derive(mid, point, length) == shared)
    return False


def _signs(token: hsm.Token, mid: bytes, public: Any, probe: bytes) -> bool:
    digest = hashlib.sha256(probe).digest()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            signature = token.sign(mid, "PKCS1", "SHA256", digest)
            public.verify(signature, probe, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public, ec.EllipticCurvePublicKey):
            signature = token.sign(mid, "ECDSA", "SHA256", digest)
            public.verify(signature, probe, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(token.sign(mid, "EDDSA", "SHA512", probe), probe)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _try(check: Callable[[], bool]) -> bool:
    """``check()`` on the token object; a failure of the object itself (not of the token) is
    a no."""
    try:
        return bool(check())
    except hsm.TokenUnavailable:
        raise
    except hsm.TokenError:
        return False


def _destroy_domain_keys(masters: WrappedMaterials, store: Store, counts: ToToken) -> None:
    """With no wrap left: the active domain key stops taking wraps (retiring: a wrap is only
    written under the active key, in the same transaction), each retiring key is retired if
    still no wrap is under it, and each retired key is destroyed, then marked so."""
    for key in store.domain_keys():
        if key.state == ACTIVE:
            store.set_domain_key_state(key.domain_id, RETIRING)
    for key in store.domain_keys():
        if key.state == RETIRING and not store.retire_domain_key(key.domain_id):
            return  # a wrap came under it: a server still in the wrapped mode
    for key in store.domain_keys():
        if key.state == RETIRED:
            counts.domain_keys_destroyed += _destroy_domain_key(masters, store, key.domain_id)


def _destroy_domain_key(masters: WrappedMaterials, store: Store, domain_id: str) -> int:
    try:
        masters.token.destroy_master_key(bytes.fromhex(domain_id))
    except hsm.KeyNotFound:
        pass  # destroyed before an interruption, not yet recorded
    store.set_domain_key_state(domain_id, DESTROYED)
    return 1


# -- token -> wrapped ------------------------------------------------------------------------

STAYS = {
    "token": "made as token objects (the token mode): never extractable, nothing can wrap them out",
    "imported": "imported: ImportKeyMaterial makes a token object in both modes",
    "ed25519": "Ed25519, never extractable; SoftHSM2 cannot unwrap Ed25519 keys, so new ones "
    "stay token objects too",
    "orphan": "named by no key record (orphans: hsmkms doctor reports them)",
}


def to_wrapped(
    masters: WrappedMaterials,
    store: Store,
    *,
    batch: int = 256,
    progress: Callable[[Rotation], None] | None = None,
) -> ToWrapped:
    """An active domain key for the home (made if it has none), a rotation left unfinished
    finished, and the token-object materials that stay token objects counted by reason."""
    if masters.token.wrap_mechanism is None:
        raise MigrationRefused(
            f"token '{masters.token.label}' wraps with neither CKM_AES_KEY_WRAP_PAD nor "
            "CKM_AES_GCM: it cannot keep key materials wrapped. Nothing was done"
        )
    had = any(k.state == ACTIVE for k in store.domain_keys())
    domain = masters.active_domain()
    rotation = None
    previous = [k.domain_id for k in store.domain_keys() if k.state in (RETIRING, RETIRED)]
    if previous:
        rotation = Rotation(domain, False, previous)
        finish_rotation(masters, store, rotation, batch=batch, progress=progress)
    return ToWrapped(domain, not had, rotation, stays(masters, store), store.count_wraps())


def stays(masters: WrappedMaterials, store: Store) -> dict[str, int]:
    """The materials that are token objects, by why they stay so (:data:`STAYS`)."""
    held = masters.objects.inventory()
    by_material = {m.material_id: m.key_id for m in store.all_materials()}
    keys: dict[str, Any] = {}
    found: dict[str, int] = {}
    for material_id in held:
        key_id = by_material.get(material_id)
        if key_id is None:
            reason = "orphan"
        else:
            if key_id not in keys:
                keys[key_id] = store.get_key(key_id)
            key = keys[key_id]
            if key is not None and key.origin == "EXTERNAL":
                reason = "imported"
            elif key is not None and key.key_spec == KeySpec.ECC_NIST_EDWARDS25519.value:
                reason = "ed25519"
            else:
                reason = "token"
        found[reason] = found.get(reason, 0) + 1
    return found


# -- domain-key rotation ---------------------------------------------------------------------


def rotate(
    masters: WrappedMaterials,
    store: Store,
    *,
    batch: int = 256,
    background: bool = False,
    progress: Callable[[Rotation], None] | None = None,
) -> Rotation:
    """A new active domain key, unless a rotation is unfinished (a key retiring or retired
    beside an active one): that one is resumed, and no key is made. Then, unless
    ``background`` (the servers' scheduler does it: WrappedMaterials.maintain), every wrap
    rewrapped under the active key and each old key destroyed."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    keys = store.domain_keys()
    active = [k.domain_id for k in keys if k.state == ACTIVE]
    previous = [k.domain_id for k in keys if k.state in (RETIRING, RETIRED)]
    if active and previous:
        rotation = Rotation(active[-1], False, previous)
    else:
        rotation = Rotation(masters.rotate_domain_key(), True, [k.domain_id for k in keys])
    rotation.left = sum(store.count_wraps(d) for d in rotation.previous)
    if background:
        return rotation
    return finish_rotation(masters, store, rotation, batch=batch, progress=progress)


def finish_rotation(
    masters: WrappedMaterials,
    store: Store,
    rotation: Rotation,
    *,
    batch: int = 256,
    progress: Callable[[Rotation], None] | None = None,
    patience: float = PATIENCE_SECONDS,
) -> Rotation:
    """Rewrap steps until no key is retiring or retired; a step that finds every wrap of its
    batch moved by another process (a server's scheduler) is tried again, for ``patience``
    seconds without progress at most."""
    idle_since = None
    while True:
        step = masters.rewrap_step(batch=batch)
        rotation.moved += step.moved
        rotation.destroyed += step.destroyed
        rotation.left = step.left
        if step.moved or step.destroyed:
            idle_since = None
            if progress is not None:
                progress(rotation)
            continue
        unfinished = [k for k in store.domain_keys() if k.state in (RETIRING, RETIRED)]
        has_active = any(k.state == ACTIVE for k in store.domain_keys())
        if not unfinished or not has_active:
            break
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since > patience:
            break
        time.sleep(0.1)
    rotation.finished = not any(k.state in (RETIRING, RETIRED) for k in store.domain_keys())
    rotation.left = sum(
        store.count_wraps(k.domain_id) for k in store.domain_keys() if k.state == RETIRING
    )
    return rotation


def domain_status(masters: WrappedMaterials, store: Store) -> list[DomainKeyStatus]:
    """Every domain key the store records (destroyed ones aside), then those on the token that
    no record of this store names (an interrupted rotation's, or another home's)."""
    on_token = {
        mid.hex(): label
        for mid, label in masters.token.list_master_keys()
        if label.startswith(DOMAIN_LABEL)
    }
    found = [
        DomainKeyStatus(
            k.domain_id,
            k.state,
            k.created_at,
            store.count_wraps(k.domain_id),
            k.domain_id in on_token,
        )  # fmt: skip
        for k in store.domain_keys()
    ]
    recorded = {k.domain_id for k in found}
    for domain_id in sorted(set(on_token) - recorded):
        made = on_token[domain_id][len(DOMAIN_LABEL) :]
        created = datetime.fromtimestamp(int(made), UTC) if made.isdigit() else None
        found.append(DomainKeyStatus(domain_id, "on the token only", created, 0, True))
    return found
