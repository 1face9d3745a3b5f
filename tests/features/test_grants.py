"""Grants: creating, using (with and without grant tokens), constraints, listing, retiring and
revoking, on both faces, across principals and accounts."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from helpers import raises

from hsmkms.service.grants import EQUALS, SUBSET, grant_id_of_token, new_token

CONTEXT = {"tenant": "bob-co", "purpose": "backup"}


def admin_only(p: Any) -> str:
    """A key policy that lets account A administer the key and nobody else use it."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": p.root("admin")},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        }
    )


def new_key(p: Any) -> dict[str, Any]:
    return dict(p["admin"].create_key(Policy=admin_only(p))["KeyMetadata"])


def grant(
    p: Any, key: dict[str, Any], grantee: str, operations: list[str], **kw: Any
) -> dict[str, Any]:
    return dict(
        p["admin"].create_grant(
            KeyId=key["KeyId"], GranteePrincipal=p.arn(grantee), Operations=operations, **kw
        )
    )


def test_create_grant_answers_an_aws_shaped_id_and_token(principals):
    p = principals
    key = new_key(p)
    out = grant(p, key, "bob", ["Decrypt"])
    assert re.fullmatch(r"[0-9a-f]{64}", out["GrantId"])
    assert re.fullmatch(r"[A-Za-z0-9_-]{100,}", out["GrantToken"])
    assert grant_id_of_token(out["GrantToken"]) == out["GrantId"]


def test_a_grant_lets_another_account_use_the_key_at_once_with_its_token(principals):
    p = principals
    key = new_key(p)
    blob = p["admin"].encrypt(KeyId=key["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    with raises("AccessDeniedException"):
        p["bob"].decrypt(CiphertextBlob=blob)
    out = grant(p, key, "bob", ["Decrypt", "DescribeKey"])
    got = p["bob"].decrypt(CiphertextBlob=blob, GrantTokens=[out["GrantToken"]])
    assert got["Plaintext"] == b"x" and got["KeyId"] == key["Arn"]
    p["bob"].describe_key(KeyId=key["Arn"])
    with raises("AccessDeniedException", "kms:Encrypt"):
        p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x")
    with raises("AccessDeniedException"):
        p["carol"].decrypt(CiphertextBlob=blob, GrantTokens=[out["GrantToken"]])


def test_a_grant_to_an_account_serves_every_principal_of_it(principals):
    p = principals
    key = new_key(p)
    p["admin"].create_grant(
        KeyId=key["KeyId"], GranteePrincipal=p.root("bob"), Operations=["Encrypt"]
    )
    p["carol"].encrypt(KeyId=key["Arn"], Plaintext=b"x")


def test_encryption_context_subset_allows_only_within_it(principals):
    p = principals
    key = new_key(p)
    grant(
        p,
        key,
        "bob",
        ["Encrypt", "Decrypt", "GenerateDataKeyPair"],
        Constraints={"EncryptionContextSubset": {"Tenant": "bob-co"}},
    )
    blob = p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext=CONTEXT)[
        "CiphertextBlob"
    ]
    assert p["bob"].decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)["Plaintext"] == b"x"
    p["bob"].generate_data_key_pair(
        KeyId=key["Arn"], KeyPairSpec="ECC_NIST_P256", EncryptionContext={"tenant": "bob-co"}
    )
    for context in ({"tenant": "other-co"}, {"tenant": "BOB-CO"}, {"purpose": "backup"}, None):
        kwargs = {"EncryptionContext": context} if context is not None else {}
        with raises("AccessDeniedException"):
            p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", **kwargs)
    other = p["admin"].encrypt(
        KeyId=key["KeyId"], Plaintext=b"x", EncryptionContext={"tenant": "other"}
    )["CiphertextBlob"]
    with raises("AccessDeniedException"):
        p["bob"].decrypt(CiphertextBlob=other, EncryptionContext={"tenant": "other"})


def test_encryption_context_equals_allows_only_that_context(principals):
    p = principals
    key = new_key(p)
    grant(
        p,
        key,
        "bob",
        ["Encrypt", "DescribeKey"],
        Constraints={"EncryptionContextEquals": {"tenant": "bob-co"}},
    )
    p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext={"TENANT": "bob-co"})
    with raises("AccessDeniedException"):
        p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext=CONTEXT)
    p["bob"].describe_key(KeyId=key["Arn"])  # constraints do not apply to DescribeKey


def test_a_retired_grant_allows_nothing(principals):
    p = principals
    key = new_key(p)
    out = grant(p, key, "bob", ["Encrypt", "RetireGrant"])
    p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", GrantTokens=[out["GrantToken"]])
    p["bob"].retire_grant(GrantToken=out["GrantToken"])
    with raises("AccessDeniedException"):
        p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x")
    with raises("InvalidGrantTokenException"):
        p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", GrantTokens=[out["GrantToken"]])
    assert p["admin"].list_grants(KeyId=key["KeyId"])["Grants"] == []


def test_a_revoked_grant_allows_nothing_and_only_the_key_policy_may_revoke(principals):
    p = principals
    key = new_key(p)
    out = grant(p, key, "bob", ["Encrypt", "RetireGrant"])
    with raises("AccessDeniedException", "kms:RevokeGrant"):
        p["bob"].revoke_grant(KeyId=key["Arn"], GrantId=out["GrantId"])
    with raises("DryRunOperationException"):
        p["admin"].revoke_grant(KeyId=key["KeyId"], GrantId=out["GrantId"], DryRun=True)
    p["admin"].revoke_grant(KeyId=key["KeyId"], GrantId=out["GrantId"])
    with raises("AccessDeniedException"):
        p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x")
    with raises("InvalidGrantIdException"):
        p["admin"].revoke_grant(KeyId=key["KeyId"], GrantId=out["GrantId"])
    with raises("InvalidGrantIdException"):
        p["admin"].revoke_grant(KeyId=key["KeyId"], GrantId="not-a-grant-id")


def test_an_explicit_deny_in_the_key_policy_beats_a_grant(principals):
    p = principals
    key = new_key(p)
    grant(p, key, "bob", ["Encrypt"])
    text = json.loads(admin_only(p))
    text["Statement"].append(
        {
            "Effect": "Deny",
            "Principal": {"AWS": p.arn("bob")},
            "Action": "kms:Encrypt",
            "Resource": "*",
        }
    )
    p["admin"].put_key_policy(KeyId=key["KeyId"], Policy=json.dumps(text))
    with raises("AccessDeniedException", "explicit deny"):
        p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x")


def test_grant_tokens_must_be_real(principals):
    p = principals
    key = new_key(p)
    for token in ("not a token!", "AQpAM2RhZTk1MGRkYTE", new_token("ab" * 32)):
        with raises("InvalidGrantTokenException"):
            p["admin"].encrypt(KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=[token])
    good = grant(p, key, "bob", ["Encrypt"])["GrantToken"]
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    with raises("InvalidGrantTokenException"):
        p["admin"].encrypt(KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=[forged])
    p["admin"].encrypt(KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=[good])


def test_the_same_name_and_parameters_answer_the_same_grant(principals):
    p = principals
    key = new_key(p)
    name = f"g-{uuid.uuid4().hex[:8]}"
    first = grant(p, key, "bob", ["Encrypt", "Decrypt"], Name=name)
    again = grant(p, key, "bob", ["Decrypt", "Encrypt"], Name=name)
    assert again["GrantId"] == first["GrantId"]
    assert again["GrantToken"] != first["GrantToken"]
    p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", GrantTokens=[again["GrantToken"]])
    other = grant(p, key, "bob", ["Encrypt"], Name=name)
    assert other["GrantId"] != first["GrantId"]
    grants = p["admin"].list_grants(KeyId=key["KeyId"])["Grants"]
    assert sorted(g["GrantId"] for g in grants) == sorted([first["GrantId"], other["GrantId"]])


def test_list_grants_shows_each_grant_and_filters_and_paginates(principals):
    p = principals
    key = new_key(p)
    made = [
        grant(
            p,
            key,
            "bob",
            ["Decrypt"],
            Name=f"n{i}",
            RetiringPrincipal=p.arn("carol"),
            Constraints={"EncryptionContextSubset": {"tenant": "t"}},
        )
        for i in range(3)
    ]
    alice = grant(p, key, "alice", ["Encrypt"])
    everything = p["admin"].list_grants(KeyId=key["Arn"])
    assert not everything["Truncated"]
    by_id = {g["GrantId"]: g for g in everything["Grants"]}
    assert set(by_id) == {g["GrantId"] for g in [*made, alice]}
    entry = by_id[made[0]["GrantId"]]
    assert entry["KeyId"] == key["Arn"]
    assert entry["Name"] == "n0"
    assert entry["GranteePrincipal"] == p.arn("bob")
    assert entry["RetiringPrincipal"] == p.arn("carol")
    assert entry["IssuingAccount"] == p.root("admin")
    assert entry["Operations"] == ["Decrypt"]
    assert entry["Constraints"] == {"EncryptionContextSubset": {"tenant": "t"}}
    assert entry["CreationDate"].year >= 2024
    only = p["admin"].list_grants(KeyId=key["KeyId"], GrantId=alice["GrantId"])["Grants"]
    assert [g["GrantId"] for g in only] == [alice["GrantId"]]
    bobs = p["admin"].list_grants(KeyId=key["KeyId"], GranteePrincipal=p.arn("bob"))["Grants"]
    assert {g["GrantId"] for g in bobs} == {g["GrantId"] for g in made}
    seen, marker = [], None
    while True:
        page = p["admin"].list_grants(
            KeyId=key["KeyId"], Limit=3, **({"Marker": marker} if marker else {})
        )
        seen += [g["GrantId"] for g in page["Grants"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert sorted(seen) == sorted(by_id) and len(seen) == 4
    with raises("InvalidMarkerException"):
        p["admin"].list_grants(KeyId=key["KeyId"], Marker="bogus")
    with raises("InvalidGrantIdException"):
        p["admin"].list_grants(KeyId=key["KeyId"], GrantId="ab" * 32)
    with raises("AccessDeniedException", "kms:ListGrants"):
        p["bob"].list_grants(KeyId=key["Arn"])


def test_the_retiring_principal_lists_and_retires_its_grants(principals):
    p = principals
    key = new_key(p)
    out = grant(p, key, "bob", ["Decrypt"], RetiringPrincipal=p.arn("carol"))
    listed = p["carol"].list_retirable_grants(RetiringPrincipal=p.arn("carol"))["Grants"]
    assert out["GrantId"] in {g["GrantId"] for g in listed}
    assert {g["KeyId"] for g in listed} >= {key["Arn"]}
    with raises("AccessDeniedException", "kms:ListRetirableGrants"):
        p["alice"].list_retirable_grants(RetiringPrincipal=p.arn("carol"))
    # bob is the grantee, but the grant does not allow RetireGrant.
    with raises("AccessDeniedException") as info:
        p["bob"].retire_grant(KeyId=key["Arn"], GrantId=out["GrantId"])
    assert info.value.response["Error"]["Message"] == (
        f"User: {p.arn('bob')} is not authorized to perform: kms:RetireGrant on resource: "
        f"{key['Arn']} because no resource-based policy allows the kms:RetireGrant action"
    )
    with raises("DryRunOperationException"):
        p["carol"].retire_grant(KeyId=key["Arn"], GrantId=out["GrantId"], DryRun=True)
    p["carol"].retire_grant(KeyId=key["Arn"], GrantId=out["GrantId"])
    assert p["admin"].list_grants(KeyId=key["KeyId"])["Grants"] == []
    with raises("InvalidGrantIdException"):
        p["carol"].retire_grant(KeyId=key["Arn"], GrantId=out["GrantId"])


def test_the_keys_account_may_retire_any_grant_of_it(principals):
    p = principals
    key = new_key(p)
    out = grant(p, key, "bob", ["Decrypt"])
    p["alice"].retire_grant(GrantToken=out["GrantToken"])
    with raises("InvalidGrantTokenException"):
        p["alice"].retire_grant(GrantToken=out["GrantToken"])
    with raises("ValidationException", "must be specified"):
        p["alice"].retire_grant(GrantId=out["GrantId"])


def test_a_grantee_with_create_grant_may_pass_on_no_more_than_it_holds(principals):
    p = principals
    key = new_key(p)
    grant(
        p,
        key,
        "bob",
        ["Encrypt", "Decrypt", "CreateGrant"],
        Constraints={"EncryptionContextSubset": {"tenant": "bob-co"}},
    )
    carol = p.arn("carol")
    narrower = p["bob"].create_grant(
        KeyId=key["Arn"],
        GranteePrincipal=carol,
        Operations=["Encrypt"],
        Constraints={"EncryptionContextEquals": {"tenant": "bob-co", "x": "y"}},
    )
    p["carol"].encrypt(
        KeyId=key["Arn"],
        Plaintext=b"x",
        EncryptionContext={"tenant": "bob-co", "x": "y"},
        GrantTokens=[narrower["GrantToken"]],
    )
    for operations, constraints in (
        (["Encrypt", "GenerateDataKey"], {"EncryptionContextSubset": {"tenant": "bob-co"}}),
        (["Encrypt"], None),
        (["Encrypt"], {"EncryptionContextSubset": {"tenant": "other"}}),
    ):
        with raises("AccessDeniedException", "kms:CreateGrant"):
            p["bob"].create_grant(
                KeyId=key["Arn"],
                GranteePrincipal=carol,
                Operations=operations,
                **({"Constraints": constraints} if constraints else {}),
            )


def test_grant_operations_condition_in_the_key_policy(principals):
    p = principals
    key = new_key(p)
    text = json.loads(admin_only(p))
    text["Statement"].append(
        {
            "Effect": "Allow",
            "Principal": {"AWS": p.root("bob")},
            "Action": "kms:CreateGrant",
            "Resource": "*",
            "Condition": {
                "ForAllValues:StringEquals": {"kms:GrantOperations": ["Encrypt", "Decrypt"]},
                "Bool": {"kms:GrantIsForAWSResource": "false"},
            },
        }
    )
    p["admin"].put_key_policy(KeyId=key["KeyId"], Policy=json.dumps(text))
    p["bob"].create_grant(KeyId=key["Arn"], GranteePrincipal=p.arn("carol"), Operations=["Decrypt"])
    with raises("AccessDeniedException", "kms:CreateGrant"):
        p["bob"].create_grant(
            KeyId=key["Arn"], GranteePrincipal=p.arn("carol"), Operations=["Decrypt", "CreateGrant"]
        )


def test_a_key_policy_may_require_a_grant_constraint(principals):
    p = principals
    key = new_key(p)
    text = json.loads(admin_only(p))
    text["Statement"].append(
        {
            "Effect": "Allow",
            "Principal": {"AWS": p.arn("bob")},
            "Action": "kms:CreateGrant",
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:GrantConstraintType": "EncryptionContextSubset"}},
        }
    )
    p["admin"].put_key_policy(KeyId=key["KeyId"], Policy=json.dumps(text))
    p["bob"].create_grant(
        KeyId=key["Arn"],
        GranteePrincipal=p.arn("carol"),
        Operations=["Decrypt"],
        Constraints={"EncryptionContextSubset": {"tenant": "t"}},
    )
    with raises("AccessDeniedException", "kms:CreateGrant"):
        p["bob"].create_grant(
            KeyId=key["Arn"], GranteePrincipal=p.arn("carol"), Operations=["Decrypt"]
        )


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"Operations": ["Sign"]}, "ValidationException"),
        ({"Operations": ["Encrypt"], "GranteePrincipal": "bob"}, "InvalidArnException"),
        (
            {"Operations": ["Encrypt"], "RetiringPrincipal": "arn:aws:iam::1:user/x"},
            "InvalidArnException",
        ),
        (
            {"Operations": ["Encrypt"], "GranteeServicePrincipal": "ec2.amazonaws.com"},
            "UnsupportedOperationException",
        ),
        ({"Operations": ["Encrypt"], "DryRun": True}, "DryRunOperationException"),
    ],
)
def test_create_grant_checks_its_parameters(principals, kwargs, code):
    p = principals
    key = new_key(p)
    params = {"KeyId": key["KeyId"], "GranteePrincipal": p.arn("bob"), **kwargs}
    with raises(code):
        p["admin"].create_grant(**params)
    assert p["admin"].list_grants(KeyId=key["KeyId"])["Grants"] == []


def test_create_grant_refuses_a_key_pending_deletion_but_not_a_disabled_one(principals):
    p = principals
    key = new_key(p)
    p["admin"].disable_key(KeyId=key["KeyId"])
    grant(p, key, "bob", ["Decrypt"])
    p["admin"].schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    with raises("KMSInvalidStateException"):
        grant(p, key, "bob", ["Decrypt"])
    assert len(p["admin"].list_grants(KeyId=key["KeyId"])["Grants"]) == 1


# Two pairs whose keys differ only in case: the grant's pair and one more (issue 13, item 3).
FINANCE_AND_HR = ({"Dept": "hr", "dept": "finance"}, {"dept": "finance", "Dept": "hr"})


def test_encryption_context_equals_is_never_met_by_two_pairs_whose_keys_differ_in_case(
    principals,
):
    p = principals
    key = new_key(p)
    grant(p, key, "bob", ["Encrypt"], Constraints={"EncryptionContextEquals": {"dept": "finance"}})
    for context in FINANCE_AND_HR:  # either order: the same answer
        with raises("AccessDeniedException", "kms:Encrypt"):
            p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext=context)
    for context in ({"dept": "hr"}, {"dept": "FINANCE"}):
        with raises("AccessDeniedException", "kms:Encrypt"):
            p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext=context)
    p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext={"DEPT": "finance"})


def test_encryption_context_subset_is_met_whatever_the_order_of_the_request_pairs(principals):
    p = principals
    key = new_key(p)
    grant(p, key, "bob", ["Encrypt"], Constraints={"EncryptionContextSubset": {"dept": "finance"}})
    for context in FINANCE_AND_HR:  # the pair dept=finance is there, in either order
        p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext=context)
    for context in ({"Dept": "hr", "DEPT": "hr"}, {"dept": "Finance", "x": "finance"}):
        with raises("AccessDeniedException", "kms:Encrypt"):
            p["bob"].encrypt(KeyId=key["Arn"], Plaintext=b"x", EncryptionContext=context)


def test_a_grantee_may_not_pass_on_an_equals_constraint_with_a_pair_added_in_another_case(
    principals,
):
    p = principals
    key = new_key(p)
    grant(
        p,
        key,
        "bob",
        ["Encrypt", "CreateGrant"],
        Constraints={"EncryptionContextEquals": {"dept": "finance"}},
    )
    for constraints in FINANCE_AND_HR:  # would allow a context the parent grant refuses
        with raises("AccessDeniedException", "kms:CreateGrant"):
            p["bob"].create_grant(
                KeyId=key["Arn"],
                GranteePrincipal=p.arn("carol"),
                Operations=["Encrypt"],
                Constraints={"EncryptionContextEquals": constraints},
            )
    p["bob"].create_grant(
        KeyId=key["Arn"],
        GranteePrincipal=p.arn("carol"),
        Operations=["Encrypt"],
        Constraints={"EncryptionContextEquals": {"DEPT": "finance"}},
    )


def test_a_grantee_may_pass_on_a_subset_constraint_with_a_pair_added_in_another_case(
    principals,
):
    p = principals
    key = new_key(p)
    grant(
        p,
        key,
        "bob",
        ["Encrypt", "CreateGrant"],
        Constraints={"EncryptionContextSubset": {"dept": "finance"}},
    )
    for constraints in FINANCE_AND_HR:  # stricter: every context it allows has dept=finance
        for name in (EQUALS, SUBSET):
            p["bob"].create_grant(
                KeyId=key["Arn"],
                GranteePrincipal=p.arn("carol"),
                Operations=["Encrypt"],
                Constraints={name: constraints},
            )
    with raises("AccessDeniedException", "kms:CreateGrant"):
        p["bob"].create_grant(
            KeyId=key["Arn"],
            GranteePrincipal=p.arn("carol"),
            Operations=["Encrypt"],
            Constraints={"EncryptionContextSubset": {"Dept": "hr", "DEPT": "Finance"}},
        )
