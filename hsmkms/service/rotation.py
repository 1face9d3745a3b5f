"""Key material rotation: EnableKeyRotation, DisableKeyRotation, GetKeyRotationStatus,
RotateKeyOnDemand, ListKeyRotations, and the automatic rotation the scheduler performs.

A rotation is a new master key object on the token (its CKA_ID is the new KeyMaterialId) that
becomes the key's current material: new ciphertexts use it; every older material stays on the
token, so that the blobs that name it still decrypt, until the key itself is deleted.

AWS behaviour copied (Developer Guide "Rotate AWS KMS keys", "Key states of AWS KMS keys",
"Resource quotas"; the API reference of each operation):

- RotationPeriodInDays is 90..2560, 365 when omitted. The first automatic rotation comes one
  period after EnableKeyRotation. Enabling again with the same period changes nothing; with
  another period, the next rotation moves to one new period after the last one.
- Automatic rotation skips Disabled and PendingDeletion keys. A key re-enabled after its
  rotation date rotates at once, then every period after that (no catch-up burst).
- While a key is PendingDeletion, GetKeyRotationStatus answers KeyRotationEnabled false;
  CancelKeyDeletion brings the setting back.
- RotateKeyOnDemand: at most 25 per key in its life (a quota AWS does not raise),
  LimitExceededException past them. ConflictException while an automatic rotation of the key
  is in progress or due within 20 minutes, and while another on-demand rotation of it is in
  progress. On-demand rotations leave the automatic schedule alone.
- Enable/DisableKeyRotation and RotateKeyOnDemand: DisabledException on a Disabled key,
  KMSInvalidStateException on a PendingDeletion one. GetKeyRotationStatus and
  ListKeyRotations answer in every state. Only GetKeyRotationStatus works across accounts.
- ListKeyRotations lists completed rotations (KeyMaterialId, RotationDate, RotationType,
  KeyMaterialState), oldest first; IncludeKeyMaterial=ALL_KEY_MATERIAL adds the first material.

Unlike AWS, RotateKeyOnDemand has finished when it answers (a token object takes milliseconds
to make), so GetKeyRotationStatus shows OnDemandRotationStartDate only while a request is
rotating the key. Either way, at most one rotation of a key runs at a time: the rotation lease
``rotation:<key id>`` in the store, across processes and nodes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from hsmkms import errors
from hsmkms.service.core import (
    Request,
    check_enabled,
    now,
    operation,
    validation,
)
from hsmkms.service.keys import page_limit
from hsmkms.specs import (
    ImportState,
    IncludeKeyMaterial,
    KeyMaterialState,
    KeySpec,
    KeyState,
    Origin,
    RotationType,
)
from hsmkms.store import KeyRecord, MaterialRecord, StoreError

if TYPE_CHECKING:
    from hsmkms.service import Service

log = logging.getLogger("hsmkms.service.rotation")

DEFAULT_PERIOD_DAYS = 365
MIN_PERIOD_DAYS = 90
MAX_PERIOD_DAYS = 2560
ON_DEMAND_LIMIT = 25
# AWS refuses an on-demand rotation this close to the automatic one (in schedule days).
CONFLICT_WINDOW_DAYS = 20 / (24 * 60)
# The per-key rotation lease outlives any sane token call; a crashed holder frees it by then.
ROTATION_LEASE_SECONDS = 60.0
_ON_DEMAND_HOLDER = "on-demand:"
_AUTOMATIC_HOLDER = "automatic:"


def schedule_days(svc: Service, n: float) -> timedelta:
    """``n`` days of the rotation schedule (``rotation_day_seconds`` long each)."""
    return timedelta(seconds=n * svc.settings.rotation_day_seconds)


def rotation_lease(key_id: str) -> str:
    """The lease held while one rotation of ``key_id`` runs, by whichever process runs it."""
    return f"rotation:{key_id}"


# -- checks ------------------------------------------------------------------------------------
def _own_key(svc: Service, req: Request) -> KeyRecord:
    """The key named by key id or key ARN (not an alias). Authorization refuses another
    account's key to every rotation operation but GetKeyRotationStatus (NotFoundException)."""
    return svc.authorized_key(req, req.key_id, allow_alias=False)


def _check_rotatable(key: KeyRecord, on_demand: bool = False) -> None:
    """Only symmetric encryption keys with KMS-generated material rotate automatically; on
    demand, symmetric keys with imported material too (to new material imported first)."""
    if key.is_replica:
        raise errors.UnsupportedOperationException(
            f"{key.arn} is a multi-Region replica key: its rotation is shared with its "
            f"primary key, and managed there (in {key.primary_region})."
        )
    origins = (Origin.AWS_KMS, Origin.EXTERNAL) if on_demand else (Origin.AWS_KMS,)
    if key.key_spec != KeySpec.SYMMETRIC_DEFAULT or key.origin not in origins:
        raise errors.UnsupportedOperationException(
            f"{key.arn} cannot rotate: rotation applies only to symmetric encryption KMS keys "
            f"whose key material KMS generated."
        )


def _check_period(period: int) -> None:
    if period < MIN_PERIOD_DAYS:
        raise validation(
            "rotationPeriodInDays",
            period,
            f"Member must have value greater than or equal to {MIN_PERIOD_DAYS}",
        )
    if period > MAX_PERIOD_DAYS:
        raise validation(
            "rotationPeriodInDays",
            period,
            f"Member must have value less than or equal to {MAX_PERIOD_DAYS}",
        )


def _on_demand_count(svc: Service, key_id: str) -> int:
    return sum(1 for m in svc.store.materials(key_id) if m.rotation_type == RotationType.ON_DEMAND)


def _limit_exceeded(key: KeyRecord) -> errors.KMSError:
    return errors.LimitExceededException(
        f"{key.arn} has had {ON_DEMAND_LIMIT} on-demand rotations, the most a KMS key may have."
    )


# -- operations --------------------------------------------------------------------------------
@operation("EnableKeyRotation")
def enable_key_rotation(svc: Service, req: Request) -> dict[str, Any]:
    period = req.number("RotationPeriodInDays")
    period = DEFAULT_PERIOD_DAYS if period is None else period
    _check_period(period)
    key = _own_key(svc, req)
    _check_rotatable(key)
    check_enabled(key)
    at = now()
    if key.rotation_enabled and key.next_rotation is not None and key.rotation_period_days:
        if key.rotation_period_days == period:
            return {}  # already so: a repeated call must not push the rotation back
        # A new period counts from the last rotation (or from when rotation was enabled).
        last = key.next_rotation - schedule_days(svc, key.rotation_period_days)
        next_rotation = max(last + schedule_days(svc, period), at)
    else:
        next_rotation = at + schedule_days(svc, period)
    svc.store.update_key(
        key.ref,
        if_state=(KeyState.ENABLED,),
        rotation_enabled=True,
        rotation_period_days=period,
        next_rotation=next_rotation,
    )
    return {}


@operation("DisableKeyRotation")
def disable_key_rotation(svc: Service, req: Request) -> dict[str, Any]:
    key = _own_key(svc, req)
    _check_rotatable(key)
    check_enabled(key)
    if key.rotation_enabled:
        svc.store.update_key(
            key.ref,
            if_state=(KeyState.ENABLED,),
            rotation_enabled=False,
            rotation_period_days=None,
            next_rotation=None,
        )
    return {}


@operation("GetKeyRotationStatus")
def get_key_rotation_status(svc: Service, req: Request) -> dict[str, Any]:
    key = svc.authorized_key(req, req.key_id, allow_alias=False)
    enabled = key.rotation_enabled and key.state != KeyState.PENDING_DELETION
    out: dict[str, Any] = {"KeyRotationEnabled": enabled, "KeyId": key.key_id}
    if enabled:
        out["RotationPeriodInDays"] = key.rotation_period_days
        out["NextRotationDate"] = key.next_rotation
    lease = svc.store.get_lease(rotation_lease(key.key_id), now())
    if lease is not None and lease.holder.startswith(_ON_DEMAND_HOLDER):
        out["OnDemandRotationStartDate"] = lease.acquired_at
    return out


@operation("RotateKeyOnDemand")
def rotate_key_on_demand(svc: Service, req: Request) -> dict[str, Any]:
    key = _own_key(svc, req)
    _check_rotatable(key, on_demand=True)
    check_enabled(key)
    at = now()
    if (
        key.rotation_enabled
        and key.next_rotation is not None
        and key.next_rotation - at <= schedule_days(svc, CONFLICT_WINDOW_DAYS)
    ):
        raise errors.ConflictException(
            f"An automatic rotation of {key.arn} is in progress or scheduled to begin within "
            f"the next 20 minutes; retry after it."
        )
    name = rotation_lease(key.key_id)
    holder = f"{_ON_DEMAND_HOLDER}{uuid.uuid4()}"
    if not svc.store.acquire_lease(name, holder, at, ROTATION_LEASE_SECONDS):
        running = svc.store.get_lease(name, at)
        kind = (
            "on-demand"
            if running and running.holder.startswith(_ON_DEMAND_HOLDER)
            else ("automatic")
        )
        raise errors.ConflictException(f"An {kind} rotation of {key.arn} is in progress.")
    try:
        # Counted under the lease: no other rotation of this key can slip in between.
        if _on_demand_count(svc, key.key_id) >= ON_DEMAND_LIMIT:
            raise _limit_exceeded(key)
        if key.origin == Origin.EXTERNAL:
            _rotate_to_imported(svc, key)
            return {"KeyId": key.key_id}
        material = svc.new_material(key.key_id, now(), RotationType.ON_DEMAND)
        if not _record(
            svc, material, lambda: svc.store.add_on_demand_rotation(material, ON_DEMAND_LIMIT)
        ):
            _refused(svc, key)
        log.info("rotated KMS key %s on demand: key material %s", key.arn, material.material_id)
    finally:
        svc.store.release_lease(name, holder)
    return {"KeyId": key.key_id}


def _rotate_to_imported(svc: Service, key: KeyRecord) -> None:
    """An imported key rotates to the material imported as NEW_KEY_MATERIAL, which waits."""
    waiting = [m for m in svc.store.materials(key.key_id) if m.pending_rotation]
    if not waiting:
        raise errors.KMSInvalidStateException(
            f"{key.arn} has no new key material to rotate to: import it first with "
            f"ImportKeyMaterial and ImportType NEW_KEY_MATERIAL."
        )
    if not svc.store.rotate_to_imported(key.key_id, waiting[0].material_id, now(), ON_DEMAND_LIMIT):
        _refused(svc, key)
    log.info(
        "rotated KMS key %s on demand to imported key material %s", key.arn, waiting[0].material_id
    )


def _record(svc: Service, material: MaterialRecord, write: Callable[[], bool]) -> bool:
    """Record a rotation's new material with ``write``; when the store refuses it (the key
    changed, another process rotated first) or fails, the token object is discarded too, so
    that no object outlives a rotation that did not happen."""
    try:
        recorded = write()
    except StoreError:
        svc.discard_new_material(material)
        raise
    if not recorded:
        svc.discard_new_material(material)
    return recorded


def _refused(svc: Service, key: KeyRecord) -> NoReturn:
    """Raise what the key's state now says: a state error, or the quota."""
    fresh = svc.store.get_key(key.ref)
    if fresh is None:
        raise errors.NotFoundException(f"Key '{key.arn}' does not exist")
    check_enabled(fresh)
    raise _limit_exceeded(fresh)


@operation("ListKeyRotations")
def list_key_rotations(svc: Service, req: Request) -> dict[str, Any]:
    key = _own_key(svc, req)
    include = req.choice("IncludeKeyMaterial", IncludeKeyMaterial)
    include_first = include is IncludeKeyMaterial.ALL_KEY_MATERIAL
    limit = page_limit(req, 100)
    materials = [m for m in svc.store.materials(key.key_id) if include_first or m.rotation_type]
    marker = req.text("Marker")
    if marker is not None:
        ids = [m.material_id for m in materials]
        if marker not in ids:
            raise errors.InvalidMarkerException("The marker is invalid.")
        materials = materials[ids.index(marker) + 1 :]
    page = materials[:limit]
    out: dict[str, Any] = {
        "Rotations": [_rotation_entry(key, m) for m in page],
        "Truncated": len(materials) > limit,
    }
    if len(materials) > limit:
        out["NextMarker"] = page[-1].material_id
    return out


def _rotation_entry(key: KeyRecord, material: MaterialRecord) -> dict[str, Any]:
    """A RotationsListEntry; RotationDate and RotationType only for rotations (as AWS), and
    the import's state, expiry and description for imported material."""
    state = KeyMaterialState.NON_CURRENT
    if material.pending_rotation:
        state = KeyMaterialState.PENDING_ROTATION
    elif material.material_id == key.current_material_id:
        state = KeyMaterialState.CURRENT
    entry: dict[str, Any] = {
        "KeyId": key.key_id,
        "KeyMaterialId": material.material_id,
        "KeyMaterialState": state,
    }
    if material.rotation_type:
        entry["RotationDate"] = material.created_at
        entry["RotationType"] = material.rotation_type
    if material.import_state is not None:
        imported = material.import_state == ImportState.IMPORTED
        entry["ImportState"] = ImportState.IMPORTED if imported else ImportState.PENDING_IMPORT
        if material.expiration_model:
            entry["ExpirationModel"] = material.expiration_model
        if imported and material.valid_to is not None:
            entry["ValidTo"] = material.valid_to
        if material.description:
            entry["KeyMaterialDescription"] = material.description
    return entry


# -- automatic rotation (the scheduler's) ------------------------------------------------------
def rotate_due(
    svc: Service,
    at: datetime,
    holder: str,
    still_leader: Callable[[], bool] = lambda: True,
    batch: int = 1000,
) -> list[str]:
    """Perform the automatic rotations due at ``at`` (at most ``batch``; the rest stay due for
    the next round); stop early when ``still_leader()`` says the scheduler lease was lost.
    Returns the ids of the keys rotated."""
    rotated = []
    for key in svc.store.keys_due_for_rotation(at, batch):
        if not still_leader():
            break
        if rotate_automatic(svc, key, at, holder):
            rotated.append(key.key_id)
    return rotated


def rotate_automatic(svc: Service, key: KeyRecord, at: datetime, holder: str) -> bool:
    """Rotate ``key`` for its due date ``key.next_rotation``, exactly once whoever else tries.

    The token object is made first, then recorded by a conditional write that succeeds for one
    material per (key, due date) only (:meth:`Store.add_automatic_rotation`): whoever loses
    the race destroys its object, so even two processes whose leases overlapped leave one
    rotation and no orphan. False when the key was not rotated (another process did it, it
    changed, or an on-demand rotation of it is running: the next round sees it again)."""
    due, period = key.next_rotation, key.rotation_period_days
    if due is None or not period:
        return False
    name = rotation_lease(key.key_id)
    lease_holder = f"{_AUTOMATIC_HOLDER}{holder}"
    if not svc.store.acquire_lease(name, lease_holder, at, ROTATION_LEASE_SECONDS):
        return False
    try:
        step = schedule_days(svc, period)
        # On time, the schedule keeps its dates; a missed one (key disabled, every server
        # down) rotates once now and counts the next period from here.
        next_rotation = due + step if due + step > at else at + step
        material = svc.new_material(key.key_id, at, RotationType.AUTOMATIC)
        if not _record(
            svc,
            material,
            lambda: svc.store.add_automatic_rotation(material, due, period, next_rotation, at),
        ):
            return False
        log.info(
            "rotated KMS key %s automatically (due %s): key material %s",
            key.arn,
            due.isoformat(),
            material.material_id,
        )
        return True
    finally:
        svc.store.release_lease(name, lease_holder)
