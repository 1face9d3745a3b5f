"""The key policy evaluator alone: documents, principals, actions, resources, every condition
operator and set operator, with their negative cases. Pure and fast: no token, no store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from hsmkms.service.policy_eval import (
    Condition,
    Decision,
    PolicyError,
    RequestContext,
    condition_holds,
    evaluate,
    parse,
    principal_names,
)

A = "111122223333"
B = "444455556666"
ALICE = f"arn:aws:iam::{A}:user/alice"
BOB = f"arn:aws:iam::{B}:user/bob"
KEY = f"arn:aws:kms:us-east-1:{A}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def ctx(**kw: Any) -> RequestContext:
    base: dict[str, Any] = {
        "action": "kms:Decrypt",
        "principal_arn": ALICE,
        "principal_account": A,
        "resource_arn": KEY,
        "key_spec": "SYMMETRIC_DEFAULT",
        "key_usage": "ENCRYPT_DECRYPT",
    }
    base.update(kw)
    return RequestContext(**base)


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal: Any = None, action: Any = "kms:*", **more: Any) -> dict[str, Any]:
    st = {
        "Effect": "Allow",
        "Principal": principal or {"AWS": f"arn:aws:iam::{A}:root"},
        "Action": action,
        "Resource": "*",
    }
    st.update(more)
    return st


def deny(principal: Any = "*", action: Any = "kms:*", **more: Any) -> dict[str, Any]:
    return allow(principal, action, Effect="Deny", **more)


def decide(text: str, **kw: Any) -> Decision:
    return evaluate(parse(text), ctx(**kw))


def holds(operator: str, key: str, values: Any, **kw: Any) -> bool:
    """One condition, through a whole policy: Allow when it holds."""
    text = doc(allow(Condition={operator: {key: values}}))
    return decide(text, **kw) is Decision.ALLOW


# -- documents ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        (json.dumps({"Version": "2012-10-17"}), "Statement"),
        (json.dumps({"Statement": []}), "Statement"),
        (json.dumps({"Statement": [{"Effect": "Maybe", "Principal": "*"}]}), "Effect"),
        (
            json.dumps({"Statement": [{"Effect": "Allow", "Action": "kms:*"}]}),
            "one or more invalid principals",
        ),
        (doc(allow(principal={"AWS": "alice"})), "one or more invalid principals"),
        (
            doc(allow(principal={"AWS": f"arn:aws:iam::{A}:group/admins"})),
            "one or more invalid principals",
        ),
        (doc(allow(principal="arn:aws:iam::111122223333:root")), "invalid principals"),
        (doc(allow(NotAction="kms:Decrypt")), "both Action and NotAction"),
        (doc(allow(Condition={"StringEqualz": {"kms:KeySpec": "x"}})), "condition operator"),
        (doc(allow(Condition={"NullIfExists": {"kms:KeySpec": "true"}})), "condition operator"),
        (doc(allow(Sid="s"), allow(Sid="s")), "must be unique"),
        (json.dumps({"Version": "2013-01-01", "Statement": [allow()]}), "Version"),
        (doc(allow(Extra=1)), "unsupported element"),
    ],
)
def test_malformed_documents_are_refused_with_a_reason(text, message):
    with pytest.raises(PolicyError) as info:
        parse(text)
    assert message in str(info.value)


def test_a_statement_without_action_or_resource_is_accepted_and_has_no_effect():
    no_action = {"Effect": "Allow", "Principal": "*", "Resource": "*"}
    no_resource = {"Effect": "Allow", "Principal": "*", "Action": "kms:*"}
    assert decide(doc(no_action, no_resource)) is Decision.NO_MATCH


def test_a_single_statement_object_is_accepted():
    text = json.dumps({"Statement": allow()})
    assert decide(text) is Decision.ALLOW


# -- principals, actions, resources --------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "caller", "account", "expected"),
    [
        ("*", BOB, B, True),
        (A, ALICE, A, True),
        (f"arn:aws:iam::{A}:root", ALICE, A, True),
        (f"arn:aws:iam::{A}:root", BOB, B, False),
        (ALICE, ALICE, A, True),
        (ALICE, f"arn:aws:iam::{A}:user/alicia", A, False),
        (f"arn:aws:iam::{A}:role/app", f"arn:aws:sts::{A}:assumed-role/app/session-1", A, True),
        (f"arn:aws:iam::{A}:role/ops/app", f"arn:aws:sts::{A}:assumed-role/app/s", A, True),
        (f"arn:aws:iam::{A}:role/app", f"arn:aws:sts::{A}:assumed-role/other/s", A, False),
        (f"arn:aws:iam::{B}:role/app", f"arn:aws:sts::{A}:assumed-role/app/s", A, False),
    ],
)
def test_principal_names(name, caller, account, expected):
    assert principal_names(name, caller, account) is expected


def test_the_account_root_allows_every_principal_of_the_account_and_no_other():
    text = doc(allow())
    assert decide(text) is Decision.ALLOW
    assert decide(text, principal_arn=f"arn:aws:iam::{A}:role/x") is Decision.ALLOW
    assert decide(text, principal_arn=BOB, principal_account=B) is Decision.NO_MATCH


def test_service_principals_never_match_a_caller():
    text = doc(allow(principal={"Service": "ec2.amazonaws.com"}))
    assert decide(text) is Decision.NO_MATCH


def test_not_principal_applies_to_everyone_else():
    # AWS evaluates the request as alice and as her account: both must be named (issue 13).
    everyone_but_alice = {
        "Effect": "Deny",
        "NotPrincipal": {"AWS": [ALICE, f"arn:aws:iam::{A}:root"]},
        "Action": "kms:*",
        "Resource": "*",
    }
    text = doc(allow(), everyone_but_alice)
    assert decide(text) is Decision.ALLOW
    assert decide(text, principal_arn=f"arn:aws:iam::{A}:user/eve") is Decision.DENY
    without_her_account = everyone_but_alice | {"NotPrincipal": {"AWS": ALICE}}
    assert decide(doc(allow(), without_her_account)) is Decision.DENY


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("kms:*", "kms:Decrypt", True),
        ("*", "kms:Decrypt", True),
        ("kms:Generate*", "kms:GenerateDataKeyPair", True),
        ("KMS:generatedatakey*", "kms:GenerateDataKeyPair", True),
        ("kms:Re?ncrypt*", "kms:ReEncryptFrom", True),
        ("kms:Generate*", "kms:Decrypt", False),
        ("kms:Decrypt", "kms:DecryptAll", False),
        ("s3:*", "kms:Decrypt", False),
    ],
)
def test_actions_match_with_wildcards_and_any_case(pattern, action, expected):
    got = decide(doc(allow(action=pattern)), action=action)
    assert (got is Decision.ALLOW) is expected


def test_not_action_allows_every_other_action():
    st = allow()
    del st["Action"]
    st["NotAction"] = ["kms:ScheduleKeyDeletion", "kms:Put*"]
    text = doc(st)
    assert decide(text, action="kms:Decrypt") is Decision.ALLOW
    assert decide(text, action="kms:PutKeyPolicy") is Decision.NO_MATCH


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("*", True),
        (KEY, True),
        (f"arn:aws:kms:*:{A}:key/*", True),
        (f"arn:aws:kms:us-east-1:{B}:key/*", False),
        (KEY.upper(), False),
    ],
)
def test_resources_match_the_key_arn(resource, expected):
    got = decide(doc(allow(Resource=resource)))
    assert (got is Decision.ALLOW) is expected


def test_not_resource_excludes_the_key():
    st = allow()
    del st["Resource"]
    st["NotResource"] = KEY
    assert decide(doc(st)) is Decision.NO_MATCH


def test_an_explicit_deny_wins_over_any_allow_in_any_order():
    assert decide(doc(allow(), deny(action="kms:Decrypt"))) is Decision.DENY
    assert decide(doc(deny(action="kms:Decrypt"), allow())) is Decision.DENY
    assert decide(doc(allow(), deny(action="kms:Encrypt"))) is Decision.ALLOW


def test_nothing_allows_by_default():
    assert decide(doc(allow(principal={"AWS": BOB}))) is Decision.NO_MATCH


# -- string operators ------------------------------------------------------------------------
EC = {"tenant": "acme", "Purpose": "backup"}


@pytest.mark.parametrize(
    ("operator", "values", "expected"),
    [
        ("StringEquals", "acme", True),
        ("StringEquals", ["other", "acme"], True),
        ("StringEquals", "ACME", False),
        ("StringNotEquals", "other", True),
        ("StringNotEquals", ["other", "acme"], False),
        ("StringEqualsIgnoreCase", "ACME", True),
        ("StringEqualsIgnoreCase", "acmf", False),
        ("StringNotEqualsIgnoreCase", "ACME", False),
        ("StringNotEqualsIgnoreCase", "x", True),
        ("StringLike", "ac*", True),
        ("StringLike", "a?me", True),
        ("StringLike", "b*", False),
        ("StringNotLike", "b*", True),
        ("StringNotLike", "*m*", False),
    ],
)
def test_string_operators(operator, values, expected):
    assert (
        holds(operator, "kms:EncryptionContext:tenant", values, encryption_context=EC) is expected
    )


def test_encryption_context_key_names_are_case_insensitive_and_values_are_not():
    assert holds("StringEquals", "kms:EncryptionContext:PURPOSE", "backup", encryption_context=EC)
    assert not holds(
        "StringEquals", "kms:EncryptionContext:purpose", "Backup", encryption_context=EC
    )


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        ("StringEquals", False),
        ("StringLike", False),
        ("StringEqualsIgnoreCase", False),
        ("StringNotEquals", True),
        ("StringNotLike", True),
        ("StringNotEqualsIgnoreCase", True),
        ("StringEqualsIfExists", True),
        ("StringNotEqualsIfExists", True),
        ("NumericLessThan", False),
        ("NumericNotEquals", True),
        ("Bool", False),
        ("IpAddress", False),
        ("NotIpAddress", True),
        ("ArnLike", False),
        ("ArnNotLike", True),
        ("DateLessThan", False),
        ("ForAnyValue:StringEquals", False),
        ("ForAnyValue:StringNotEquals", False),
        ("ForAllValues:StringEquals", True),
        ("ForAllValues:StringNotLike", True),
    ],
)
def test_a_missing_key_fails_except_negated_ifexists_and_for_all_values(operator, expected):
    assert holds(operator, "kms:EncryptionContext:tenant", "acme") is expected


def test_an_empty_encryption_context_is_a_missing_key():
    assert holds("Null", "kms:EncryptionContextKeys", "true", encryption_context={})
    assert not holds("StringEquals", "kms:EncryptionContext:tenant", "acme", encryption_context={})


def test_ifexists_still_checks_a_present_key():
    assert holds(
        "StringEqualsIfExists", "kms:EncryptionContext:tenant", "acme", encryption_context=EC
    )
    assert not holds(
        "StringEqualsIfExists", "kms:EncryptionContext:tenant", "other", encryption_context=EC
    )


# -- Null, Bool, numeric, date, IP, ARN -------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "context", "expected"),
    [
        ("true", None, True),
        ("true", EC, False),
        ("false", EC, True),
        ("false", None, False),
        (True, None, True),
        (["true", "false"], EC, True),
    ],
)
def test_null_tests_whether_a_key_is_absent(value, context, expected):
    assert holds("Null", "kms:EncryptionContextKeys", value, encryption_context=context) is expected


@pytest.mark.parametrize(
    ("value", "flag", "expected"),
    [
        ("true", False, False),
        ("false", False, True),
        (False, False, True),
        ("TRUE", True, True),
        (True, True, True),
        ("false", True, False),
    ],
)
def test_bool(value, flag, expected):
    assert (
        holds("Bool", "kms:GrantIsForAWSResource", value, grant_is_for_aws_resource=flag)
        is expected
    )


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("NumericEquals", "7", True),
        ("NumericEquals", 7, True),
        ("NumericEquals", "8", False),
        ("NumericNotEquals", "8", True),
        ("NumericNotEquals", "7", False),
        ("NumericLessThan", "8", True),
        ("NumericLessThan", "7", False),
        ("NumericLessThanEquals", "7", True),
        ("NumericLessThanEquals", "6", False),
        ("NumericGreaterThan", "6.5", True),
        ("NumericGreaterThan", "7", False),
        ("NumericGreaterThanEquals", "7", True),
        ("NumericGreaterThanEquals", "8", False),
        ("NumericEquals", "seven", False),
    ],
)
def test_numeric_operators(operator, value, expected):
    extra = {"kms:ScheduleKeyDeletionPendingWindowInDays": "7"}
    assert (
        holds(operator, "kms:ScheduleKeyDeletionPendingWindowInDays", value, extra=extra)
        is expected
    )


NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("operator", "key", "value", "expected"),
    [
        ("DateLessThan", "aws:CurrentTime", "2025-01-01T00:00:00Z", True),
        ("DateLessThan", "aws:CurrentTime", "2024-01-01T00:00:00Z", False),
        ("DateGreaterThan", "aws:CurrentTime", "2024-01-01T00:00:00Z", True),
        ("DateGreaterThanEquals", "aws:EpochTime", str(int(NOW.timestamp())), True),
        ("DateLessThanEquals", "aws:EpochTime", str(int(NOW.timestamp()) - 1), False),
        ("DateEquals", "aws:CurrentTime", "2024-06-01T12:00:00Z", True),
        ("DateNotEquals", "aws:CurrentTime", "2024-06-01T12:00:00Z", False),
        ("DateLessThan", "aws:CurrentTime", "not a date", False),
    ],
)
def test_date_operators(operator, key, value, expected):
    assert holds(operator, key, value, now=NOW) is expected


@pytest.mark.parametrize(
    ("operator", "value", "ip", "expected"),
    [
        ("IpAddress", "192.0.2.0/24", "192.0.2.7", True),
        ("IpAddress", ["10.0.0.0/8", "192.0.2.7"], "192.0.2.7", True),
        ("IpAddress", "192.0.2.0/24", "198.51.100.1", False),
        ("IpAddress", "2001:db8::/32", "2001:db8::1", True),
        ("IpAddress", "not-a-cidr", "192.0.2.7", False),
        ("NotIpAddress", "10.0.0.0/8", "192.0.2.7", True),
        ("NotIpAddress", "192.0.2.0/24", "192.0.2.7", False),
    ],
)
def test_source_ip_matches_cidr_blocks(operator, value, ip, expected):
    assert holds(operator, "aws:SourceIp", value, source_ip=ip) is expected


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("ArnEquals", ALICE, True),
        ("ArnLike", f"arn:aws:iam::{A}:user/*", True),
        ("ArnLike", "arn:aws:iam::*:user/al?ce", True),
        ("ArnLike", f"arn:aws:iam::{B}:user/*", False),
        ("ArnLike", "arn:aws:iam:user/alice", False),
        ("ArnNotLike", f"arn:aws:iam::{B}:*", True),
        ("ArnNotEquals", ALICE, False),
    ],
)
def test_arn_operators_on_the_principal_arn(operator, value, expected):
    assert holds(operator, "aws:PrincipalArn", value) is expected


def test_caller_and_principal_account_keys():
    assert holds("StringEquals", "kms:CallerAccount", A)
    assert holds("StringEquals", "aws:PrincipalAccount", A)
    assert not holds("StringEquals", "kms:CallerAccount", B)


def test_condition_key_names_are_case_insensitive():
    assert holds("StringEquals", "KMS:KEYSPEC", "SYMMETRIC_DEFAULT")
    assert holds("StringEquals", "kms:keyusage", "ENCRYPT_DECRYPT")


def test_key_pair_spec_algorithm_and_alias_keys():
    assert holds("StringEquals", "kms:DataKeyPairSpec", "RSA_4096", data_key_pair_spec="RSA_4096")
    assert not holds(
        "StringEquals", "kms:DataKeyPairSpec", "RSA_4096", data_key_pair_spec="ECC_NIST_P256"
    )
    assert holds(
        "StringEquals",
        "kms:EncryptionAlgorithm",
        "SYMMETRIC_DEFAULT",
        encryption_algorithm="SYMMETRIC_DEFAULT",
    )
    assert holds("StringEquals", "kms:RequestAlias", "alias/app", request_alias="alias/app")
    assert not holds("StringEquals", "kms:RequestAlias", "alias/app")


# -- set operators -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("operator", "values", "request_values", "expected"),
    [
        ("ForAllValues:StringEquals", ["Decrypt", "Encrypt"], ["Decrypt"], True),
        ("ForAllValues:StringEquals", ["Decrypt", "Encrypt"], ["Decrypt", "Encrypt"], True),
        ("ForAllValues:StringEquals", ["Decrypt"], ["Decrypt", "CreateGrant"], False),
        ("ForAnyValue:StringEquals", ["CreateGrant"], ["Decrypt", "CreateGrant"], True),
        ("ForAnyValue:StringEquals", ["CreateGrant"], ["Decrypt"], False),
        ("ForAnyValue:StringNotEquals", ["Decrypt"], ["Decrypt", "Encrypt"], True),
        ("ForAnyValue:StringNotEquals", ["Decrypt"], ["Decrypt"], False),
        ("ForAllValues:StringNotEquals", ["CreateGrant"], ["Decrypt", "Encrypt"], True),
        ("ForAllValues:StringNotEquals", ["CreateGrant"], ["Decrypt", "CreateGrant"], False),
        ("ForAllValues:StringLike", ["Generate*", "Decrypt"], ["GenerateDataKey", "Decrypt"], True),
        ("ForAnyValue:StringLike", ["Re*"], ["Decrypt"], False),
        ("ForAllValues:StringEquals", ["Decrypt"], None, True),
        ("ForAnyValue:StringEquals", ["Decrypt"], None, False),
        ("StringEquals", ["Decrypt"], ["Encrypt", "Decrypt"], True),
        ("StringNotEquals", ["Decrypt"], ["Encrypt", "Decrypt"], False),
    ],
)
def test_set_operators_on_grant_operations(operator, values, request_values, expected):
    assert (
        holds(operator, "kms:GrantOperations", values, grant_operations=request_values) is expected
    )


def test_set_operators_on_encryption_context_keys_are_case_sensitive():
    key = "kms:EncryptionContextKeys"
    assert holds("ForAllValues:StringEquals", key, ["tenant", "Purpose"], encryption_context=EC)
    assert not holds("ForAllValues:StringEquals", key, ["tenant", "purpose"], encryption_context=EC)
    assert holds("ForAnyValue:StringEquals", key, "tenant", encryption_context=EC)


def test_resource_aliases_are_read_only_when_a_policy_asks():
    asked: list[int] = []

    def aliases() -> list[str]:
        asked.append(1)
        return ["alias/app", "alias/blue"]

    assert holds(
        "ForAnyValue:StringLike", "kms:ResourceAliases", "alias/b*", resource_aliases=aliases
    )
    assert not holds(
        "ForAnyValue:StringEquals", "kms:ResourceAliases", "alias/red", resource_aliases=aliases
    )
    assert decide(doc(allow())) is Decision.ALLOW
    assert len(asked) == 2


def test_every_operator_and_key_of_a_block_must_hold():
    both = {
        "StringEquals": {
            "kms:EncryptionContext:tenant": "acme",
            "kms:EncryptionContext:Purpose": "backup",
        },
        "StringLike": {"aws:PrincipalArn": "*:user/alice"},
    }
    assert decide(doc(allow(Condition=both)), encryption_context=EC) is Decision.ALLOW
    other = dict(EC, Purpose="restore")
    assert decide(doc(allow(Condition=both)), encryption_context=other) is Decision.NO_MATCH
    assert (
        decide(
            doc(allow(Condition=both)),
            encryption_context=EC,
            principal_arn=f"arn:aws:iam::{A}:user/bob",
        )
        is Decision.NO_MATCH
    )


def test_a_deny_with_a_condition_denies_only_when_it_holds():
    text = doc(
        allow(),
        deny(
            action="kms:GenerateDataKeyPair*",
            Condition={"StringEquals": {"kms:DataKeyPairSpec": "RSA_4096"}},
        ),
    )
    assert (
        decide(text, action="kms:GenerateDataKeyPair", data_key_pair_spec="RSA_4096")
        is Decision.DENY
    )
    assert (
        decide(text, action="kms:GenerateDataKeyPair", data_key_pair_spec="RSA_2048")
        is Decision.ALLOW
    )


def test_condition_holds_directly():
    c = Condition("StringEquals", "kms:KeySpec", ("SYMMETRIC_DEFAULT",))
    assert condition_holds(c, ctx())
    assert not condition_holds(Condition("StringEquals", "kms:KeySpec", ("RSA_2048",)), ctx())
