"""Key policies, generated (hypothesis), against the evaluator's bound on work (issue 13,
item 1): policies full of ``*`` and ``?`` in actions, resources and StringLike conditions,
evaluated against encryption contexts of long values (up to the 8,192 bytes AWS allows). Every
evaluation ends within a fixed time, whatever is generated, and the wildcard matcher agrees
with a regular expression wherever the latter is quick enough to ask.

Bounded: a fixed number of examples per property (``HSMKMS_FUZZ_EXAMPLES`` scales them), no
example database (nothing written to the tree), a deadline per example.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsmkms.service import encryption_context
from hsmkms.service.policy_eval import Decision, RequestContext, evaluate, parse
from hsmkms.service.policy_eval.operators import _glob

SCALE = float(os.environ.get("HSMKMS_FUZZ_EXAMPLES", "1"))
FUZZ = settings(
    max_examples=max(20, int(150 * SCALE)),
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The budget of one evaluation is about 20 ms of the slowest steps; this leaves room for a
# machine shared with other work, and is still ~1,000x below what the old matcher took.
EVALUATION_LIMIT = 0.25
A = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{A}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

# -- strategies ----------------------------------------------------------------------------------
WILD = "*?"
LETTERS = "a/b.-:"
wildcard_runs = st.integers(1, 40).map(lambda n: "*?" * n)
pattern = st.one_of(
    st.text(st.sampled_from(WILD + LETTERS), min_size=1, max_size=60),
    st.tuples(wildcard_runs, st.text(st.sampled_from(LETTERS + "#"), max_size=6)).map("".join),
    st.tuples(st.text(st.sampled_from("ab?"), min_size=1, max_size=6), st.integers(1, 60)).map(
        lambda t: "*" + t[0] * t[1] + "b*"
    ),
    st.sampled_from(["*/*/*/*.log", "*a*a*a*a*a*a*a*b", "kms:*", "*", "arn:aws:kms:*"]),
)
long_value = st.tuples(
    st.text(st.sampled_from(LETTERS), min_size=1, max_size=8), st.integers(1, 2000)
).map(lambda t: (t[0] * t[1])[:8000])
context_key = st.sampled_from(["path", "p", "tenant", "Path", "k"])


@st.composite
def contexts(draw: Any) -> dict[str, str]:
    pairs = draw(st.dictionaries(context_key, long_value, max_size=4))
    while pairs and encryption_context.size(pairs) > encryption_context.MAX_BYTES:
        k = next(iter(pairs))
        pairs[k] = pairs[k][: len(pairs[k]) // 2]
        if not pairs[k]:
            del pairs[k]
    return pairs


@st.composite
def statements(draw: Any) -> dict[str, Any]:
    st_: dict[str, Any] = {
        "Effect": draw(st.sampled_from(["Allow", "Deny"])),
        "Principal": draw(st.sampled_from(["*", {"AWS": A}, {"AWS": f"arn:aws:iam::{A}:root"}])),
        "Action": draw(st.lists(pattern.map(lambda p: "kms:" + p), min_size=1, max_size=8)),
        "Resource": draw(st.lists(pattern, min_size=1, max_size=8)),
    }
    operator = draw(
        st.sampled_from(
            ["StringLike", "StringNotLike", "ForAnyValue:StringLike", "ForAllValues:StringNotLike"]
        )
    )
    keys = draw(st.lists(context_key, min_size=1, max_size=4, unique=True))
    st_["Condition"] = {
        operator: {
            f"kms:EncryptionContext:{k}": draw(st.lists(pattern, min_size=1, max_size=12))
            for k in keys
        }
    }
    return st_


policies = st.lists(statements(), min_size=1, max_size=20).map(
    lambda sts: json.dumps({"Version": "2012-10-17", "Statement": sts})
)


# -- properties ----------------------------------------------------------------------------------
@FUZZ
@given(text=policies, context=contexts(), action=st.sampled_from(["kms:Decrypt", "kms:Encrypt"]))
def test_any_policy_of_wildcards_is_decided_within_a_fixed_time(text, context, action):
    policy = parse(text)
    ctx = RequestContext(
        action=action,
        principal_arn=f"arn:aws:iam::{A}:user/alice",
        principal_account=A,
        resource_arn=KEY,
        encryption_context=context,
    )
    t0 = time.perf_counter()
    decision = evaluate(policy, ctx)
    elapsed = time.perf_counter() - t0
    assert isinstance(decision, Decision)
    assert elapsed < EVALUATION_LIMIT, (elapsed, text[:300])


def regex_glob(p: str, v: str) -> bool:
    body = re.escape(p).replace(r"\*", ".*").replace(r"\?", ".")
    return re.match(f"^{body}$", v, re.DOTALL) is not None


@settings(FUZZ, max_examples=max(100, int(1000 * SCALE)))
@given(
    p=st.text(st.sampled_from("ab*?"), max_size=10),
    v=st.text(st.sampled_from("abc"), max_size=16),
)
def test_the_wildcard_matcher_agrees_with_a_regular_expression(p, v):
    assert _glob(p, v) is regex_glob(p, v)
