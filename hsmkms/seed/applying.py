"""Applying a checked seed file to an operation layer: :func:`apply`, in the four steps of
:mod:`hsmkms.seed`, every step an operation dispatched as the account's root principal."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hsmkms import errors, model
from hsmkms.identity import Caller
from hsmkms.seed.material import WRAP_PRIVATE_KEY, WRAP_SECRET, WRAPPING_KEY_SPEC, wrap
from hsmkms.seed.schema import Entry, Seed, SeedError, load
from hsmkms.service import imports
from hsmkms.specs import KeyState, Origin

if TYPE_CHECKING:
    from hsmkms.service import Service
    from hsmkms.store import KeyRecord

log = logging.getLogger("hsmkms.seed")


@dataclass
class Outcome:
    """What :func:`apply` did, by KeyId."""

    path: Path
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"seed {self.path}: {len(self.created)} key(s) created, {len(self.changed)} "
            f"updated, {len(self.unchanged)} unchanged"
        )


# -- applying ----------------------------------------------------------------------------------
def root_caller(account_id: str) -> Caller:
    """The account's root principal, as whom a seed is applied (the default key policy lets
    it do everything)."""
    return Caller(account_id, f"arn:aws:iam::{account_id}:root", secure_transport=True)


@dataclass
class _Plan:
    entry: Entry
    caller: Caller
    key: KeyRecord | None  # the key as it exists, or None: to be created


def apply(svc: Service, seed: Seed, default_account: str) -> Outcome:
    """Make the keys of ``seed`` exist as it describes them (see the module's docstring);
    :class:`SeedError` naming the entry when it cannot, with nothing of this run left."""
    outcome = Outcome(seed.path)
    plans: list[_Plan] = []
    current: Entry | None = None
    created: list[str] = []
    try:
        for entry in seed.entries:  # 1. read-only checks
            current = entry
            plans.append(_plan(svc, entry, default_account))
        for plan in plans:  # 2. the material checks
            current = plan.entry
            if plan.key is not None and plan.entry.material is not None:
                _import(svc, plan)
        for plan in plans:  # 3. the new keys
            current = plan.entry
            if plan.key is None:
                _create(svc, plan, created)
                outcome.created.append(plan.entry.key_id)
        for plan in plans:  # 4. the existing keys' metadata
            current = plan.entry
            if plan.key is not None:
                changed = _reconcile(svc, plan)
                (outcome.changed if changed else outcome.unchanged).append(plan.entry.key_id)
    except Exception as exc:
        left = _undo(svc, created)
        where = f"{current.name}: " if current is not None else ""
        undone = ""
        if created:
            undone = f" (the {len(created)} key(s) this run created were deleted again"
            undone += f"; left behind: {', '.join(left)})" if left else ")"
        raise SeedError(f"seed file {seed.path}: {where}{_reason(exc)}{undone}") from None
    for key_id in outcome.created:
        log.info("seed %s: created key %s", seed.path, key_id)
    for key_id in outcome.changed:
        log.info("seed %s: updated key %s to match the file", seed.path, key_id)
    return outcome


def apply_file(
    svc: Service, path: str | os.PathLike[str], default_account: str | None = None
) -> Outcome:
    """:func:`load` then :func:`apply`; ``default_account`` defaults to the account of the
    credentials file's first identity (the library face: ``apply_file(kms.service, path)``)."""
    seed = load(path)
    if default_account is None:
        from hsmkms import compose

        default_account = compose.default_caller(svc.settings).account_id
    return apply(svc, seed, default_account)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SeedError):
        return str(exc)
    if isinstance(exc, errors.KMSError):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _plan(svc: Service, entry: Entry, default_account: str) -> _Plan:
    """Check ``entry`` against the store without changing anything."""
    store = svc.store.inner  # as the store holds it now, not a cached copy
    account = entry.account_id or default_account
    caller = root_caller(account)
    key = store.get_key(entry.key_id)
    if key is None:
        if store.was_deleted(entry.key_id):
            raise SeedError(
                "KeyId: a key with this id was deleted from this home, and a deleted key's "
                "id is never used again (blobs made under it must keep failing): give the "
                "entry another KeyId, or seed a fresh home"
            )
    else:
        _check_existing(svc, entry, account, key)
    for name in entry.aliases or ():
        alias = store.get_alias(account, svc.region, name)
        if alias is not None and alias.key_id != entry.key_id:
            raise SeedError(f"Aliases: {name} already points to another key, {alias.key_id}")
    if entry.policy is not None and (key is None or key.policy != entry.policy):
        from hsmkms.service import policy
        from hsmkms.service.core import key_arn

        tags = entry.tags if entry.tags is not None else (store.get_tags(key.ref) if key else {})
        try:
            policy.check_lockout(
                policy.parse_policy(entry.policy),
                caller,
                key_arn(svc.region, account, entry.key_id),
                False,
                tags,
            )
        except errors.KMSError as exc:
            raise SeedError(f"Policy: {exc.message}") from None
    return _Plan(entry, caller, key)


def _check_existing(svc: Service, entry: Entry, account: str, key: KeyRecord) -> None:
    """An existing key must be the one the entry describes."""
    if key.account_id != account:
        raise SeedError(
            f"account_id: the key exists in account {key.account_id}, the entry names {account}"
        )
    if key.region != svc.region:
        raise SeedError(f"the key exists in region {key.region}, this server serves {svc.region}")
    if key.key_spec != entry.spec or key.key_usage != entry.usage:
        raise SeedError(
            f"KeySpec/KeyUsage: the key exists as {key.key_spec}/{key.key_usage}, the entry "
            f"says {entry.spec}/{entry.usage} (a key's spec and usage never change)"
        )
    if key.state == KeyState.PENDING_DELETION:
        raise SeedError(
            "the key is pending deletion: cancel it (aws kms cancel-key-deletion) or remove "
            "the entry"
        )
    if entry.material is not None and key.origin != Origin.EXTERNAL:
        raise SeedError(
            f"material: the key exists with material generated on the token (Origin "
            f"{key.origin}), which is never another's: remove the material from the entry, or "
            f"give the material another KeyId"
        )


def _call(svc: Service, caller: Caller, operation: str, params: dict[str, Any]) -> dict:
    """One operation as a client's would run: checked against the model, then dispatched."""
    model.validate_input(operation, params)
    return svc.dispatch(operation, params, caller)


def _import(svc: Service, plan: _Plan) -> None:
    """Import the entry's material into its key, wrapped here as a client wraps it."""
    entry = plan.entry
    assert entry.material is not None
    algorithm = WRAP_PRIVATE_KEY if entry.spec.asymmetric else WRAP_SECRET
    parameters = _call(
        svc,
        plan.caller,
        "GetParametersForImport",
        {
            "KeyId": entry.key_id,
            "WrappingAlgorithm": algorithm,
            "WrappingKeySpec": WRAPPING_KEY_SPEC,
        },
    )
    try:
        _call(
            svc,
            plan.caller,
            "ImportKeyMaterial",
            {
                "KeyId": entry.key_id,
                "ImportToken": parameters["ImportToken"],
                "EncryptedKeyMaterial": wrap(parameters["PublicKey"], algorithm, entry.material),
                "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
            },
        )
    except errors.IncorrectKeyMaterialException as exc:
        raise SeedError(
            f"material: not the key material of the existing key {entry.key_id} "
            f"(IncorrectKeyMaterialException: {exc.message}); a seed never replaces a key's "
            f"material"
        ) from None
    finally:
        # Used once: its wrapping key goes now, not when the scheduler sees it expire.
        imports.retire(svc, parameters["ImportToken"])


def _create(svc: Service, plan: _Plan, created: list[str]) -> None:
    """Create the entry's key with its fixed id, then its material, aliases and policy.

    The key is made with the default policy and gets the file's last, so that the steps in
    between run whatever the file's policy allows the account's root principal."""
    from hsmkms.service.keys import FIXED_KEY_ID

    entry = plan.entry
    params: dict[str, Any] = {"KeySpec": entry.spec.value, "KeyUsage": entry.usage.value}
    if entry.material is not None:
        params["Origin"] = Origin.EXTERNAL.value
    if entry.description is not None:
        params["Description"] = entry.description
    if entry.tags:
        params["Tags"] = [{"TagKey": k, "TagValue": v} for k, v in entry.tags.items()]
    fixed = FIXED_KEY_ID.set(entry.key_id)
    try:
        _call(svc, plan.caller, "CreateKey", params)
    finally:
        FIXED_KEY_ID.reset(fixed)
    created.append(entry.key_id)
    if entry.material is not None:
        _import(svc, plan)
    for name in entry.aliases or ():
        _call(svc, plan.caller, "CreateAlias", {"AliasName": name, "TargetKeyId": entry.key_id})
    if entry.policy is not None:
        _put_policy(svc, plan)


def _put_policy(svc: Service, plan: _Plan) -> None:
    assert plan.entry.policy is not None
    _call(
        svc,
        plan.caller,
        "PutKeyPolicy",
        {"KeyId": plan.entry.key_id, "PolicyName": "default", "Policy": plan.entry.policy},
    )


def _reconcile(svc: Service, plan: _Plan) -> bool:
    """Make an existing key's description, tags, aliases and policy what the entry says (the
    fields the entry gives; the others are left as they are). Whether anything changed."""
    entry, caller, store = plan.entry, plan.caller, svc.store.inner
    key = store.get_key(entry.key_id) or plan.key
    assert key is not None
    changed = False
    if entry.description is not None and key.description != entry.description:
        _call(svc, caller, "UpdateKeyDescription",
              {"KeyId": key.key_id, "Description": entry.description})  # fmt: skip
        changed = True
    if entry.tags is not None:
        tags = store.get_tags(key.ref)
        extra = sorted(set(tags) - set(entry.tags))
        if extra:
            _call(svc, caller, "UntagResource", {"KeyId": key.key_id, "TagKeys": extra})
        missing = {k: v for k, v in entry.tags.items() if tags.get(k) != v}
        if missing:
            pairs = [{"TagKey": k, "TagValue": v} for k, v in missing.items()]
            _call(svc, caller, "TagResource", {"KeyId": key.key_id, "Tags": pairs})
        changed = changed or bool(extra or missing)
    if entry.aliases:
        have = {a.alias_name for a in store.aliases_of(key.ref)}
        for name in entry.aliases:
            if name not in have:
                _call(svc, caller, "CreateAlias", {"AliasName": name, "TargetKeyId": key.key_id})
                changed = True
    if entry.policy is not None and key.policy != entry.policy:
        _put_policy(svc, plan)
        changed = True
    return changed


def _undo(svc: Service, created: list[str]) -> list[str]:
    """Delete the keys of ``created`` (token objects first, then the records with their
    aliases and tags); the ids that could not be deleted."""
    from hsmkms.service import imports

    left = []
    for key_id in reversed(created):
        try:
            for material in svc.store.inner.materials(key_id):
                svc.destroy_material(material.material_id)
            imports.destroy_wrapping_keys(svc, key_id)
            svc.store.delete_key(key_id, tombstone=False)  # no blob was ever made under it
            log.warning("seed: deleted key %s again: a later entry failed", key_id)
        except Exception as exc:
            log.error("seed: could not delete key %s again: %s", key_id, exc)
            left.append(key_id)
    return left
