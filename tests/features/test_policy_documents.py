"""Key policy documents AWS refuses or reads in its own way (issue 13, items 6 and 9): a
deeply nested document is MalformedPolicyDocumentException, not a 500; ``Allow`` with
``NotPrincipal`` is refused; ``Deny`` with ``NotPrincipal`` exempts a caller only when every
one of its identities is named (the user or session, the role of a session, the account), as
the IAM User Guide documents ("AWS JSON policy elements: NotPrincipal"). On both faces."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import policy, raises

MALFORMED = "MalformedPolicyDocumentException"


def allow(principal: Any, action: Any = "kms:*", **more: Any) -> dict[str, Any]:
    who = principal if isinstance(principal, dict) or principal == "*" else {"AWS": principal}
    return {"Effect": "Allow", "Principal": who, "Action": action, "Resource": "*"} | more


def new_key(p: Any) -> str:
    return str(p["admin"].create_key()["KeyMetadata"]["KeyId"])


# -- deeply nested JSON (item 6) ----------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        '{"a":' * 25_000,
        json.dumps({"Version": "2012-10-17", "Statement": []})[:-1] + ',"Id":' + "[" * 50_000,
    ],
    ids=["arrays", "objects", "inside-a-policy"],
)
def test_a_deeply_nested_policy_is_malformed_not_a_server_error(principals, text):
    p = principals
    key = new_key(p)
    with raises(MALFORMED, "not valid JSON"):
        p["admin"].create_key(Policy=text)
    with raises(MALFORMED, "not valid JSON"):
        p["admin"].put_key_policy(KeyId=key, PolicyName="default", Policy=text)
    # The server (or library) is fine afterwards.
    assert p["admin"].describe_key(KeyId=key)["KeyMetadata"]["KeyId"] == key


# -- NotPrincipal (item 9) ----------------------------------------------------------------------
def test_allow_with_not_principal_is_refused(principals):
    p = principals
    key = new_key(p)
    grants_everyone = {
        "Effect": "Allow",
        "NotPrincipal": {"AWS": p.arn("carol")},
        "Action": "kms:*",
        "Resource": "*",
    }
    text = policy(allow(p.root("admin")), grants_everyone)
    with raises(MALFORMED, "NotPrincipal"):
        p["admin"].put_key_policy(KeyId=key, PolicyName="default", Policy=text)
    with raises(MALFORMED, "NotPrincipal"):
        p["admin"].create_key(Policy=text)
    # Nothing was changed: bob of another account still cannot use the key.
    arn = p["admin"].describe_key(KeyId=key)["KeyMetadata"]["Arn"]
    with raises("AccessDeniedException"):
        p["bob"].encrypt(KeyId=arn, Plaintext=b"x")


def test_deny_with_not_principal_exempts_only_a_caller_named_with_all_its_identities(principals):
    p = principals
    key = new_key(p)
    arn = p["admin"].describe_key(KeyId=key)["KeyMetadata"]["Arn"]
    a, b = p.root("admin"), p.root("bob")
    role = f"arn:aws:iam::{p.account('app')}:role/app"

    def deny_all_but(*names: str) -> None:
        guard = {
            "Sid": "all-but",
            "Effect": "Deny",
            "NotPrincipal": {"AWS": list(names)},
            "Action": "kms:Encrypt",
            "Resource": "*",
        }
        text = policy(allow(a), allow(b, ["kms:Encrypt"]), guard)
        p["admin"].put_key_policy(KeyId=key, PolicyName="default", Policy=text)

    def exempt() -> set[str]:
        out = set()
        for name in ("admin", "alice", "app", "bob", "carol"):
            try:
                p[name].encrypt(KeyId=arn, Plaintext=b"x")
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "AccessDeniedException"
                assert "explicit deny" in exc.response["Error"]["Message"]
                continue
            out.add(name)
        return out

    # A user named without its account: the request is also evaluated as the account, which
    # the Deny does not exempt, so the user is denied too.
    deny_all_but(p.arn("alice"))
    assert exempt() == set()
    deny_all_but(p.arn("alice"), a)
    assert exempt() == {"alice"}
    deny_all_but(p.arn("bob"), p.account("bob"))  # an account id names the account too
    assert exempt() == {"bob"}
    # The account alone exempts only the account itself (its root user), none of its users.
    deny_all_but(a, b)
    assert exempt() == set()
    # An assumed-role session: the session, its role and the account must all be named.
    deny_all_but(p.arn("app"), a)
    assert exempt() == set()
    deny_all_but(role, a)
    assert exempt() == set()
    deny_all_but(p.arn("app"), role, a)
    assert exempt() == {"app"}
    deny_all_but("*")
    assert exempt() == {"admin", "alice", "app", "bob", "carol"}
