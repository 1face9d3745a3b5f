"""What bounds the work of one key policy evaluation (issue 13, item 1): wildcards matched in
linear time, a budget of steps per evaluation that decides safely when it runs out, and the
8,192-byte limit of an encryption context. Pure: no token, no store."""

from __future__ import annotations

import itertools
import json
import re
import time
from typing import Any

import pytest
from test_policy_eval import KEY, A, ctx  # one request-context builder

from hsmkms import errors
from hsmkms.service import encryption_context
from hsmkms.service.policy_eval import Decision, evaluate, parse
from hsmkms.service.policy_eval.budget import MAX_EVALUATION_STEPS
from hsmkms.service.policy_eval.operators import _glob


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(**more: Any) -> dict[str, Any]:
    st = {"Effect": "Allow", "Principal": {"AWS": A}, "Action": "kms:*", "Resource": "*"}
    return st | more


def deny(**more: Any) -> dict[str, Any]:
    return allow(Effect="Deny", **more)


def regex_glob(pattern: str, value: str, fold: bool) -> bool:
    """The matcher hsmkms had before: right, but exponential on ``*?*?*?...``."""
    body = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    flags = re.IGNORECASE | re.DOTALL if fold else re.DOTALL
    return re.match(f"^{body}$", value, flags) is not None


def test_the_wildcard_matcher_agrees_with_a_regular_expression_on_every_small_case():
    patterns = ["".join(p) for n in range(6) for p in itertools.product("a*?", repeat=n)]
    values = ["".join(v) for n in range(6) for v in itertools.product("aA/", repeat=n)]
    for pattern in patterns + ["a*a?a", "*/*/*.log", "kms:Gen*Pair*", "arn:*:key/?"]:
        for value in values + ["a/b/c.log", "kms:GenerateDataKeyPair", "arn:x:key/1"]:
            for fold in (False, True):
                assert _glob(pattern, value, fold) is regex_glob(pattern, value, fold), (
                    pattern,
                    value,
                    fold,
                )


@pytest.mark.parametrize(
    "pattern, value",
    [
        ("*?*?*?*?*?*?*?#", KEY),  # 14.5 s per Encrypt before
        ("*?" * 40 + "#", KEY),
        ("*/*/*/*.log", "/" * 8188),  # hours before
        ("*a*a*a*a*a*a*a*a*b", "a" * 8000),
        ("*" + "a?" * 1000 + "b", "a" * 8000),
    ],
)
def test_the_patterns_that_froze_the_server_match_in_milliseconds(pattern, value):
    t0 = time.perf_counter()
    assert _glob(pattern, value) is False
    assert time.perf_counter() - t0 < 0.05


def test_a_deny_on_one_own_key_with_many_wildcards_decides_in_milliseconds():
    policy = parse(doc(allow(), deny(Resource="*?*?*?*?*?*?*?#")))
    t0 = time.perf_counter()
    assert evaluate(policy, ctx()) is Decision.ALLOW
    assert time.perf_counter() - t0 < 0.05


def test_a_long_context_value_against_string_not_like_decides_in_milliseconds():
    guard = deny(Condition={"StringNotLike": {"kms:EncryptionContext:path": "*/*/*/*.log"}})
    policy = parse(doc(allow(), guard))
    t0 = time.perf_counter()
    decision = evaluate(policy, ctx(encryption_context={"path": "/" * 8188}))
    assert time.perf_counter() - t0 < 0.05
    assert decision is Decision.DENY  # not a .log path: the guard applies
    ok = ctx(encryption_context={"path": "a/b/c/d.log"})
    assert evaluate(policy, ok) is Decision.ALLOW


# -- the budget of one evaluation ---------------------------------------------------------------
# One wildcard that costs far more than a few steps against a long value: every "a" is a
# candidate for the segment "a?a?...b", each candidate checked against 200 literals.
COSTLY = {"StringLike": {"kms:EncryptionContext:p": "*" + "a?" * 200 + "b*"}}
LONG = {"p": "a" * 8000}


def test_a_deny_that_cannot_be_evaluated_within_the_budget_applies():
    policy = parse(doc(allow(), deny(Condition=COSTLY)))
    t0 = time.perf_counter()
    assert evaluate(policy, ctx(encryption_context=LONG)) is Decision.DENY
    assert time.perf_counter() - t0 < 0.1
    # The same Deny, decided within the budget, does not apply.
    assert evaluate(policy, ctx(encryption_context={"p": "short"})) is Decision.ALLOW


def test_an_allow_that_cannot_be_evaluated_within_the_budget_does_not_allow():
    policy = parse(doc(allow(Condition=COSTLY)))
    assert evaluate(policy, ctx(encryption_context=LONG)) is Decision.NO_MATCH
    # A cheaper Allow decided before it still allows; a Deny after it still applies.
    assert evaluate(parse(doc(allow(), allow(Condition=COSTLY))), ctx()) is Decision.ALLOW
    later_deny = parse(doc(allow(Condition=COSTLY), deny(Action="kms:Encrypt")))
    assert evaluate(later_deny, ctx(encryption_context=LONG)) is Decision.DENY


def test_running_out_is_logged_once_per_evaluation(caplog):
    policy = parse(doc(allow(), deny(Condition=COSTLY)))
    with caplog.at_level("WARNING", logger="hsmkms.service"):
        evaluate(policy, ctx(encryption_context=LONG))
    (record,) = [r for r in caplog.records if "steps" in r.getMessage()]
    assert KEY in record.getMessage() and "a Deny it could not finish applies" in (
        record.getMessage()
    )


def test_a_large_ordinary_policy_is_decided_well_within_the_budget():
    # A hundred statements with actions, resources and context conditions, a context of 40 pairs.
    statements = [
        allow(
            Sid=f"s{i}",
            Principal={"AWS": [f"arn:aws:iam::{A}:user/u{j}" for j in range(5)] + [A]},
            Action=["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*"],
            Resource=[KEY, f"arn:aws:kms:*:{A}:key/*"],
            Condition={
                "StringLike": {f"kms:EncryptionContext:k{i % 40}": ["app-*", "*-prod"]},
                "StringEquals": {"kms:EncryptionContextKeys": [f"k{j}" for j in range(10)]},
            },
        )
        for i in range(100)
    ]
    context = {f"k{i}": f"value-{i}" for i in range(40)}
    policy = parse(doc(*statements))
    assert evaluate(policy, ctx(encryption_context=context)) is Decision.NO_MATCH
    assert evaluate(policy, ctx(encryption_context=context), MAX_EVALUATION_STEPS // 5) is (
        Decision.NO_MATCH
    )


# -- the size of an encryption context ----------------------------------------------------------
def test_an_encryption_context_of_8192_bytes_passes_and_one_byte_more_is_refused():
    at_limit = {"path": "é" * ((8192 - 4) // 2)}
    assert encryption_context.size(at_limit) == 8192
    assert encryption_context.checked(at_limit, "EncryptionContext") is at_limit
    assert encryption_context.checked(None, "EncryptionContext") is None
    with pytest.raises(errors.ValidationException) as info:
        encryption_context.checked(at_limit | {"x": ""}, "SourceEncryptionContext")
    assert "SourceEncryptionContext is 8193 bytes" in str(info.value)
