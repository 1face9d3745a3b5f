"""``hsmkms doctor``: the store and the token cross-checked.

The store is the source of truth for which key materials exist, the token holds them. Two
kinds of drift are possible, and they are not alike:

* **Missing material** — a material the store records is not on the token. Every ciphertext
  under it (for a signing, key agreement or MAC key: the key's use) is lost unless the token
  object comes back (a restored backup, the right token): real drift, exit status 1. One
  case is expected and harmless: a key whose deletion is due, whose material the deletion
  sweep destroyed before a crash kept it from removing the record; the next sweep finishes it.
* **Orphans** — a key object on the token (a master key, a private key, an HMAC key) that no
  record names. CreateKey (and rotation) makes the token object first and commits the record
  second, so a crash or a store failure in between leaves one: expected and harmless (nothing
  was ever encrypted or signed under it, since no request could name it). ``--fix`` destroys
  orphans older than a safety margin; a younger one may be a creation whose record is being
  written right now, and is left alone.

A key material is a token object of one kind, told by the key's KeySpec: an AES master key
(a symmetric key, or a post-quantum key whose seed is sealed under it: service/host_keys.py),
an RSA, EC or EDWARDS private key (another asymmetric key), an HMAC key. The report counts
the store's materials by kind and names the kind of each one it finds wrong.

The store is read before the token: a key created during the check then shows up as a
(young) orphan, never as missing material. Every missing-material finding is checked once
more, store then token, before it is reported, so a deletion that completes during the check
is not reported either.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hsmkms import hsm
from hsmkms.service.masterkeys import MasterKeys
from hsmkms.specs import Family, ImportState, KeySpec, KeyState, KeyUsage
from hsmkms.store import KeyRecord, Store

log = logging.getLogger("hsmkms.doctor")

# Orphans younger than this are not destroyed by --fix: a CreateKey may still be writing the
# record (it waits up to the store's busy timeout, 10 s by default). An hour leaves room for
# clocks that disagree between the nodes of a cluster.
DEFAULT_MIN_AGE = timedelta(hours=1)


@dataclass(frozen=True)
class Missing:
    """A material the store records and the token does not hold."""

    key_id: str
    material_id: str
    key_state: str
    # True for a key whose deletion is due: the sweep destroyed the material and was
    # interrupted before it removed the record; the next sweep finishes.
    deletion_in_progress: bool
    key_spec: str = ""
    key_usage: str = ""
    kind: str = ""  # of the token object: AES (a master key), RSA, EC, EDWARDS, HMAC


@dataclass(frozen=True)
class Orphan:
    """A key object on the token that no record names."""

    material_id: str
    label: str
    key_id: str | None  # from the label; None for an object hsmkms did not label
    created: str | None  # ISO 8601, from the label
    age_seconds: float | None
    key_exists: bool  # the key has a record (an interrupted rotation) or not (CreateKey)
    destroyed: bool = False


@dataclass(frozen=True)
class Unsealed:
    """A key object whose attributes let its secret out (``--deep``)."""

    material_id: str
    key_id: str
    why: str
    key_spec: str = ""
    kind: str = ""


@dataclass
class Report:
    keys: int = 0
    materials: int = 0
    master_keys: int = 0
    wrapped: int = 0  # of them, materials wrapped in the store (the wrapped mode)
    domain_keys: int = 0  # the domain keys those are wrapped under
    missing: list[Missing] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    unsealed: list[Unsealed] = field(default_factory=list)
    checked_attributes: bool = False
    # The store's materials by the kind of their token object (AES, RSA, EC, EDWARDS, HMAC),
    # and (``--deep``) how many of those on the token had their attributes checked.
    kinds: dict[str, int] = field(default_factory=dict)
    checked: int = 0
    # Keys whose private key runs on the host (DESIGN decision 13): key id -> why.
    host_keys: dict[str, str] = field(default_factory=dict)
    # What start-up found the token does, by the setting that names it (hsm/profile.py).
    token: dict[str, str] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        """Real drift: material lost (not by a deletion in progress) or extractable."""
        return any(not m.deletion_in_progress for m in self.missing) or bool(self.unsealed)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drift"] = self.drift
        return out

    def lines(self) -> list[str]:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.kinds.items()))
        out = [
            f"store: {self.keys} keys, {self.materials} key materials"
            + (f" ({kinds})" if kinds else "")
            + f"; token: {self.master_keys - self.wrapped} key objects"
            + (
                f"; wrapped: {self.wrapped} key materials under {self.domain_keys} domain keys"
                if self.wrapped
                else ""
            )
        ]
        for m in self.missing:
            if m.deletion_in_progress:
                out.append(
                    f"deletion in progress: key {m.key_id} ({m.key_state}) "
                    f"{_object(m.kind)} {m.material_id} is gone from the token; the next "
                    "deletion sweep removes the record"
                )
            else:
                out.append(
                    f"MISSING: key {m.key_id} ({m.key_state}, {m.key_spec or 'unknown spec'}) "
                    f"{_object(m.kind)} {m.material_id} is not on the token: "
                    f"{_loss(m.key_usage)}. Restore the token object (from an HSM "
                    "backup) or check --token-label"
                )
        for o in self.orphans:
            age = "age unknown" if o.age_seconds is None else f"{o.age_seconds:.0f} s old"
            whose = f"key {o.key_id}" if o.key_id else f"label {o.label!r}"
            state = "destroyed" if o.destroyed else "left"
            out.append(f"orphan: key object {o.material_id} of {whose}, {age}: {state}")
        for u in self.unsealed:
            out.append(
                f"UNSEALED: key {u.key_id} ({u.key_spec or 'unknown spec'}) "
                f"{_object(u.kind)} {u.material_id}: {u.why}"
            )
        for key_id, why in sorted(self.host_keys.items()):
            out.append(f"host key: key {key_id}: {why}")
        out.extend(f"token: {name} = {value}" for name, value in self.token.items())
        if self.checked_attributes and not self.unsealed:
            out.append(
                f"deep: {self.checked} key objects checked, all sealed (sensitive, never "
                "extractable, not modifiable; the secret unreadable, no wrap let it out)"
            )
        if self.drift:
            out.append("drift: the store and the token disagree (see MISSING/UNSEALED above)")
        else:
            orphans = f", {len(self.orphans)} orphans (harmless)" if self.orphans else ""
            out.append(f"ok: every key material the store records is on the token{orphans}")
        return out


def check(
    store: Store,
    masters: MasterKeys,
    *,
    fix: bool = False,
    min_age: timedelta = DEFAULT_MIN_AGE,
    deep: bool = False,
    now: datetime | None = None,
) -> Report:
    """Cross-check ``store`` and the materials ``masters`` holds; with ``fix``, destroy
    orphans hsmkms named that are older than ``min_age``.

    Raises :class:`hsmkms.hsm.TokenError` or :class:`hsmkms.store.StoreError` when either
    cannot be read: then nothing can be concluded.
    """
    when = now or datetime.now(UTC)
    report = Report(checked_attributes=deep)
    # The store first, the token second (see the module docstring).
    recorded = store.all_materials()
    held = masters.inventory()
    report.materials = len(recorded)
    report.master_keys = len(held)
    under = [h.wrapped_under for h in held.values() if h.wrapped_under]
    report.wrapped, report.domain_keys = len(under), len(set(under))
    keys: dict[str, KeyRecord | None] = {}
    for material in recorded:
        if material.key_id not in keys:
            keys[material.key_id] = store.get_key(material.key_id)
    # The materials of keys in AWS_CLOUDHSM custom key stores are on those stores' tokens.
    elsewhere = {
        key_id
        for key_id, key in keys.items()
        if key is not None
        and key.custom_key_store_id
        and (cks := store.get_custom_key_store(key.custom_key_store_id)) is not None
        and cks.store_type == "AWS_CLOUDHSM"
    }
    recorded = [m for m in recorded if m.key_id not in elsewhere]
    report.materials = len(recorded)
    report.keys = sum(1 for k in keys.values() if k is not None)
    for material in recorded:
        if kind := _kind_of(keys[material.key_id]):
            report.kinds[kind] = report.kinds.get(kind, 0) + 1
        if material.sealed_private is not None:
            report.host_keys[material.key_id] = (
                f"{_spec_of(keys[material.key_id])}: the token has no such mechanism, so its "
                "private seed is sealed under master key "
                f"{material.material_id} and unsealed on the host for each operation"
            )

    recorded_ids = {m.material_id for m in recorded}
    for material in recorded:
        mid = material.material_id
        imported = material.import_state is not None
        if imported and material.import_state != ImportState.IMPORTED:
            continue  # deleted or expired on purpose: absent from the token, as it should be
        if mid in held:
            if deep:
                report.checked += 1
                if reasons := masters.unsound(mid, imported=imported):
                    spec = _spec_of(keys[material.key_id])
                    why = ", ".join(reasons)
                    report.unsealed.append(Unsealed(mid, material.key_id, why, spec, _kind(spec)))
            continue
        finding = _confirm_missing(store, masters, material.key_id, mid, when)
        if finding is not None:
            report.missing.append(finding)

    for mid, found in sorted(held.items()):
        if mid in recorded_ids:
            continue
        created = found.created
        age = (when - created).total_seconds() if created else None
        orphan = Orphan(
            material_id=mid,
            label=found.label,
            key_id=found.key_id,
            created=created.isoformat() if created else None,
            age_seconds=age,
            key_exists=bool(found.key_id and store.get_key(found.key_id) is not None),
        )
        if fix and age is not None and age >= min_age.total_seconds():
            orphan = _destroy_orphan(store, masters, orphan)
        report.orphans.append(orphan)
    return report


def _confirm_missing(
    store: Store, masters: MasterKeys, key_id: str, mid: str, when: datetime
) -> Missing | None:
    """Read both sides once more: a key deleted, or a material added, during the check is
    not drift."""
    key = store.get_key(key_id)
    if key is None or mid not in {m.material_id for m in store.materials(key_id)}:
        return None  # deleted meanwhile
    if masters.holds(mid):
        return None
    due = (
        key.state == KeyState.PENDING_DELETION
        and key.deletion_date is not None
        and key.deletion_date <= when
    )
    spec = _spec_of(key)
    return Missing(key_id, mid, key.state, due, spec, str(key.key_usage), _kind(spec))


def _spec_of(key: KeyRecord | None) -> str:
    return "" if key is None else str(key.key_spec)


def _kind_of(key: KeyRecord | None) -> str:
    return _kind(_spec_of(key))


def _kind(key_spec: str) -> str:
    """The kind of token object a KeySpec's material is, as ``--deep`` reads it: AES for a
    master key, RSA, EC or EDWARDS for a private key, HMAC; "" for a spec unknown here."""
    try:
        family = KeySpec(key_spec).family
    except ValueError:
        return ""
    return str(family if family in _TOKEN_KINDS else Family.AES)


# Families whose private key (or HMAC key) is itself the token object; any other family's
# material is a master key (ML-DSA, ML-KEM: their seed is sealed under it).
_TOKEN_KINDS = frozenset({Family.AES, Family.RSA, Family.EC, Family.EDWARDS, Family.HMAC})


def _object(kind: str) -> str:
    if not kind:
        return "key material"
    if kind == Family.AES:
        return "master key"
    if kind == Family.HMAC:
        return "HMAC key"
    return f"{kind} private key"


def _loss(usage: str) -> str:
    """What a key can no longer do without its material."""
    return _LOSSES.get(usage, "the key cannot be used")


_LOSSES: dict[str, str] = {
    KeyUsage.ENCRYPT_DECRYPT: "its ciphertexts cannot be decrypted",
    KeyUsage.ENCAPSULATE_DECAPSULATE: "the key cannot decapsulate",
    KeyUsage.SIGN_VERIFY: "the key cannot sign",
    KeyUsage.KEY_AGREEMENT: "the key cannot derive shared secrets",
    KeyUsage.GENERATE_VERIFY_MAC: "the key cannot make or verify MACs",
}


def _destroy_orphan(store: Store, masters: MasterKeys, orphan: Orphan) -> Orphan:
    """Destroy one orphan, unless a record names it after all (written since the check read
    the store: impossible for an orphan older than the margin, but cheap to rule out)."""
    mid = orphan.material_id
    if orphan.key_id is not None:
        if mid in {m.material_id for m in store.materials(orphan.key_id)}:
            return orphan
    elif mid in store.all_material_ids():
        return orphan
    try:
        masters.destroy(mid)
    except hsm.KeyNotFound:
        pass  # someone else destroyed it: gone either way
    log.warning("destroyed orphan key object %s (%s)", mid, orphan.label)
    return Orphan(**{**asdict(orphan), "destroyed": True})
