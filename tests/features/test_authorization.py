"""Who may use a key: key policies across principals and accounts, conditions, DryRun, the
lockout safety check, and AWS's AccessDeniedException wording, on both faces (the library
acting as each principal, and boto3 over HTTP against a server trusting them all)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from helpers import policy, raises

EC_TENANT = {"tenant": "bob-co"}


def allow(
    principal: str | list[str] | dict[str, Any], action: Any = "kms:*", **more: Any
) -> dict[str, Any]:
    who = principal if isinstance(principal, dict) or principal == "*" else {"AWS": principal}
    st: dict[str, Any] = {"Effect": "Allow", "Principal": who, "Action": action, "Resource": "*"}
    st.update(more)
    return st


def deny(principal: Any, action: Any, **more: Any) -> dict[str, Any]:
    return allow(principal, action, **more) | {"Effect": "Deny"}


def denied(p: Any, who: str, action: str, resource: str, explicit: bool = False) -> str:
    """AWS's AccessDeniedException message for a key policy's refusal."""
    why = (
        "with an explicit deny in a resource-based policy"
        if explicit
        else f"because no resource-based policy allows the {action} action"
    )
    return (
        f"User: {p.arn(who)} is not authorized to perform: {action} on resource: {resource} {why}"
    )


def message(info: Any) -> str:
    return str(info.value.response["Error"]["Message"])


def new_key(p: Any, text: str | None = None, **kw: Any) -> dict[str, Any]:
    """A key of account A created by admin, with ``text`` as its policy (admin keeps kms:*)."""
    meta = p["admin"].create_key(**kw)["KeyMetadata"]
    if text is not None:
        p["admin"].put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=text)
    return dict(meta)


def admin(p: Any) -> dict[str, Any]:
    return allow(p.root("admin"), Sid="Enable IAM User Permissions")


# -- across accounts ----------------------------------------------------------------------------
def test_another_account_uses_a_key_by_arn_only_when_the_key_policy_allows_it(principals):
    p = principals
    key = new_key(p)
    arn = key["Arn"]
    with raises("AccessDeniedException") as info:
        p["bob"].generate_data_key_pair(KeyId=arn, KeyPairSpec="ECC_NIST_P256")
    assert message(info) == denied(p, "bob", "kms:GenerateDataKeyPair", arn)

    p["admin"].put_key_policy(
        KeyId=key["KeyId"],
        Policy=policy(
            admin(p), allow(p.root("bob"), ["kms:GenerateDataKeyPair*", "kms:DescribeKey"])
        ),
    )
    pair = p["bob"].generate_data_key_pair(KeyId=arn, KeyPairSpec="ECC_NIST_P256")
    assert pair["KeyId"] == arn and pair["KeyPairSpec"] == "ECC_NIST_P256"
    # The account root names every principal of that account.
    p["carol"].generate_data_key_pair_without_plaintext(KeyId=arn, KeyPairSpec="ECC_NIST_P256")
    assert p["carol"].describe_key(KeyId=arn)["KeyMetadata"]["AWSAccountId"] == p.account("admin")
    # Only what the policy names: not Encrypt, and a bare key id names the caller's own account.
    with raises("AccessDeniedException") as info:
        p["bob"].encrypt(KeyId=arn, Plaintext=b"x")
    assert message(info) == denied(p, "bob", "kms:Encrypt", arn)
    with raises("NotFoundException"):
        p["bob"].describe_key(KeyId=key["KeyId"])


def test_a_policy_naming_one_principal_of_another_account_allows_only_that_principal(principals):
    p = principals
    key = new_key(p, policy(admin(p), allow(p.arn("bob"), "kms:Encrypt")))
    p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x")
    with raises("AccessDeniedException") as info:
        p["carol"].encrypt(KeyId=key["Arn"], Plaintext=b"x")
    assert message(info) == denied(p, "carol", "kms:Encrypt", key["Arn"])


def test_key_administration_is_never_cross_account(principals):
    p = principals
    key = new_key(p, policy(admin(p), allow(p.root("bob"))))
    p["bob"].describe_key(KeyId=key["Arn"])
    for call in (
        lambda: p["bob"].disable_key(KeyId=key["Arn"]),
        lambda: p["bob"].get_key_policy(KeyId=key["Arn"], PolicyName="default"),
        lambda: p["bob"].put_key_policy(KeyId=key["Arn"], Policy=policy(allow("*"))),
        lambda: p["bob"].schedule_key_deletion(KeyId=key["Arn"], PendingWindowInDays=7),
    ):
        with raises("NotFoundException", "does not exist"):
            call()


def test_account_level_operations_serve_the_callers_own_account(principals):
    p = principals
    mine = p["bob"].create_key()["KeyMetadata"]
    assert mine["AWSAccountId"] == p.account("bob")
    assert mine["Arn"].split(":")[4] == p.account("bob")
    listed = {k["KeyId"] for k in p["carol"].list_keys(Limit=1000)["Keys"]}
    assert mine["KeyId"] in listed
    assert mine["KeyId"] not in {k["KeyId"] for k in p["alice"].list_keys(Limit=1000)["Keys"]}
    assert len(p["carol"].generate_random(NumberOfBytes=8)["Plaintext"]) == 8


# -- the conditions of the issue -----------------------------------------------------------------
def test_a_deny_on_data_key_pair_spec_blocks_that_spec_and_no_other(principals):
    p = principals
    key = new_key(
        p,
        policy(
            admin(p),
            allow(p.root("bob"), "kms:GenerateDataKeyPair*"),
            deny(
                "*",
                "kms:GenerateDataKeyPair*",
                Condition={"StringEquals": {"kms:DataKeyPairSpec": "RSA_4096"}},
            ),
        ),
    )
    arn = key["Arn"]
    for who in ("bob", "admin"):
        with raises("AccessDeniedException") as info:
            p[who].generate_data_key_pair(KeyId=arn, KeyPairSpec="RSA_4096")
        assert message(info) == denied(p, who, "kms:GenerateDataKeyPair", arn, explicit=True)
    with raises("AccessDeniedException", "explicit deny"):
        p["bob"].generate_data_key_pair_without_plaintext(KeyId=arn, KeyPairSpec="RSA_4096")
    assert (
        p["bob"].generate_data_key_pair(KeyId=arn, KeyPairSpec="ECC_NIST_P256")["KeyPairSpec"]
        == "ECC_NIST_P256"
    )
    p["bob"].generate_data_key_pair_without_plaintext(KeyId=arn, KeyPairSpec="ECC_NIST_P384")
    # The Deny names only the pair operations: the key's other uses are untouched.
    p["admin"].encrypt(KeyId=arn, Plaintext=b"x")


def test_an_allow_on_an_encryption_context_key_works_only_with_that_context(principals):
    p = principals
    key = new_key(
        p,
        policy(
            admin(p),
            allow(
                p.root("bob"),
                ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
                Condition={"StringEquals": {"kms:EncryptionContext:tenant": "bob-co"}},
            ),
        ),
    )
    arn = key["Arn"]
    blob = p["bob"].encrypt(KeyId=arn, Plaintext=b"secret", EncryptionContext=EC_TENANT)[
        "CiphertextBlob"
    ]
    out = p["bob"].decrypt(CiphertextBlob=blob, EncryptionContext=EC_TENANT)
    assert out["Plaintext"] == b"secret" and out["KeyId"] == arn
    p["bob"].generate_data_key(
        KeyId=arn, KeySpec="AES_256", EncryptionContext={"tenant": "bob-co", "more": "ok"}
    )
    for context in ({"tenant": "other-co"}, {"Tenant": "BOB-CO"}, None):
        kwargs = {"EncryptionContext": context} if context is not None else {}
        with raises("AccessDeniedException") as info:
            p["bob"].encrypt(KeyId=arn, Plaintext=b"x", **kwargs)
        assert message(info) == denied(p, "bob", "kms:Encrypt", arn)
    with raises("AccessDeniedException") as info:
        p["bob"].decrypt(CiphertextBlob=blob)
    assert message(info) == denied(p, "bob", "kms:Decrypt", arn)


def test_a_source_ip_condition_sees_the_callers_address(principals):
    p = principals
    local = allow(p.root("admin"), Condition={"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}})
    key = new_key(p, policy(local))  # passes the lockout check: admin calls from 127.0.0.1
    p["alice"].encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    remote = allow(p.root("admin"), Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}})
    with raises("MalformedPolicyDocumentException", "update the key policy in the future"):
        p["admin"].put_key_policy(KeyId=key["KeyId"], Policy=policy(remote))


def test_caller_account_and_principal_arn_conditions(principals):
    p = principals
    key = new_key(
        p,
        policy(
            admin(p),
            allow(
                "*",
                "kms:DescribeKey",
                Condition={
                    "StringEquals": {"kms:CallerAccount": p.account("bob")},
                    "ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/car*"},
                },
            ),
        ),
    )
    p["carol"].describe_key(KeyId=key["Arn"])
    with raises("AccessDeniedException"):
        p["bob"].describe_key(KeyId=key["Arn"])


def test_an_assumed_role_session_is_named_by_its_role(principals):
    p = principals
    role = f"arn:aws:iam::{p.account('app')}:role/app"
    key = new_key(p, policy(allow(p.arn("admin")), allow(role, ["kms:Encrypt", "kms:Decrypt"])))
    blob = p["app"].encrypt(KeyId=key["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    assert p["app"].decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    # Without the account root in the policy, another principal of the account gets nothing.
    with raises("AccessDeniedException") as info:
        p["alice"].decrypt(CiphertextBlob=blob)
    assert message(info) == denied(p, "alice", "kms:Decrypt", key["Arn"])


def test_request_alias_and_resource_aliases_conditions(principals):
    p = principals
    name = f"alias/authz-{uuid.uuid4().hex[:10]}"
    key = new_key(
        p,
        policy(
            admin(p),
            allow(
                p.root("bob"), "kms:Encrypt", Condition={"StringEquals": {"kms:RequestAlias": name}}
            ),
            allow(
                p.arn("carol"),
                "kms:Encrypt",
                Condition={"ForAnyValue:StringEquals": {"kms:ResourceAliases": name}},
            ),
        ),
    )
    alias_arn = key["Arn"].split(":key/")[0] + ":" + name
    with raises("AccessDeniedException"):
        p["carol"].encrypt(KeyId=key["Arn"], Plaintext=b"x")
    p["admin"].create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    p["carol"].encrypt(KeyId=key["Arn"], Plaintext=b"x")
    p["bob"].encrypt(KeyId=alias_arn, Plaintext=b"x")
    with raises("AccessDeniedException"):
        p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x")


# -- each operation asks for its own action -------------------------------------------------------
def test_re_encrypt_needs_re_encrypt_from_on_the_source_and_to_on_the_destination(principals):
    p = principals
    source = new_key(p)
    dest = new_key(p)
    blob = p["alice"].encrypt(KeyId=source["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    p["admin"].put_key_policy(
        KeyId=source["KeyId"], Policy=policy(admin(p), deny(p.arn("alice"), "kms:ReEncryptFrom"))
    )
    with raises("AccessDeniedException") as info:
        p["alice"].re_encrypt(CiphertextBlob=blob, DestinationKeyId=dest["KeyId"])
    assert message(info) == denied(p, "alice", "kms:ReEncryptFrom", source["Arn"], explicit=True)
    p["admin"].put_key_policy(KeyId=source["KeyId"], Policy=policy(admin(p)))
    p["admin"].put_key_policy(
        KeyId=dest["KeyId"], Policy=policy(admin(p), deny(p.arn("alice"), "kms:ReEncrypt*"))
    )
    with raises("AccessDeniedException") as info:
        p["alice"].re_encrypt(CiphertextBlob=blob, DestinationKeyId=dest["KeyId"])
    assert message(info) == denied(p, "alice", "kms:ReEncryptTo", dest["Arn"], explicit=True)
    out = p["admin"].re_encrypt(CiphertextBlob=blob, DestinationKeyId=dest["KeyId"])
    assert out["KeyId"] == dest["Arn"] and out["SourceKeyId"] == source["Arn"]


def test_aliases_need_their_action_on_the_key(principals):
    p = principals
    key = new_key(p, None)
    name = f"alias/authz-{uuid.uuid4().hex[:10]}"
    p["admin"].put_key_policy(
        KeyId=key["KeyId"],
        Policy=policy(admin(p), deny(p.arn("alice"), ["kms:CreateAlias", "kms:DeleteAlias"])),
    )
    with raises("AccessDeniedException") as info:
        p["alice"].create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    assert message(info) == denied(p, "alice", "kms:CreateAlias", key["Arn"], explicit=True)
    p["admin"].create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    with raises("AccessDeniedException", "kms:DeleteAlias"):
        p["alice"].delete_alias(AliasName=name)
    # ListAliases is account-level: the key policy is not asked.
    listed = p["alice"].list_aliases(KeyId=key["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in listed] == [name]
    p["admin"].delete_alias(AliasName=name)


def test_management_operations_ask_for_their_own_action(principals):
    p = principals
    key = new_key(
        p,
        policy(
            admin(p),
            allow(p.arn("alice"), ["kms:Describe*", "kms:Tag*"]),
            deny(p.arn("alice"), "kms:DisableKey"),
        ),
    )
    p["alice"].describe_key(KeyId=key["KeyId"])
    p["alice"].tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "k", "TagValue": "v"}])
    with raises("AccessDeniedException", "kms:DisableKey"):
        p["alice"].disable_key(KeyId=key["KeyId"])
    p["alice"].enable_key(KeyId=key["KeyId"])  # the account root's kms:* still covers alice


# -- DryRun ------------------------------------------------------------------------------------
def test_dry_run_answers_both_ways(principals):
    p = principals
    key = new_key(
        p,
        policy(
            admin(p), allow(p.arn("bob"), ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKeyPair"])
        ),
    )
    arn = key["Arn"]
    with raises("DryRunOperationException"):
        p["bob"].encrypt(KeyId=arn, Plaintext=b"x", DryRun=True)
    with raises("DryRunOperationException"):
        p["bob"].generate_data_key_pair(KeyId=arn, KeyPairSpec="RSA_4096", DryRun=True)
    with raises("AccessDeniedException") as info:
        p["carol"].encrypt(KeyId=arn, Plaintext=b"x", DryRun=True)
    assert message(info) == denied(p, "carol", "kms:Encrypt", arn)
    with raises("AccessDeniedException"):
        p["bob"].generate_data_key(KeyId=arn, KeySpec="AES_256", DryRun=True)
    blob = p["admin"].encrypt(KeyId=arn, Plaintext=b"x")["CiphertextBlob"]
    with raises("DryRunOperationException"):
        p["bob"].decrypt(CiphertextBlob=blob, DryRun=True)
    with raises("AccessDeniedException"):
        p["carol"].decrypt(CiphertextBlob=blob, DryRun=True)
    with raises("AccessDeniedException"):
        p["carol"].decrypt(KeyId=arn, DryRun=True, DryRunModifiers=["IGNORE_CIPHERTEXT"])


# -- key policies ------------------------------------------------------------------------------
def test_a_key_created_without_a_policy_gets_aws_default_policy(principals):
    p = principals
    key = new_key(p)
    got = p["admin"].get_key_policy(KeyId=key["KeyId"], PolicyName="default")
    document = json.loads(got["Policy"])
    assert document["Id"] == "key-default-1"
    assert document["Statement"] == [
        {
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": p.root("admin")},
            "Action": "kms:*",
            "Resource": "*",
        }
    ]
    assert p["admin"].list_key_policies(KeyId=key["KeyId"])["PolicyNames"] == ["default"]
    # Every principal of the account may use it; no principal of another account may.
    p["alice"].encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    with raises("AccessDeniedException"):
        p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x")


def test_put_and_get_key_policy_round_trip(principals):
    p = principals
    key = new_key(p)
    text = policy(admin(p), allow(p.arn("bob"), "kms:Decrypt", Sid="bob reads"))
    p["admin"].put_key_policy(KeyId=key["Arn"], PolicyName="default", Policy=text)
    assert p["admin"].get_key_policy(KeyId=key["KeyId"])["Policy"] == text
    p["admin"].put_key_policy(KeyId=key["KeyId"], Policy=policy(admin(p)))
    assert "bob" not in p["admin"].get_key_policy(KeyId=key["KeyId"])["Policy"]


def test_only_the_default_policy_name_exists(principals):
    p = principals
    key = new_key(p)
    with raises("NotFoundException", "No such policy exists"):
        p["admin"].get_key_policy(KeyId=key["KeyId"], PolicyName="other")
    with raises("NotFoundException", "No such policy exists"):
        p["admin"].put_key_policy(KeyId=key["KeyId"], PolicyName="other", Policy=policy(admin(p)))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"Version": "2012-10-17"}), "Statement"),
        (
            policy({"Effect": "Allow", "Action": "kms:*", "Resource": "*"}),
            "Policy contains a statement with one or more invalid principals.",
        ),
        (
            policy(allow({"AWS": "alice"})),
            "Policy contains a statement with one or more invalid principals.",
        ),
        (
            policy({"Effect": "Perhaps", "Principal": "*", "Action": "kms:*", "Resource": "*"}),
            "Effect",
        ),
    ],
)
def test_malformed_policies_are_refused(principals, text, words):
    p = principals
    key = new_key(p)
    with raises("MalformedPolicyDocumentException", words):
        p["admin"].put_key_policy(KeyId=key["KeyId"], Policy=text)
    with raises("MalformedPolicyDocumentException", words):
        p["admin"].create_key(Policy=text)


def test_the_lockout_safety_check_refuses_a_policy_that_locks_the_caller_out(principals):
    p = principals
    only_alice = policy(allow(p.arn("alice")))
    with raises("MalformedPolicyDocumentException") as info:
        p["admin"].create_key(Policy=only_alice)
    assert message(info) == (
        "The new key policy will not allow you to update the key policy in the future."
    )
    key = p["admin"].create_key(Policy=only_alice, BypassPolicyLockoutSafetyCheck=True)[
        "KeyMetadata"
    ]
    with raises("AccessDeniedException") as info:
        p["admin"].describe_key(KeyId=key["KeyId"])
    assert message(info) == denied(p, "admin", "kms:DescribeKey", key["Arn"])
    # alice holds the key now; she may hand it back, but not lock herself out unasked.
    with raises("MalformedPolicyDocumentException", "update the key policy in the future"):
        p["alice"].put_key_policy(
            KeyId=key["KeyId"], Policy=policy(admin(p) | {"Principal": {"AWS": p.arn("admin")}})
        )
    p["alice"].put_key_policy(KeyId=key["KeyId"], Policy=policy(admin(p)))
    p["admin"].describe_key(KeyId=key["KeyId"])


def test_a_deny_of_put_key_policy_fails_the_lockout_check_unless_bypassed(principals):
    p = principals
    key = new_key(p)
    frozen = policy(admin(p), deny("*", "kms:PutKeyPolicy"))
    with raises("MalformedPolicyDocumentException", "update the key policy in the future"):
        p["admin"].put_key_policy(KeyId=key["KeyId"], Policy=frozen)
    p["admin"].put_key_policy(
        KeyId=key["KeyId"], Policy=frozen, BypassPolicyLockoutSafetyCheck=True
    )
    with raises("AccessDeniedException") as info:
        p["admin"].put_key_policy(KeyId=key["KeyId"], Policy=policy(admin(p)))
    assert message(info) == denied(p, "admin", "kms:PutKeyPolicy", key["Arn"], explicit=True)
    p["admin"].encrypt(KeyId=key["KeyId"], Plaintext=b"x")


# -- the wire ----------------------------------------------------------------------------------
def test_the_wire_passes_the_verified_principal_and_answers_aws_envelope(principals):
    p = principals
    if p.server is None:
        pytest.skip("the wire only")
    key = new_key(p)
    bob = p.identities["bob"]
    refused = p.server.post("DescribeKey", {"KeyId": key["Arn"]}, identity=bob)
    assert refused.status == 400
    assert refused.error == (
        "AccessDeniedException",
        denied(p, "bob", "kms:DescribeKey", key["Arn"]),
    )
    p["admin"].put_key_policy(
        KeyId=key["KeyId"], Policy=policy(admin(p), allow(p.arn("bob"), "kms:DescribeKey"))
    )
    allowed = p.server.post("DescribeKey", {"KeyId": key["Arn"]}, identity=bob)
    assert allowed.status == 200 and allowed.json["KeyMetadata"]["Arn"] == key["Arn"]
    carol = p.server.post("DescribeKey", {"KeyId": key["Arn"]}, identity=p.identities["carol"])
    assert carol.error[0] == "AccessDeniedException"
