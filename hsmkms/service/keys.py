"""Keys: CreateKey, DescribeKey, ListKeys, Enable/DisableKey, Schedule/CancelKeyDeletion,
UpdateKeyDescription, and the sweeper that deletes keys after their waiting period."""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from hsmkms import errors
from hsmkms.service import (
    asymmetric,
    custom_key_stores,
    external_keys,
    imports,
    multiregion,
    policy,
)
from hsmkms.service.core import (
    Request,
    check_grant_tokens,
    check_not_pending_deletion,
    key_arn,
    new_key_id,
    now,
    operation,
    resolve_key,
    validation,
)
from hsmkms.service.tags import validate_tags
from hsmkms.specs import Family, ImportState, KeyManager, KeySpec, KeyState, KeyUsage, Origin
from hsmkms.store import (
    CustomKeyStoreRecord,
    KeyRecord,
    MaterialRecord,
    StateChanged,
    StoreError,
)

if TYPE_CHECKING:
    from hsmkms.service import Service

log = logging.getLogger("hsmkms.service")

# The key families CreateKey makes: AES (symmetric), HMAC, RSA, EC and Ed25519 on the token;
# ML-DSA and ML-KEM held sealed under a token master key (service/host_keys.py).
_FAMILIES = frozenset(
    {Family.AES, Family.HMAC, Family.RSA, Family.EC, Family.EDWARDS, Family.ML_DSA, Family.ML_KEM}
)
_UUID_MARKER = re.compile(r"^(?:[0-9a-f-]{36}|mrk-[0-9a-f]{32})$")
# How many times a state change that lost a race to another request reads and decides again.
_DECIDE_AGAIN = 4
# The KeyId the next CreateKey in this context gives its key, instead of a new random one:
# set by the seed file (hsmkms/seed/) alone, never from a request's parameters (the wire
# has no member for it). A key id already taken is AlreadyExistsException.
FIXED_KEY_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "hsmkms_fixed_key_id", default=None
)


def key_metadata(
    key: KeyRecord,
    current: MaterialRecord | None = None,
    family: list[KeyRecord] | None = None,
    key_store: CustomKeyStoreRecord | None = None,
) -> dict[str, Any]:
    """KeyMetadata as DescribeKey answers it; ``current``: an EXTERNAL key's current
    material, whose expiry it shows; ``family``: a multi-Region key's records (primary and
    replicas), which its MultiRegionConfiguration lists."""
    meta: dict[str, Any] = {
        "AWSAccountId": key.account_id,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.created_at,
        "Enabled": key.state == KeyState.ENABLED,
        "Description": key.description,
        "KeyUsage": key.key_usage,
        "KeyState": key.state,
        "Origin": key.origin,
        "KeyManager": key.key_manager,
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        "MultiRegion": key.multi_region,
        **asymmetric.algorithm_lists(KeySpec(key.key_spec), KeyUsage(key.key_usage)),
    }
    if key.current_material_id:
        meta["CurrentKeyMaterialId"] = key.current_material_id
    if key.origin == Origin.EXTERNAL and current is not None and current.expiration_model:
        meta["ExpirationModel"] = current.expiration_model
        if current.valid_to is not None:
            meta["ValidTo"] = current.valid_to
    if key.state == KeyState.PENDING_DELETION:
        meta["DeletionDate"] = key.deletion_date
        meta["PendingDeletionWindowInDays"] = key.pending_window_days
    elif key.state == KeyState.PENDING_REPLICA_DELETION:
        # Its deletion date is known once its last replica is gone (AWS shows none).
        meta["PendingDeletionWindowInDays"] = key.pending_window_days
    if key.multi_region:
        meta["MultiRegionConfiguration"] = multiregion.configuration(key, family or [key])
    if key.custom_key_store_id:
        meta["CustomKeyStoreId"] = key.custom_key_store_id
        if key_store is not None and key_store.cluster_id:
            meta["CloudHsmClusterId"] = key_store.cluster_id
        if key.xks_key_id:
            meta["XksKeyConfiguration"] = {"Id": key.xks_key_id}
        if key_store is not None and key_store.state != "CONNECTED":
            meta["KeyState"], meta["Enabled"] = "Unavailable", False
    return meta


@operation("CreateKey")
def create_key(svc: Service, req: Request) -> dict[str, Any]:
    spec = req.choice("KeySpec", KeySpec)
    legacy = req.choice("CustomerMasterKeySpec", KeySpec)
    if spec and legacy and spec != legacy:
        raise errors.ValidationException(
            "You cannot specify KeySpec and CustomerMasterKeySpec in the same request. "
            "CustomerMasterKeySpec parameter is deprecated. Use KeySpec parameter instead."
        )
    spec = spec or legacy or KeySpec.SYMMETRIC_DEFAULT
    usage = req.choice("KeyUsage", KeyUsage) or KeyUsage.ENCRYPT_DECRYPT
    origin = req.choice("Origin", Origin) or Origin.AWS_KMS
    if spec.family not in _FAMILIES:
        raise errors.UnsupportedOperationException(
            f"KeySpec {spec} is not supported by hsmkms yet."
        )
    if usage not in spec.usages:
        raise errors.ValidationException(f"KeyUsage {usage} is not compatible with KeySpec {spec}.")
    in_store = origin in (Origin.AWS_CLOUDHSM, Origin.EXTERNAL_KEY_STORE)
    if in_store != bool(req.get("CustomKeyStoreId")):
        raise errors.ValidationException(
            "A key in a custom key store needs a CustomKeyStoreId and Origin AWS_CLOUDHSM or "
            "EXTERNAL_KEY_STORE (the store's type), and only such a key takes either."
        )
    if in_store and (spec != KeySpec.SYMMETRIC_DEFAULT or usage != KeyUsage.ENCRYPT_DECRYPT):
        raise errors.UnsupportedOperationException(
            "Keys in custom key stores are symmetric encryption keys only (SYMMETRIC_DEFAULT, "
            "ENCRYPT_DECRYPT), as in AWS KMS."
        )
    if origin == Origin.EXTERNAL and (reason := imports.not_importable(spec)):
        raise errors.UnsupportedOperationException(
            f"{spec} keys with Origin EXTERNAL are not supported by hsmkms: {reason}."
        )
    if req.get("XksKeyId") and origin != Origin.EXTERNAL_KEY_STORE:
        raise errors.ValidationException("XksKeyId goes with Origin EXTERNAL_KEY_STORE only.")
    multi_region = req.flag("MultiRegion")
    if multi_region and in_store:
        raise errors.UnsupportedOperationException(
            "Multi-Region keys cannot be made in a custom key store (as in AWS KMS)."
        )
    if multi_region and origin == Origin.EXTERNAL:
        raise errors.UnsupportedOperationException(
            "Multi-Region keys with imported key material (Origin EXTERNAL) are not supported "
            "by hsmkms: a multi-Region key's material is generated in the HSM."
        )
    caller = req.caller
    key_id = FIXED_KEY_ID.get() or new_key_id(multi_region)
    if FIXED_KEY_ID.get() and (svc.store.get_key(key_id) or svc.store.was_deleted(key_id)):
        raise errors.AlreadyExistsException(f"A KMS key with id {key_id} exists or existed.")
    policy_text = req.text("Policy")
    if policy_text is not None:
        # AWS's lockout safety check: the creator must be able to PutKeyPolicy later.
        policy.check_lockout(
            policy.parse_policy(policy_text),
            caller,
            key_arn(svc.region_of(caller), caller.account_id, key_id),
            req.flag("BypassPolicyLockoutSafetyCheck"),
            {t["TagKey"]: t["TagValue"] for t in req.structures("Tags")},  # aws:ResourceTag
        )
    else:
        policy_text = policy.default_policy(caller.account_id)
    tags = validate_tags(req.structures("Tags"))
    in_key_store = external_keys.prepare_key(svc, req, key_id, origin) if in_store else {}

    created = now()
    material = (
        svc.new_material(key_id, created, spec=spec, usage=usage)
        if origin != Origin.EXTERNAL
        else None  # imported later (service/imports.py): PendingImport until then
    )
    key = KeyRecord(
        key_id=key_id,
        account_id=caller.account_id,
        region=svc.region_of(caller),
        key_usage=usage,
        key_spec=spec,
        origin=origin,
        key_manager=KeyManager.CUSTOMER,
        state=KeyState.ENABLED if material else KeyState.PENDING_IMPORT,
        created_at=created,
        policy=policy_text,
        description=req.text("Description") or "",
        current_material_id=material.material_id if material else None,
        multi_region=multi_region,
        primary_region=svc.region_of(caller) if multi_region else None,
        **in_key_store,
    )
    # The token object exists before the record: a crash in between leaves an orphan
    # material (reported by `hsmkms doctor`), never a key without material.
    try:
        svc.store.create_key(key, material, tags)
    except StoreError:
        if material is not None:  # no key, so no orphan either (when it can tell)
            svc.discard_new_material(material)
        raise
    return {"KeyMetadata": key_metadata(key, key_store=custom_key_stores.store_of(svc, key))}


@operation("DescribeKey")
def describe_key(svc: Service, req: Request) -> dict[str, Any]:
    check_grant_tokens(req)
    key = svc.authorized_key(req, req.key_id)
    current = None
    if key.origin == Origin.EXTERNAL and key.current_material_id:
        current = next(
            (
                m
                for m in svc.store.materials(key.key_id)
                if m.material_id == key.current_material_id
            ),
            None,
        )
    family = svc.store.keys_in_family(key.key_id) if key.multi_region else None
    key_store = custom_key_stores.store_of(svc, key)
    return {"KeyMetadata": key_metadata(key, current, family, key_store)}


def page_limit(req: Request, default: int = 100) -> int:
    limit = req.number("Limit")
    return default if limit is None else limit


def check_marker(marker: str | None) -> str | None:
    if marker is not None and not _UUID_MARKER.match(marker) and not marker.startswith("alias/"):
        raise errors.InvalidMarkerException("The marker is invalid.")
    return marker


@operation("ListKeys")
def list_keys(svc: Service, req: Request) -> dict[str, Any]:
    limit = page_limit(req)
    marker = check_marker(req.text("Marker"))
    keys = svc.store.list_keys(req.caller.account_id, svc.region_of(req.caller), marker, limit + 1)
    out: dict[str, Any] = {
        "Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in keys[:limit]],
        "Truncated": len(keys) > limit,
    }
    if len(keys) > limit:
        out["NextMarker"] = keys[limit - 1].key_id
    return out


def _change(
    svc: Service, req: Request, decide: Callable[[KeyRecord], dict[str, Any] | None]
) -> KeyRecord:
    """Read the key, let ``decide`` check it and name the changes (None: nothing to write),
    and write them only while the key is still in the state that was read.

    Requests that change one key (maybe in several processes) would otherwise each decide on
    what they read and the last write would win: an EnableKey that read the key just before a
    ScheduleKeyDeletion committed would silently cancel the acknowledged deletion. A request
    that loses such a race reads again and decides again: succeeds, or answers what the key's
    new state calls for."""
    for _ in range(_DECIDE_AGAIN):
        key = svc.authorized_key(req, req.key_id)
        changes = decide(key)
        if not changes:
            return key
        try:
            return svc.store.update_key(key.ref, if_state=(key.state,), **changes)
        except StateChanged:
            continue
    raise errors.KMSInvalidStateException(
        f"{key.arn} kept changing state while this request ran; retry."
    )


def _check_has_material(key: KeyRecord) -> None:
    """Enable and Disable need a key with its material (AWS's key state table)."""
    if key.state == KeyState.PENDING_IMPORT:
        raise errors.KMSInvalidStateException(
            f"{key.arn} is pending import: import its key material first."
        )


@operation("EnableKey")
def enable_key(svc: Service, req: Request) -> dict[str, Any]:
    def decide(key: KeyRecord) -> dict[str, Any] | None:
        check_not_pending_deletion(key)
        _check_has_material(key)
        return {"state": KeyState.ENABLED} if key.state != KeyState.ENABLED else None

    _change(svc, req, decide)
    return {}


@operation("DisableKey")
def disable_key(svc: Service, req: Request) -> dict[str, Any]:
    def decide(key: KeyRecord) -> dict[str, Any] | None:
        check_not_pending_deletion(key)
        _check_has_material(key)
        return {"state": KeyState.DISABLED} if key.state != KeyState.DISABLED else None

    _change(svc, req, decide)
    return {}


@operation("ScheduleKeyDeletion")
def schedule_key_deletion(svc: Service, req: Request) -> dict[str, Any]:
    window = req.number("PendingWindowInDays")
    window = 30 if window is None else window
    if window < 7:
        raise validation(
            "pendingWindowInDays", window, "Member must have value greater than or equal to 7"
        )
    if window > 30:
        raise validation(
            "pendingWindowInDays", window, "Member must have value less than or equal to 30"
        )
    deletion = now() + timedelta(days=window)

    def decide(key: KeyRecord) -> dict[str, Any] | None:
        check_not_pending_deletion(key)
        if multiregion.has_replicas(svc, key):
            # A primary waits for its replicas to go; its waiting period starts then.
            return {
                "state": KeyState.PENDING_REPLICA_DELETION,
                "deletion_date": None,
                "pending_window_days": window,
            }
        return {
            "state": KeyState.PENDING_DELETION,
            "deletion_date": deletion,
            "pending_window_days": window,
        }

    key = _change(svc, req, decide)
    if key.state == KeyState.PENDING_REPLICA_DELETION:
        return {"KeyId": key.arn, "KeyState": key.state, "PendingWindowInDays": window}
    return {
        "KeyId": key.arn,
        "DeletionDate": deletion,
        "KeyState": KeyState.PENDING_DELETION,
        "PendingWindowInDays": window,
    }


@operation("CancelKeyDeletion")
def cancel_key_deletion(svc: Service, req: Request) -> dict[str, Any]:
    def decide(key: KeyRecord) -> dict[str, Any] | None:
        if key.state == KeyState.PENDING_REPLICA_DELETION:
            return {"state": KeyState.DISABLED, "deletion_date": None, "pending_window_days": None}
        if key.state != KeyState.PENDING_DELETION:
            raise errors.KMSInvalidStateException(f"{key.arn} is not pending deletion.")
        if key.deletion_claimed or (key.deletion_date is not None and key.deletion_date <= now()):
            # The deletion sweep may be destroying its material right now: too late.
            raise errors.KMSInvalidStateException(
                f"{key.arn} is being deleted: its waiting period has ended."
            )
        # A key whose imported material is gone goes back to waiting for it, not to Disabled.
        state = KeyState.PENDING_IMPORT if _lacks_material(svc, key) else KeyState.DISABLED
        return {"state": state, "deletion_date": None, "pending_window_days": None}

    key = _change(svc, req, decide)
    return {"KeyId": key.arn}


@operation("UpdateKeyDescription")
def update_key_description(svc: Service, req: Request) -> dict[str, Any]:
    def decide(key: KeyRecord) -> dict[str, Any] | None:
        check_not_pending_deletion(key)
        return {"description": req.required_text("Description")}

    _change(svc, req, decide)
    return {}


def _lacks_material(svc: Service, key: KeyRecord) -> bool:
    """Whether an EXTERNAL key has no current material, or one not imported now."""
    if key.origin != Origin.EXTERNAL:
        return False
    return key.current_material_id is None or any(
        m.import_state != ImportState.IMPORTED and not m.pending_rotation
        for m in svc.store.materials(key.key_id)
    )


def sweep(svc: Service, at: datetime | None = None) -> list[str]:
    """Delete every key whose waiting period has ended (by ``at``, default now): claim it in
    one transaction (only if it is still PendingDeletion and due: a CancelKeyDeletion that
    committed first wins, and one that comes after the claim is refused), then destroy the
    token objects of all its materials, then its record (a crash in between is finished by
    the next sweep, which may claim a claimed key again). Returns the deleted key ids."""
    when = at or now()
    deleted = []
    for key in svc.store.keys_due_for_deletion(when):
        if not svc.store.claim_for_deletion(key.ref, when):
            continue  # cancelled (or changed) since it was read: not ours to delete
        others = [k for k in svc.store.keys_in_family(key.key_id) if k.region != key.region]
        if not others:  # a multi-Region key's materials go with its last record
            for material in svc.store.materials(key.key_id):
                svc.destroy_material(material.material_id)
            imports.destroy_wrapping_keys(svc, key.key_id)
        svc.store.delete_key(key.ref)
        log.info("deleted KMS key %s after its waiting period", key.arn)
        deleted.append(key.key_id)
        multiregion.replica_deleted(svc, others, when)
    return deleted


# Resolution errors name the key as AWS does; re-exported for other modules.
__all__ = ["key_metadata", "resolve_key", "sweep"]
