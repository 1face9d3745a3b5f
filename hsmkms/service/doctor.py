"""``hsmkms doctor``: the store and the token cross-checked.

The store is the source of truth for which key materials exist, the token holds them. Two
kinds of drift are possible, and they are not alike:

* **Missing material** — a material the store records is not on the token. Every ciphertext
  under it is lost unless the token object comes back (a restored backup, the right token):
  real drift, exit status 1. One case is expected and harmless: a key whose deletion is due,
  whose material the deletion sweep destroyed before a crash kept it from removing the
  record; the next sweep finishes it.
* **Orphans** — a master key on the token that no record names. CreateKey (and rotation)
  makes the token object first and commits the record second, so a crash or a store failure
  in between leaves one: expected and harmless (nothing was ever encrypted under it, since
  no request could name it). ``--fix`` destroys orphans older than a safety margin; a younger
  one may be a creation whose record is being written right now, and is left alone.

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
from hsmkms.specs import KeyState
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


@dataclass(frozen=True)
class Orphan:
    """A master key on the token that no record names."""

    material_id: str
    label: str
    key_id: str | None  # from the label; None for an object hsmkms did not label
    created: str | None  # ISO 8601, from the label
    age_seconds: float | None
    key_exists: bool  # the key has a record (an interrupted rotation) or not (CreateKey)
    destroyed: bool = False


@dataclass(frozen=True)
class Unsealed:
    """A master key whose attributes let its value out (``--deep``)."""

    material_id: str
    key_id: str
    why: str


@dataclass
class Report:
    keys: int = 0
    materials: int = 0
    master_keys: int = 0
    missing: list[Missing] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    unsealed: list[Unsealed] = field(default_factory=list)
    checked_attributes: bool = False

    @property
    def drift(self) -> bool:
        """Real drift: material lost (not by a deletion in progress) or extractable."""
        return any(not m.deletion_in_progress for m in self.missing) or bool(self.unsealed)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drift"] = self.drift
        return out

    def lines(self) -> list[str]:
        out = [
            f"store: {self.keys} keys, {self.materials} key materials; "
            f"token: {self.master_keys} master keys"
        ]
        for m in self.missing:
            if m.deletion_in_progress:
                out.append(
                    f"deletion in progress: key {m.key_id} ({m.key_state}) material "
                    f"{m.material_id} is gone from the token; the next deletion sweep "
                    "removes the record"
                )
            else:
                out.append(
                    f"MISSING: key {m.key_id} ({m.key_state}) material {m.material_id} is "
                    "not on the token: its ciphertexts cannot be decrypted. Restore the "
                    "token object (from an HSM backup) or check --token-label"
                )
        for o in self.orphans:
            age = "age unknown" if o.age_seconds is None else f"{o.age_seconds:.0f} s old"
            whose = f"key {o.key_id}" if o.key_id else f"label {o.label!r}"
            state = "destroyed" if o.destroyed else "left"
            out.append(f"orphan: master key {o.material_id} of {whose}, {age}: {state}")
        for u in self.unsealed:
            out.append(f"UNSEALED: key {u.key_id} material {u.material_id}: {u.why}")
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
    keys: dict[str, KeyRecord | None] = {}
    for material in recorded:
        if material.key_id not in keys:
            keys[material.key_id] = store.get_key(material.key_id)
    report.keys = sum(1 for k in keys.values() if k is not None)

    recorded_ids = {m.material_id for m in recorded}
    for material in recorded:
        mid = material.material_id
        if mid in held:
            if deep and (reasons := masters.unsound(mid)):
                report.unsealed.append(Unsealed(mid, material.key_id, ", ".join(reasons)))
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
    return Missing(key_id, mid, key.state, deletion_in_progress=due)


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
    log.warning("destroyed orphan master key %s (%s)", mid, orphan.label)
    return Orphan(**{**asdict(orphan), "destroyed": True})
