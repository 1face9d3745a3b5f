"""Grants: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant, grant
tokens, and the grant half of authorization (:func:`allowing_grant`).

What is copied from AWS KMS ("Grants in AWS KMS", the CreateGrant/RetireGrant API reference,
"GrantConstraints"):

* A grant lets its grantee principal call the listed operations on one key, in addition to the
  key policy; an explicit Deny of the key policy still wins (:mod:`hsmkms.service.policy`).
* The operations a grant may allow depend on the key's type (:func:`grant_operations`): an
  asymmetric key has no data keys, a SIGN_VERIFY key no Encrypt, an HMAC key only MACs.
* Constraints ``EncryptionContextEquals`` / ``EncryptionContextSubset`` apply to operations
  that take an encryption context (a symmetric key's; a grant of any other but DescribeKey,
  RetireGrant and CreateGrant may not have them); keys compare case-insensitively, values
  case-sensitively, and two pairs whose keys differ only in case stay two pairs (they never
  equal one pair). A grantee with CreateGrant may create grants only for a subset of its
  operations, with an equally strict or stricter constraint.
* ``Name`` makes CreateGrant idempotent: the same name and the same parameters answer the
  existing GrantId (with a new token, as AWS answers a new token on every call).
* A grant may be retired by its retiring principal, by its grantee if it allows RetireGrant,
  and by the account the grant was created in (no IAM here: any principal of the key's or of
  the issuing account); revoked by whoever the key policy allows kms:RevokeGrant.
* A grant token is an opaque url-safe string that names its grant; one hsmkms did not issue,
  or whose grant is gone, is InvalidGrantTokenException. Without a token the data plane sees
  grants through the per-process cache (eventual consistency within ``cache_ttl``); with one,
  its grant is read from the store itself and is effective at once in every process (AWS:
  "use the permissions in the grant immediately").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hsmkms import errors
from hsmkms.service.core import (
    Request,
    check_dry_run,
    check_not_pending_deletion,
    now,
    operation,
    resolve_key,
)
from hsmkms.service.keys import page_limit
from hsmkms.service.policy import access_denied
from hsmkms.service.policy_eval import PRINCIPAL_ARN, RequestContext, principal_names
from hsmkms.specs import GrantOperation, KeySpec, KeyUsage
from hsmkms.store import GrantRecord

if TYPE_CHECKING:
    from hsmkms.identity import Caller
    from hsmkms.service import Service
    from hsmkms.store import KeyRecord

GRANT_ID = re.compile(r"^[0-9a-f]{64}$")
_G = GrantOperation
# Operations whose request has an encryption context: the ones constraints apply to.
CONTEXT_OPERATIONS: frozenset[GrantOperation] = frozenset(
    {_G.DECRYPT, _G.ENCRYPT, _G.RE_ENCRYPT_FROM, _G.RE_ENCRYPT_TO}
    | {op for op in GrantOperation if op.startswith("GenerateDataKey")}  # the four of them
)
# The grant operations of every key type; the constraints never apply to them.
_MANAGEMENT = frozenset({_G.CREATE_GRANT, _G.RETIRE_GRANT, _G.DESCRIBE_KEY})
# The grant operations AWS allows by key type (AWS KMS Developer Guide, "Grant operations").
SYMMETRIC_OPERATIONS: frozenset[GrantOperation] = CONTEXT_OPERATIONS | _MANAGEMENT
_PUBLIC = _MANAGEMENT | {_G.GET_PUBLIC_KEY}
OPERATIONS_BY_USAGE: dict[KeyUsage, frozenset[GrantOperation]] = {
    KeyUsage.ENCRYPT_DECRYPT: _PUBLIC  # asymmetric (RSA, SM2): no data keys
    | {_G.DECRYPT, _G.ENCRYPT, _G.RE_ENCRYPT_FROM, _G.RE_ENCRYPT_TO},
    KeyUsage.SIGN_VERIFY: _PUBLIC | {_G.SIGN, _G.VERIFY},
    KeyUsage.GENERATE_VERIFY_MAC: _MANAGEMENT | {_G.GENERATE_MAC, _G.VERIFY_MAC},
    KeyUsage.KEY_AGREEMENT: _PUBLIC | {_G.DERIVE_SHARED_SECRET},
    # ML-KEM (not in the list we followed): by the same rule; hsmkms makes no such key yet.
    KeyUsage.ENCAPSULATE_DECAPSULATE: _PUBLIC | {_G.ENCAPSULATE, _G.DECAPSULATE},
}


def grant_operations(key: KeyRecord) -> frozenset[GrantOperation]:
    """The operations a grant on ``key`` may allow: those AWS allows for its key type."""
    if key.key_spec == KeySpec.SYMMETRIC_DEFAULT:
        return SYMMETRIC_OPERATIONS
    return OPERATIONS_BY_USAGE.get(KeyUsage(key.key_usage), _MANAGEMENT)


def context_operations(key: KeyRecord) -> frozenset[GrantOperation]:
    """The operations on ``key`` that take an encryption context (and so grant constraints):
    none on an asymmetric or HMAC key."""
    return CONTEXT_OPERATIONS if key.key_spec == KeySpec.SYMMETRIC_DEFAULT else frozenset()


EQUALS = "EncryptionContextEquals"
SUBSET = "EncryptionContextSubset"

_TOKEN_VERSION = 1
_TOKEN_NONCE = 64
_TOKEN_CHECK = 4
_TOKEN_LEN = 1 + 32 + _TOKEN_NONCE + _TOKEN_CHECK


# -- tokens -------------------------------------------------------------------------------
def new_token(grant_id: str) -> str:
    """A fresh grant token for ``grant_id``: version, grant id, random bytes, a check value,
    url-safe base64 without padding. Tokens are not secrets (AWS says so too): a token only
    names a grant, and the grant only serves its grantee."""
    body = bytes([_TOKEN_VERSION]) + bytes.fromhex(grant_id) + secrets.token_bytes(_TOKEN_NONCE)
    check = hashlib.sha256(body).digest()[:_TOKEN_CHECK]
    return base64.urlsafe_b64encode(body + check).rstrip(b"=").decode("ascii")


def grant_id_of_token(token: str) -> str:
    """The grant id a token names; InvalidGrantTokenException for a token hsmkms did not issue."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    body, check = raw[:-_TOKEN_CHECK], raw[-_TOKEN_CHECK:]
    if (
        len(raw) != _TOKEN_LEN
        or raw[0] != _TOKEN_VERSION
        or hashlib.sha256(body).digest()[:_TOKEN_CHECK] != check
    ):
        raise errors.InvalidGrantTokenException("The grant token is not valid.")
    return raw[1:33].hex()


# -- authorization --------------------------------------------------------------------------
def grantee_candidates(caller: Caller) -> list[str]:
    """The grantee principals that name ``caller``: its ARN, its account (id and root ARN),
    and, for an assumed-role session, its role (without a path)."""
    out = [caller.principal_arn, caller.account_id, f"arn:aws:iam::{caller.account_id}:root"]
    m = re.match(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/", caller.principal_arn)
    if m:
        out.append(f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}")
    return out


def _pairs(context: Mapping[str, str] | None) -> Counter[tuple[str, str]] | None:
    """The pairs of a context, keys in lower case and values as they are. Two keys that differ
    only in case stay two pairs: folding them into one mapping kept only the last value, so
    ``{"Dept": "hr", "dept": "finance"}`` equalled ``{"dept": "finance"}``."""
    return None if context is None else Counter((k.lower(), v) for k, v in context.items())


def context_satisfies(
    constraints: Mapping[str, Mapping[str, str]], context: Mapping[str, str] | None
) -> bool:
    """Whether a request's encryption context meets a grant's constraints (AWS: keys compare
    case-insensitively, values case-sensitively). Equals: the request's pairs are the
    constraint's, one for one; Subset: each constraint pair has a request pair of its own."""
    request = _pairs(context) or Counter()
    equals = _pairs(constraints.get(EQUALS))
    if equals is not None and equals != request:
        return False
    subset = _pairs(constraints.get(SUBSET))
    return subset is None or subset <= request


def at_least_as_strict(
    child: Mapping[str, Mapping[str, str]], parent: Mapping[str, Mapping[str, str]]
) -> bool:
    """Whether a new grant's constraints are as strict as its parent grant's, or stricter:
    every context the child allows, the parent allows (compared as :func:`context_satisfies`
    compares)."""
    p_equals, p_subset = _pairs(parent.get(EQUALS)), _pairs(parent.get(SUBSET))
    c_equals, c_subset = _pairs(child.get(EQUALS)), _pairs(child.get(SUBSET))
    if p_equals is not None and c_equals != p_equals:
        return False
    if p_subset is not None:
        covers = [c for c in (c_equals, c_subset) if c is not None]
        if not any(p_subset <= c for c in covers):
            return False
    return True


def allowing_grant(
    svc: Service, req: Request, key: KeyRecord, ctx: RequestContext
) -> GrantRecord | None:
    """A grant on ``key`` that allows this request to ``req.caller``, or None."""
    operation_name = ctx.action.split(":", 1)[1]
    if operation_name not in grant_operations(key):
        return None
    for grant in _grants_of_caller(svc, req, key):
        if operation_name not in grant.operations:
            continue
        if operation_name in context_operations(key) and not context_satisfies(
            grant.constraints, ctx.encryption_context
        ):
            continue
        if operation_name == GrantOperation.CREATE_GRANT and not (
            set(req.texts("Operations")) <= set(grant.operations)
            and at_least_as_strict(_requested_constraints(req), grant.constraints)
        ):
            continue
        return grant
    return None


def _grants_of_caller(svc: Service, req: Request, key: KeyRecord) -> list[GrantRecord]:
    """The grants on ``key`` whose grantee names the caller. Those the request's grant tokens
    name are read from the store itself (AWS: a grant token makes its grant usable at once,
    in every process); the rest through the cache, which may be a ttl behind another
    process (eventual consistency, as AWS documents for grants)."""
    candidates = grantee_candidates(req.caller)
    tokened = [
        grant
        for grant in map(svc.store.inner.get_grant, dict.fromkeys(req.grant_ids))
        if grant is not None and grant.key_id == key.ref and grant.grantee_principal in candidates
    ]
    seen = {grant.grant_id for grant in tokened}
    cached = svc.store.grants_for_grantees(key.ref, candidates)
    return tokened + [grant for grant in cached if grant.grant_id not in seen]


def may_retire(caller: Caller, grant: GrantRecord, key: KeyRecord) -> bool:
    """AWS: the retiring principal; the grantee if the grant allows RetireGrant; the account
    in which the grant was created."""
    arn, account = caller.principal_arn, caller.account_id
    if grant.retiring_principal and principal_names(grant.retiring_principal, arn, account):
        return True
    if GrantOperation.RETIRE_GRANT in grant.operations and principal_names(
        grant.grantee_principal, arn, account
    ):
        return True
    return account in (key.account_id, grant.issuing_account)


# -- requests -------------------------------------------------------------------------------
def _check_principal(member: str, value: str) -> None:
    if not PRINCIPAL_ARN.match(value):
        raise errors.InvalidArnException(
            f"{member} {value} is not a valid principal ARN: use the ARN of an account "
            "(arn:aws:iam::111122223333:root), IAM user, IAM role or assumed-role session."
        )


def _check_grant_id(grant_id: str) -> None:
    if not GRANT_ID.match(grant_id):
        raise errors.InvalidGrantIdException(f"Grant ID {grant_id} is not valid.")


def _requested_constraints(req: Request) -> Mapping[str, Any]:
    """CreateGrant's Constraints as the model checked them; {} when the request has none."""
    constraints: Mapping[str, Any] = req.params.get("Constraints") or {}
    return constraints


def _refuse_service_principals(req: Request) -> None:
    if (
        req.text("GranteeServicePrincipal")
        or req.text("RetiringServicePrincipal")
        or _requested_constraints(req).get("SourceArn")
    ):
        raise errors.UnsupportedOperationException(
            "Service principals (GranteeServicePrincipal, RetiringServicePrincipal, the "
            "SourceArn constraint) are not supported by hsmkms: no AWS service acts here."
        )


def _operations(key: KeyRecord, requested: list[str]) -> tuple[GrantOperation, ...]:
    allowed = grant_operations(key)
    out: list[GrantOperation] = []
    for op in requested:
        if op not in allowed:
            raise errors.ValidationException(
                f"Grant operation {op} is not valid for {key.arn}: its KeySpec is "
                f"{key.key_spec} and its KeyUsage is {key.key_usage}."
            )
        if op not in out:
            out.append(GrantOperation(op))
    return tuple(out)


def _constraints(
    key: KeyRecord, operations: tuple[GrantOperation, ...], raw: Mapping[str, Any] | None
) -> dict[str, dict[str, str]]:
    """The grant's constraints, allowed only if each of its operations takes an encryption
    context or is CreateGrant, RetireGrant or DescribeKey (AWS refuses them for asymmetric
    and HMAC keys' operations, which take none)."""
    out: dict[str, dict[str, str]] = {}
    for name in (EQUALS, SUBSET):
        value = (raw or {}).get(name)
        if value is not None:
            out[name] = dict(value)
    if out:
        bare = [op for op in operations if op not in context_operations(key) | _MANAGEMENT]
        if bare:
            raise errors.ValidationException(
                f"Grant constraints {' and '.join(out)} are not valid for grant operation "
                f"{bare[0]} on {key.arn}: with KeySpec {key.key_spec} it takes no encryption "
                "context."
            )
    return out


def _same_grant(
    grant: GrantRecord,
    grantee: str,
    retiring: str | None,
    operations: tuple[GrantOperation, ...],
    constraints: dict[str, dict[str, str]],
) -> bool:
    return (
        grant.grantee_principal == grantee
        and grant.retiring_principal == retiring
        and set(grant.operations) == set(operations)
        and json.dumps(grant.constraints, sort_keys=True) == json.dumps(constraints, sort_keys=True)
    )


def grant_entry(grant: GrantRecord, key_arn: str) -> dict[str, Any]:
    """A GrantListEntry as ListGrants answers it."""
    entry: dict[str, Any] = {
        "KeyId": key_arn,
        "GrantId": grant.grant_id,
        "CreationDate": grant.created_at,
        "GranteePrincipal": grant.grantee_principal,
        "IssuingAccount": f"arn:aws:iam::{grant.issuing_account}:root",
        "Operations": list(grant.operations),
    }
    if grant.name:
        entry["Name"] = grant.name
    if grant.retiring_principal:
        entry["RetiringPrincipal"] = grant.retiring_principal
    if grant.constraints:
        entry["Constraints"] = grant.constraints
    return entry


def _page(rows: list[GrantRecord], limit: int, arn_of: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Grants": [grant_entry(g, arn_of(g)) for g in rows[:limit]],
        "Truncated": len(rows) > limit,
    }
    if len(rows) > limit:
        out["NextMarker"] = rows[limit - 1].grant_id
    return out


def _marker(req: Request) -> str | None:
    marker = req.text("Marker")
    if marker is not None and not GRANT_ID.match(marker):
        raise errors.InvalidMarkerException("The marker is invalid.")
    return marker


@operation("CreateGrant")
def create_grant(svc: Service, req: Request) -> dict[str, Any]:
    _refuse_service_principals(req)
    grantee = req.text("GranteePrincipal")
    if grantee is None:
        raise errors.ValidationException(
            "Either GranteePrincipal or GranteeServicePrincipal must be specified."
        )
    _check_principal("GranteePrincipal", grantee)
    retiring = req.text("RetiringPrincipal")
    if retiring is not None:
        _check_principal("RetiringPrincipal", retiring)
    key = svc.authorized_key(req, req.key_id, allow_alias=False)
    check_not_pending_deletion(key)
    operations = _operations(key, req.texts("Operations"))
    constraints = _constraints(key, operations, _requested_constraints(req))
    check_dry_run(req)
    name = req.text("Name") or ""
    if name:
        for existing in svc.store.grants_named(key.ref, name):
            if _same_grant(existing, grantee, retiring, operations, constraints):
                return {"GrantId": existing.grant_id, "GrantToken": new_token(existing.grant_id)}
    grant = GrantRecord(
        grant_id=secrets.token_hex(32),
        key_id=key.ref,
        grantee_principal=grantee,
        operations=operations,
        issuing_account=req.caller.account_id,
        created_at=now(),
        name=name,
        retiring_principal=retiring,
        constraints=constraints,
    )
    svc.store.create_grant(grant)
    return {"GrantId": grant.grant_id, "GrantToken": new_token(grant.grant_id)}


@operation("ListGrants")
def list_grants(svc: Service, req: Request) -> dict[str, Any]:
    key = svc.authorized_key(req, req.key_id, allow_alias=False)
    limit = page_limit(req, 50)
    marker = _marker(req)
    grantee = req.text("GranteePrincipal")
    if req.text("GranteeServicePrincipal") is not None:
        return {"Grants": [], "Truncated": False}  # hsmkms holds no service grants
    grant_id = req.text("GrantId")
    if grant_id is not None:
        _check_grant_id(grant_id)
        grant = svc.store.get_grant(grant_id)
        if grant is None or grant.key_id != key.ref:
            raise errors.InvalidGrantIdException(f"Grant ID {grant_id} is not valid.")
        matches = grantee is None or grant.grantee_principal == grantee
        rows = [grant] if matches and (marker is None or grant_id > marker) else []
    else:
        rows = svc.store.list_grants(key.ref, marker, limit + 1, grantee)
    return _page(rows, limit, lambda g: key.arn)


def _account_of(principal: str) -> str | None:
    m = PRINCIPAL_ARN.match(principal)
    return m.group(2) if m else None


@operation("ListRetirableGrants")
def list_retirable_grants(svc: Service, req: Request) -> dict[str, Any]:
    if req.text("RetiringServicePrincipal") is not None:
        return {"Grants": [], "Truncated": False}  # hsmkms holds no service grants
    principal = req.text("RetiringPrincipal")
    if principal is None:
        raise errors.ValidationException(
            "Either RetiringPrincipal or RetiringServicePrincipal must be specified."
        )
    _check_principal("RetiringPrincipal", principal)
    caller = req.caller
    # Account-level (IAM in AWS): a principal lists the grants retirable by its own account.
    if _account_of(principal) != caller.account_id:
        raise errors.AccessDeniedException(
            f"User: {caller.principal_arn} is not authorized to perform: "
            f"kms:ListRetirableGrants on resource: {principal} because no identity-based "
            "policy allows the kms:ListRetirableGrants action"
        )
    limit = page_limit(req, 50)
    rows = svc.store.retirable_grants(principal, _marker(req), limit + 1)
    arns: dict[str, str] = {}

    def arn_of(grant: GrantRecord) -> str:
        if grant.key_id not in arns:
            key = svc.store.get_key(grant.key_id)
            arns[grant.key_id] = key.arn if key else grant.key_id
        return arns[grant.key_id]

    return _page(rows, limit, arn_of)


@operation("RetireGrant")
def retire_grant(svc: Service, req: Request) -> dict[str, Any]:
    token, key_id, grant_id = req.text("GrantToken"), req.text("KeyId"), req.text("GrantId")
    if token is not None:
        token_grant = grant_id_of_token(token)
        if grant_id is not None and grant_id != token_grant:
            raise errors.InvalidGrantIdException(
                f"Grant ID {grant_id} is not the grant of the grant token."
            )
        grant = svc.store.get_grant(token_grant)
        if grant is None:
            raise errors.InvalidGrantTokenException("The grant token is not valid.")
        if key_id is not None:
            named = resolve_key(svc, req.caller, key_id, allow_alias=False)
            if named.ref != grant.key_id:
                raise errors.InvalidGrantIdException(
                    f"The grant of the grant token is not a grant of {named.arn}."
                )
    elif key_id is not None and grant_id is not None:
        named = resolve_key(svc, req.caller, key_id, allow_alias=False)
        _check_grant_id(grant_id)
        found = svc.store.get_grant(grant_id)
        if found is None or found.key_id != named.ref:
            raise errors.InvalidGrantIdException(f"Grant ID {grant_id} is not valid.")
        grant = found
    else:
        raise errors.ValidationException("Grant token OR (grant ID, key ID) must be specified")
    key = svc.store.get_key(grant.key_id)
    if key is None:
        raise errors.InvalidGrantIdException(f"Grant ID {grant.grant_id} is not valid.")
    if not may_retire(req.caller, grant, key):
        raise access_denied(req.caller, "kms:RetireGrant", key.arn)
    check_dry_run(req)
    svc.store.delete_grant(grant.grant_id)
    return {}


@operation("RevokeGrant")
def revoke_grant(svc: Service, req: Request) -> dict[str, Any]:
    key = svc.authorized_key(req, req.key_id, allow_alias=False)
    grant_id = req.required_text("GrantId")
    _check_grant_id(grant_id)
    grant = svc.store.get_grant(grant_id)
    if grant is None or grant.key_id != key.ref:
        raise errors.InvalidGrantIdException(f"Grant ID {grant_id} is not valid.")
    check_dry_run(req)
    svc.store.delete_grant(grant_id)
    return {}
