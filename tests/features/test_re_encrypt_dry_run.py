"""ReEncrypt with DryRun and IGNORE_CIPHERTEXT: the source key is authorized as a real
ReEncrypt authorizes it, for kms:ReEncryptFrom with the SourceEncryptionContext (there is no
kms:ReEncrypt action), and the destination for kms:ReEncryptTo (issue 13, item 7)."""

from __future__ import annotations

import json
from typing import Any

from helpers import raises

DRY = {"DryRun": True, "DryRunModifiers": ["IGNORE_CIPHERTEXT"]}
SOURCE_CONTEXT = {"dept": "finance"}


def statement(effect: str, principal: str, actions: list[str], **more: Any) -> dict[str, Any]:
    st = {"Effect": effect, "Principal": {"AWS": principal}, "Action": actions, "Resource": "*"}
    return st | more


def key_with(p: Any, *statements: dict[str, Any]) -> str:
    """A key of account A that its admin keeps, and ``statements`` besides; its ARN."""
    admin = statement("Allow", p.root("admin"), ["kms:*"])
    text = json.dumps({"Version": "2012-10-17", "Statement": [admin, *statements]})
    return str(p["admin"].create_key(Policy=text)["KeyMetadata"]["Arn"])


def re_encrypt_dry(p: Any, who: str, source: str, dest: str, **kw: Any) -> None:
    p[who].re_encrypt(SourceKeyId=source, DestinationKeyId=dest, **DRY, **kw)


def test_a_principal_allowed_only_re_encrypt_from_and_to_would_succeed(principals):
    p = principals
    bob = p.arn("bob")
    source = key_with(p, statement("Allow", bob, ["kms:ReEncryptFrom"]))
    dest = key_with(p, statement("Allow", bob, ["kms:ReEncryptTo"]))
    with raises("DryRunOperationException"):
        re_encrypt_dry(p, "bob", source, dest)
    with raises("DryRunOperationException"):
        re_encrypt_dry(p, "bob", source, dest, SourceEncryptionContext=SOURCE_CONTEXT)
    with raises("AccessDeniedException", "kms:ReEncryptFrom"):
        re_encrypt_dry(p, "bob", dest, dest)  # dest does not allow bob ReEncryptFrom


def test_a_principal_denied_re_encrypt_from_for_the_source_context_is_refused(principals):
    p = principals
    bob = p.arn("bob")
    finance = {"StringEquals": {"kms:EncryptionContext:dept": "finance"}}
    source = key_with(
        p,
        statement("Allow", bob, ["kms:ReEncrypt*"]),
        statement("Deny", bob, ["kms:ReEncryptFrom"], Condition=finance),
    )
    dest = key_with(p, statement("Allow", bob, ["kms:ReEncryptTo"]))
    with raises("AccessDeniedException", "kms:ReEncryptFrom") as info:
        re_encrypt_dry(p, "bob", source, dest, SourceEncryptionContext=SOURCE_CONTEXT)
    assert "explicit deny" in info.value.response["Error"]["Message"]
    with raises("DryRunOperationException"):  # the Deny needs the finance source context
        re_encrypt_dry(p, "bob", source, dest, DestinationEncryptionContext=SOURCE_CONTEXT)


def test_a_grant_of_re_encrypt_from_with_a_constraint_serves_the_dry_run(principals):
    p = principals
    source = key_with(p)
    dest = key_with(p, statement("Allow", p.arn("bob"), ["kms:ReEncryptTo"]))
    p["admin"].create_grant(
        KeyId=source,
        GranteePrincipal=p.arn("bob"),
        Operations=["ReEncryptFrom"],
        Constraints={"EncryptionContextEquals": SOURCE_CONTEXT},
    )
    with raises("DryRunOperationException"):
        re_encrypt_dry(p, "bob", source, dest, SourceEncryptionContext=SOURCE_CONTEXT)
    with raises("AccessDeniedException", "kms:ReEncryptFrom"):
        re_encrypt_dry(p, "bob", source, dest, SourceEncryptionContext={"dept": "hr"})


def test_a_deny_of_re_encrypt_to_on_the_same_key_applies_to_the_dry_run(principals):
    p = principals
    bob = p.arn("bob")
    same_key = {"Bool": {"kms:ReEncryptOnSameKey": "true"}}
    key = key_with(
        p,
        statement("Allow", bob, ["kms:ReEncrypt*"]),
        statement("Deny", bob, ["kms:ReEncryptTo"], Condition=same_key),
    )
    other = key_with(p, statement("Allow", bob, ["kms:ReEncrypt*"]))
    with raises("AccessDeniedException", "kms:ReEncryptTo"):  # the blob would name the key
        re_encrypt_dry(p, "bob", key, key)
    with raises("DryRunOperationException"):
        re_encrypt_dry(p, "bob", other, key)
