"""Key policies: AWS's default policy and a first, fail-closed evaluation.

Until full policy evaluation lands (conditions, grants), the rule is:
- an explicit Deny statement without conditions whose Principal and Action match denies;
- a caller of the key's own account is allowed (the default policy gives the account root
  kms:*, which here means every principal of that account);
- a caller of another account is allowed only by an Allow statement without conditions whose
  Principal names it (its ARN, its account root or id, or "*") and whose Action matches.
Statements with conditions are skipped for Allow and for Deny alike (not yet evaluated), so a
conditional grant to another account denies rather than over-grants.
"""

from __future__ import annotations

import fnmatch
import json
from typing import TYPE_CHECKING, Any

from hsmkms import errors

if TYPE_CHECKING:
    from hsmkms.kms import Caller
    from hsmkms.store import KeyRecord


def default_policy(account_id: str) -> str:
    """The default key policy AWS KMS gives a key created without one."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=2,
    )


def parse_policy(text: str) -> dict[str, Any]:
    """A key policy document, or MalformedPolicyDocumentException."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise errors.MalformedPolicyDocumentException(
            "The new key policy is not valid JSON."
        ) from None
    statements = doc.get("Statement") if isinstance(doc, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise errors.MalformedPolicyDocumentException(
            "The key policy must contain a Statement list."
        )
    for st in statements:
        if not isinstance(st, dict) or st.get("Effect") not in ("Allow", "Deny"):
            raise errors.MalformedPolicyDocumentException(
                "Each policy statement must be an object with Effect Allow or Deny."
            )
        if "Action" not in st and "NotAction" not in st:
            raise errors.MalformedPolicyDocumentException(
                "Each policy statement must have an Action or NotAction."
            )
    return doc


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _principal_matches(principal: Any, caller: Caller) -> bool:
    if principal == "*":
        return True
    names = _as_list(principal.get("AWS")) if isinstance(principal, dict) else []
    for name in names:
        if name in ("*", caller.principal_arn, caller.account_id,
                    f"arn:aws:iam::{caller.account_id}:root"):
            return True
    return False


def _action_matches(statement: dict[str, Any], action: str) -> bool:
    if "Action" in statement:
        return any(fnmatch.fnmatchcase(action.lower(), str(a).lower())
                   for a in _as_list(statement["Action"]))
    return not any(fnmatch.fnmatchcase(action.lower(), str(a).lower())
                   for a in _as_list(statement.get("NotAction")))


def authorize(key: KeyRecord, caller: Caller, operation: str) -> None:
    """Raise AccessDeniedException unless ``caller`` may do ``kms:<operation>`` on ``key``."""
    action = f"kms:{operation}"
    try:
        statements = _as_list(json.loads(key.policy).get("Statement"))
    except (ValueError, AttributeError):
        statements = []
    allowed = caller.account_id == key.account_id
    for st in statements:
        if not isinstance(st, dict) or "Condition" in st:
            continue
        if not _principal_matches(st.get("Principal"), caller):
            continue
        if not _action_matches(st, action):
            continue
        if st.get("Effect") == "Deny":
            _deny(caller, action, key, "an explicit deny in a resource-based policy")
        if st.get("Effect") == "Allow":
            allowed = True
    if not allowed:
        _deny(caller, action, key, f"no resource-based policy allows the {action} action")


def _deny(caller: Caller, action: str, key: KeyRecord, why: str) -> None:
    raise errors.AccessDeniedException(
        f"User: {caller.principal_arn} is not authorized to perform: {action} on resource: "
        f"{key.arn} because {why}"
    )
