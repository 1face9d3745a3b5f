"""Multi-Region keys: ReplicateKey, UpdatePrimaryRegion, and what DescribeKey and deletion
need to know of a key's primary and replicas.

A multi-Region key (id ``mrk-`` and 32 hex digits) has one record per Region in the store
(``KeyRecord.ref``: its own policy, description, state, tags, aliases and grants) and one set
of materials: the primary and its replicas use the same token objects, never copies, so a
ciphertext made in one Region decrypts in any other that holds a replica. What the records
share (current material, rotation) the store keeps equal in all of them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from hsmkms import errors
from hsmkms.service import policy
from hsmkms.service.core import (
    Request,
    check_not_pending_deletion,
    key_arn,
    now,
    operation,
    validation,
)
from hsmkms.service.tags import validate_tags
from hsmkms.specs import KeyState
from hsmkms.store import Conflict, KeyRecord

if TYPE_CHECKING:
    from hsmkms.service import Service

# States in which a key may be replicated, or have its primary Region changed.
_SETTLED = (KeyState.ENABLED, KeyState.DISABLED)


def configuration(key: KeyRecord, family: list[KeyRecord]) -> dict[str, Any]:
    """DescribeKey's MultiRegionConfiguration of ``key``, one of the records ``family``."""
    primary = key.primary_region or key.region

    def named(region: str) -> dict[str, str]:
        return {"Arn": key_arn(region, key.account_id, key.key_id), "Region": region}

    return {
        "MultiRegionKeyType": "REPLICA" if key.is_replica else "PRIMARY",
        "PrimaryKey": named(primary),
        "ReplicaKeys": [named(k.region) for k in family if k.region != primary],
    }


def has_replicas(svc: Service, key: KeyRecord) -> bool:
    """Whether ``key`` is a multi-Region primary key with replicas (it cannot be deleted
    before they are: it waits in PendingReplicaDeletion)."""
    if not key.multi_region or key.is_replica:
        return False
    return any(k.region != key.region for k in svc.store.keys_in_family(key.key_id))


def replica_deleted(svc: Service, left: list[KeyRecord], at: datetime) -> None:
    """A record of a multi-Region key was deleted and ``left`` remain: a primary that waited
    for its last replica now starts its own waiting period."""
    if len(left) != 1 or left[0].state != KeyState.PENDING_REPLICA_DELETION:
        return
    primary = left[0]
    window = primary.pending_window_days or 30
    svc.store.update_key(
        primary.ref,
        if_state=(KeyState.PENDING_REPLICA_DELETION,),
        state=KeyState.PENDING_DELETION,
        deletion_date=at + timedelta(days=window),
        pending_window_days=window,
    )


def _primary(svc: Service, req: Request) -> KeyRecord:
    """The multi-Region primary key the request names (key id or ARN), in the caller's Region."""
    key = svc.authorized_key(req, req.key_id, allow_alias=False)
    if not key.multi_region:
        raise errors.UnsupportedOperationException(
            f"{key.arn} is not a multi-Region key: {req.operation} applies to multi-Region keys "
            "only (CreateKey with MultiRegion=true)."
        )
    if key.is_replica:
        raise errors.UnsupportedOperationException(
            f"{key.arn} is a multi-Region replica key: call {req.operation} on its primary key, "
            f"in {key.primary_region}."
        )
    return key


def _check_settled(key: KeyRecord) -> None:
    check_not_pending_deletion(key)
    if key.state not in _SETTLED:
        raise errors.KMSInvalidStateException(f"{key.arn} is {key.state}.")


@operation("ReplicateKey")
def replicate_key(svc: Service, req: Request) -> dict[str, Any]:
    region = req.required_text("ReplicaRegion")
    if region not in svc.settings.region_set():
        raise errors.UnsupportedOperationException(
            f"{region} is not a Region this endpoint serves (the regions setting)."
        )
    primary = _primary(svc, req)
    _check_settled(primary)
    if region == primary.region:
        raise validation(
            "replicaRegion", region, "Member must name a Region other than the primary key's"
        )
    arn = key_arn(region, primary.account_id, primary.key_id)
    if any(k.region == region for k in svc.store.keys_in_family(primary.key_id)):
        raise errors.AlreadyExistsException(f"{arn} already exists.")
    policy_text = req.text("Policy")
    tags = validate_tags(req.structures("Tags"))
    if policy_text is not None:
        policy.check_lockout(
            policy.parse_policy(policy_text),
            req.caller,
            arn,
            req.flag("BypassPolicyLockoutSafetyCheck"),
            tags,
        )
    else:
        policy_text = policy.default_policy(primary.account_id)
    replica = KeyRecord(
        key_id=primary.key_id,
        account_id=primary.account_id,
        region=region,
        key_usage=primary.key_usage,
        key_spec=primary.key_spec,
        origin=primary.origin,
        key_manager=primary.key_manager,
        state=KeyState.ENABLED,
        created_at=now(),
        policy=policy_text,
        description=req.text("Description") or "",
        current_material_id=primary.current_material_id,
        multi_region=True,
        rotation_enabled=primary.rotation_enabled,
        rotation_period_days=primary.rotation_period_days,
        next_rotation=primary.next_rotation,
        primary_region=primary.region,
    )
    try:
        svc.store.create_replica(replica, tags)
    except Conflict:
        raise errors.AlreadyExistsException(f"{arn} already exists.") from None
    from hsmkms.service.keys import key_metadata

    family = svc.store.keys_in_family(primary.key_id)
    meta = key_metadata(replica, family=family)
    # AWS answers while the replica is still being made ("Creating", then Enabled after a
    # few seconds); here it is made before the answer, usable at once, Enabled when read.
    meta.update(KeyState=KeyState.CREATING, Enabled=False)
    return {
        "ReplicaKeyMetadata": meta,
        "ReplicaPolicy": policy_text,
        "ReplicaTags": [{"TagKey": k, "TagValue": v} for k, v in tags.items()],
    }


@operation("UpdatePrimaryRegion")
def update_primary_region(svc: Service, req: Request) -> dict[str, Any]:
    region = req.required_text("PrimaryRegion")
    primary = _primary(svc, req)
    target = next((k for k in svc.store.keys_in_family(primary.key_id) if k.region == region), None)
    if target is None:
        raise errors.NotFoundException(
            f"Key '{key_arn(region, primary.account_id, primary.key_id)}' does not exist"
        )
    if target.region == primary.region:
        return {}  # it is the primary already
    # kms:UpdatePrimaryRegion on both keys: the primary's policy (above), the replica's here.
    policy.authorize(svc, req, target, req.operation, requested=req.key_id)
    _check_settled(primary)
    _check_settled(target)
    # One transaction moves the role: no moment shows two primaries or none (AWS shows both
    # keys as Updating for a few seconds instead).
    svc.store.set_primary_region(primary.key_id, region)
    return {}
