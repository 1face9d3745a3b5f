"""Condition keys a Deny used to fail open on (issue 13, item 2), on both faces: hsmkms now
fills ``aws:SecureTransport``, ``aws:ResourceTag/<key>``, ``aws:RequestedRegion`` and the
others it can know; a key that AWS leaves out of a direct call (``kms:ViaService``...) is
evaluated as missing, as AWS does; a key hsmkms cannot know (``aws:PrincipalTag/<key>``,
``aws:PrincipalOrgID``...) is refused in a new policy, naming the key. Each kind is tried in
an Allow and in a Deny. See docs/authorization.md, "Condition keys"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import policy, raises, self_signed_certificate, statement

from hsmkms.service.policy_eval import Decision, RequestContext, evaluate, parse


def key_with(p: Any, *statements: dict[str, Any], **create: Any) -> str:
    """A key of account A (admin keeps kms:*) whose policy adds ``statements``."""
    meta = p["admin"].create_key(**create)["KeyMetadata"]
    text = policy(statement("Allow", p.root("admin"), "kms:*"), *statements)
    p["admin"].put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=text)
    return str(meta["Arn"])


def outcome(client: Any, arn: str) -> str:
    """ "ok", "explicit" (a Deny applied) or "implicit" (nothing allowed) for an Encrypt."""
    try:
        client.encrypt(KeyId=arn, Plaintext=b"x")
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDeniedException"
        return "explicit" if "explicit deny" in exc.response["Error"]["Message"] else "implicit"
    return "ok"


# -- filled: aws:SecureTransport -------------------------------------------------------------------
def test_a_deny_of_plain_transport_applies_to_a_caller_without_tls(principals):
    # Both faces here call without TLS: HTTP in clear, and the library acting as a Caller made
    # by hand (which says false, the stricter value).
    p = principals
    arn = key_with(
        p,
        statement("Allow", p.root("bob"), "kms:Encrypt"),
        statement("Deny", "*", "kms:Encrypt", {"Bool": {"aws:SecureTransport": "false"}}),
    )
    assert outcome(p["bob"], arn) == "explicit"
    assert outcome(p["admin"], arn) == "explicit"


def test_an_allow_that_needs_tls_does_not_allow_a_caller_without_it(principals):
    p = principals
    arn = key_with(
        p, statement("Allow", p.root("bob"), "kms:Encrypt", {"Bool": {"aws:SecureTransport": True}})
    )
    assert outcome(p["bob"], arn) == "implicit"


def test_the_library_face_default_caller_counts_as_secure_transport(library):
    from hsmkms.home import new_identity

    admin = library  # the home's admin, through the library's default caller
    arn = admin.create_key()["KeyMetadata"]["Arn"]
    account = arn.split(":")[4]
    carol = new_identity(account, "carol-tls")
    text = policy(
        statement("Allow", f"arn:aws:iam::{account}:root", "kms:*"),
        statement("Deny", "*", "kms:Encrypt", {"Bool": {"aws:SecureTransport": "false"}}),
    )
    admin.put_key_policy(KeyId=arn, PolicyName="default", Policy=text)
    assert outcome(library.as_caller(carol.caller()), arn) == "ok"  # Identity.caller(): true


@pytest.mark.slow
def test_over_tls_aws_secure_transport_is_true(tmp_path: Path):
    from server import ServerProcess

    tls = self_signed_certificate(tmp_path)
    with ServerProcess(tmp_path / "home", tls=tls) as srv:
        client = srv.client()
        arn = client.create_key()["KeyMetadata"]["Arn"]
        account = arn.split(":")[4]
        only_tls = statement("Deny", "*", "kms:Encrypt", {"Bool": {"aws:SecureTransport": False}})
        text = policy(statement("Allow", f"arn:aws:iam::{account}:root", "kms:*"), only_tls)
        client.put_key_policy(KeyId=arn, PolicyName="default", Policy=text)
        assert outcome(client, arn) == "ok"
        must_not = statement("Deny", "*", "kms:Encrypt", {"Bool": {"aws:SecureTransport": True}})
        text = policy(statement("Allow", f"arn:aws:iam::{account}:root", "kms:*"), must_not)
        client.put_key_policy(KeyId=arn, PolicyName="default", Policy=text)
        assert outcome(client, arn) == "explicit"


# -- filled: aws:ResourceTag/<key> -----------------------------------------------------------------
def test_a_deny_on_a_resource_tag_applies_to_the_tagged_key_only(principals):
    p = principals
    guard = statement(
        "Deny", "*", "kms:Encrypt", {"StringEquals": {"aws:ResourceTag/classification": "secret"}}
    )
    tagged = key_with(p, guard, Tags=[{"TagKey": "classification", "TagValue": "secret"}])
    plain = key_with(p, guard)
    assert outcome(p["admin"], tagged) == "explicit"
    assert outcome(p["admin"], plain) == "ok"
    # The tag key is matched in any case; untagging lifts the Deny at once.
    p["admin"].untag_resource(KeyId=tagged, TagKeys=["classification"])
    p["admin"].tag_resource(KeyId=tagged, Tags=[{"TagKey": "Classification", "TagValue": "x"}])
    assert outcome(p["admin"], tagged) == "ok"
    p["admin"].tag_resource(KeyId=tagged, Tags=[{"TagKey": "Classification", "TagValue": "secret"}])
    assert outcome(p["admin"], tagged) == "explicit"


def test_an_allow_on_a_resource_tag_allows_on_the_tagged_key_only(principals):
    p = principals
    team = statement(
        "Allow", p.root("bob"), "kms:Encrypt", {"StringEquals": {"aws:ResourceTag/team": "blue"}}
    )
    blue = key_with(p, team, Tags=[{"TagKey": "team", "TagValue": "blue"}])
    red = key_with(p, team, Tags=[{"TagKey": "team", "TagValue": "red"}])
    assert outcome(p["bob"], blue) == "ok"
    assert outcome(p["bob"], red) == "implicit"


def test_tag_resource_carries_request_tags_and_tag_keys(principals):
    p = principals
    no_owner_tags = statement(
        "Deny",
        "*",
        ["kms:TagResource", "kms:UntagResource"],
        {"ForAnyValue:StringEquals": {"aws:TagKeys": "owner"}},
    )
    no_prod = statement(
        "Deny", "*", "kms:TagResource", {"StringEquals": {"aws:RequestTag/stage": "prod"}}
    )
    arn = key_with(p, no_owner_tags, no_prod)
    p["admin"].tag_resource(KeyId=arn, Tags=[{"TagKey": "stage", "TagValue": "test"}])
    with raises("AccessDeniedException", "explicit deny"):
        p["admin"].tag_resource(KeyId=arn, Tags=[{"TagKey": "stage", "TagValue": "prod"}])
    with raises("AccessDeniedException", "explicit deny"):
        p["admin"].tag_resource(KeyId=arn, Tags=[{"TagKey": "owner", "TagValue": "me"}])
    with raises("AccessDeniedException", "explicit deny"):
        p["admin"].untag_resource(KeyId=arn, TagKeys=["owner"])
    p["admin"].untag_resource(KeyId=arn, TagKeys=["stage"])


# -- filled: aws:RequestedRegion and the caller's ARN ----------------------------------------------
def test_requested_region_is_the_region_the_service_serves(principals):
    p = principals
    region = p["admin"].create_key()["KeyMetadata"]["Arn"].split(":")[3]
    here = {"StringEquals": {"aws:RequestedRegion": region}}
    elsewhere = {
        "StringEquals": {
            "aws:RequestedRegion": "eu-west-3" if region != "eu-west-3" else "us-east-2"
        }
    }
    assert (
        outcome(p["admin"], key_with(p, statement("Deny", "*", "kms:Encrypt", here))) == "explicit"
    )
    assert (
        outcome(p["admin"], key_with(p, statement("Deny", "*", "kms:Encrypt", elsewhere))) == "ok"
    )
    assert (
        outcome(p["bob"], key_with(p, statement("Allow", p.root("bob"), "kms:Encrypt", here)))
        == "ok"
    )
    assert (
        outcome(p["bob"], key_with(p, statement("Allow", p.root("bob"), "kms:Encrypt", elsewhere)))
        == "implicit"
    )


def test_principal_type_username_and_resource_account(principals):
    p = principals
    users_only = statement(
        "Deny", "*", "kms:Encrypt", {"StringNotEquals": {"aws:PrincipalType": "User"}}
    )
    arn = key_with(p, users_only, statement("Allow", p.root("bob"), "kms:Encrypt"))
    assert outcome(p["alice"], arn) == "ok"
    assert outcome(p["app"], arn) == "explicit"  # an assumed-role session: AssumedRole
    bob_by_name = statement(
        "Allow", p.root("bob"), "kms:Encrypt", {"StringEquals": {"aws:username": "bob"}}
    )
    arn = key_with(p, bob_by_name)
    assert outcome(p["bob"], arn) == "ok"
    assert outcome(p["carol"], arn) == "implicit"
    mine = {"StringEquals": {"aws:ResourceAccount": p.account("bob")}}
    assert (
        outcome(p["bob"], key_with(p, statement("Allow", p.root("bob"), "kms:Encrypt", mine)))
        == "implicit"
    )


# -- absent by AWS's rules: kms:ViaService -----------------------------------------------------
def test_a_key_aws_leaves_out_of_a_direct_call_is_evaluated_as_missing(principals):
    p = principals
    via_ec2 = {"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}
    not_via_ec2 = {"StringNotEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}
    assert (
        outcome(p["bob"], key_with(p, statement("Allow", p.root("bob"), "kms:Encrypt", via_ec2)))
        == "implicit"
    )
    assert outcome(p["admin"], key_with(p, statement("Deny", "*", "kms:Encrypt", via_ec2))) == "ok"
    # A negated operator holds for a missing key: this Deny applies (as in AWS).
    assert (
        outcome(p["admin"], key_with(p, statement("Deny", "*", "kms:Encrypt", not_via_ec2)))
        == "explicit"
    )


# -- unknowable: refused in new policies -------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "aws:PrincipalTag/department",
        "aws:PrincipalOrgID",
        "aws:PrincipalOrgPaths",
        "aws:userid",
        "aws:SecureTransprt",
        "kms:NoSuchKey",
    ],
)
@pytest.mark.parametrize("effect", ["Allow", "Deny"])
def test_a_policy_with_a_key_hsmkms_cannot_know_is_refused_naming_the_key(principals, key, effect):
    p = principals
    meta = p["admin"].create_key()["KeyMetadata"]
    st = statement(effect, p.root("bob"), "kms:Encrypt", {"StringEquals": {key: "x"}})
    text = policy(statement("Allow", p.root("admin"), "kms:*"), st)
    with raises("MalformedPolicyDocumentException", key):
        p["admin"].put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=text)
    with raises("MalformedPolicyDocumentException", key):
        p["admin"].create_key(Policy=text)


def test_a_stored_policy_with_such_a_key_can_only_refuse_more():
    # A policy stored before the refusal: its Deny on the key applies, its Allow does not.
    a = "111122223333"
    ctx = RequestContext(
        action="kms:Encrypt",
        principal_arn=f"arn:aws:iam::{a}:user/u",
        principal_account=a,
        resource_arn=f"arn:aws:kms:us-east-1:{a}:key/k",
    )
    org = {"StringEquals": {"aws:PrincipalOrgID": "o-123"}}
    not_org = {"StringNotEquals": {"aws:PrincipalOrgID": "o-123"}}
    admin = statement("Allow", a, "kms:*")
    for condition in (org, not_org):
        assert (
            evaluate(parse(policy(admin, statement("Deny", "*", "kms:*", condition))), ctx)
            is Decision.DENY
        )
        assert (
            evaluate(parse(policy(statement("Allow", a, "kms:*", condition))), ctx)
            is Decision.NO_MATCH
        )


def test_the_lockout_check_sees_the_tags_the_key_will_have(principals):
    p = principals
    locked = statement(
        "Deny", "*", "kms:PutKeyPolicy", {"StringEquals": {"aws:ResourceTag/frozen": "yes"}}
    )
    text = policy(statement("Allow", p.root("admin"), "kms:*"), locked)
    with raises("MalformedPolicyDocumentException", "will not allow you to update"):
        p["admin"].create_key(Policy=text, Tags=[{"TagKey": "frozen", "TagValue": "yes"}])
    key = p["admin"].create_key(Tags=[{"TagKey": "frozen", "TagValue": "yes"}])["KeyMetadata"]
    with raises("MalformedPolicyDocumentException", "will not allow you to update"):
        p["admin"].put_key_policy(KeyId=key["KeyId"], PolicyName="default", Policy=text)
    p["admin"].create_key(Policy=text)  # without the tag the Deny does not apply
