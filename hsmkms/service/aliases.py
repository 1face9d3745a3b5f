"""Aliases: CreateAlias, UpdateAlias, DeleteAlias, ListAliases, with AWS's name rules."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from hsmkms import errors
from hsmkms.service.core import (
    Request,
    alias_arn,
    check_not_pending_deletion,
    now,
    operation,
    resolve_key,
)
from hsmkms.service.keys import check_marker, page_limit
from hsmkms.store import AliasRecord, Conflict, KeyRecord

if TYPE_CHECKING:
    from hsmkms.service import Service

_ALIAS_CHARS = re.compile(r"^alias/[a-zA-Z0-9/_-]+$")


def check_alias_name(name: str) -> None:
    """AWS's rules: the alias/ prefix, [a-zA-Z0-9/_-], and alias/aws/ reserved."""
    if not name.startswith("alias/"):
        raise errors.ValidationException(
            'Alias must start with the prefix "alias/". Please see '
            "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
        )
    if name.startswith("alias/aws/"):
        raise errors.InvalidAliasNameException(
            f"{name} is not a valid alias name: the prefix alias/aws/ is reserved for "
            "AWS managed keys."
        )
    if not _ALIAS_CHARS.match(name):
        raise errors.InvalidAliasNameException(
            f"{name} is not a valid alias name: after alias/ use only letters, digits, "
            "slashes (/), underscores (_) and dashes (-)."
        )


def _alias_entry(alias: AliasRecord) -> dict[str, Any]:
    return {
        "AliasName": alias.alias_name,
        "AliasArn": alias.arn,
        "TargetKeyId": alias.key_id,
        "CreationDate": alias.created_at,
        "LastUpdatedDate": alias.updated_at,
    }


def _target(svc: Service, req: Request) -> KeyRecord:
    target = req.required_text("TargetKeyId")
    if target.startswith("alias/") or ":alias/" in target:
        raise errors.ValidationException(
            "TargetKeyId must be a key ID or key ARN; an alias cannot point to another alias."
        )
    key = svc.authorized_key(req, target, allow_alias=False)
    check_not_pending_deletion(key)
    if key.account_id != req.caller.account_id:
        raise errors.NotFoundException(f"Key '{key.arn}' does not exist")
    return key


@operation("CreateAlias")
def create_alias(svc: Service, req: Request) -> dict[str, Any]:
    name = req.required_text("AliasName")
    check_alias_name(name)
    key = _target(svc, req)
    account, region = req.caller.account_id, svc.region_of(req.caller)
    stamp = now()
    try:
        svc.store.create_alias(AliasRecord(account, region, name, key.key_id, stamp, stamp))
    except Conflict:
        raise errors.AlreadyExistsException(
            f"An alias with the name {alias_arn(region, account, name)} already exists"
        ) from None
    return {}


def _existing(svc: Service, req: Request, name: str) -> AliasRecord:
    check_alias_name(name)
    account, region = req.caller.account_id, svc.region_of(req.caller)
    alias = svc.store.get_alias(account, region, name)
    if alias is None:
        raise errors.NotFoundException(f"Alias {alias_arn(region, account, name)} is not found.")
    return alias


@operation("UpdateAlias")
def update_alias(svc: Service, req: Request) -> dict[str, Any]:
    name = req.required_text("AliasName")
    alias = _existing(svc, req, name)
    # AWS: kms:UpdateAlias on the key the alias leaves as well as on the one it moves to.
    current = svc.authorized_key(req, alias.key_id, allow_alias=False)
    key = _target(svc, req)
    if current.key_usage != key.key_usage:
        raise errors.ValidationException(
            "An alias can only be moved to a KMS key of the same key usage."
        )
    svc.store.update_alias(
        req.caller.account_id, svc.region_of(req.caller), name, key.key_id, now()
    )
    return {}


@operation("DeleteAlias")
def delete_alias(svc: Service, req: Request) -> dict[str, Any]:
    name = req.required_text("AliasName")
    alias = _existing(svc, req, name)
    svc.authorized_key(req, alias.key_id, allow_alias=False)  # kms:DeleteAlias on the key
    svc.store.delete_alias(req.caller.account_id, svc.region_of(req.caller), name)
    return {}


@operation("ListAliases")
def list_aliases(svc: Service, req: Request) -> dict[str, Any]:
    limit = page_limit(req, 50)
    marker = check_marker(req.text("Marker"))
    key_id = req.text("KeyId")
    if key_id is not None:
        # Account-level (IAM-only in AWS): the key policy is not consulted.
        key_id = resolve_key(svc, req.caller, key_id, allow_alias=False).key_id
    rows = svc.store.list_aliases(
        req.caller.account_id, svc.region_of(req.caller), key_id, marker, limit + 1
    )
    out: dict[str, Any] = {
        "Aliases": [_alias_entry(a) for a in rows[:limit]],
        "Truncated": len(rows) > limit,
    }
    if len(rows) > limit:
        out["NextMarker"] = rows[limit - 1].alias_name
    return out
