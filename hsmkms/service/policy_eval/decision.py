"""AWS's decision for one request under one key policy ("Policy evaluation logic"): which
statements apply (principal, action, resource, conditions) and whether a Deny, an Allow or
nothing decides."""

from __future__ import annotations

import logging
import re
from enum import Enum

from hsmkms.service.policy_eval.budget import (
    CURRENT,
    MAX_EVALUATION_STEPS,
    Budget,
    EvaluationTooLong,
    spend,
)
from hsmkms.service.policy_eval.condition_keys import unknowable
from hsmkms.service.policy_eval.document import (
    PRINCIPAL_ARN,
    Condition,
    Policy,
    Principals,
    Statement,
)
from hsmkms.service.policy_eval.operators import _MATCHERS, _POSITIVE, _glob
from hsmkms.service.policy_eval.request import RequestContext

log = logging.getLogger("hsmkms.service")

_SESSION_ARN = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/.+$")


class Decision(Enum):
    """AWS's evaluation outcome for one policy."""

    ALLOW = "Allow"
    DENY = "Deny"  # an explicit deny
    NO_MATCH = "NoMatch"  # the implicit deny: no statement allows


def evaluate(policy: Policy, ctx: RequestContext, steps: int = MAX_EVALUATION_STEPS) -> Decision:
    """AWS's decision for ``ctx`` under ``policy``: an explicit Deny wins, then Allow.

    At most ``steps`` steps of work (:mod:`~hsmkms.service.policy_eval.budget`); past them the
    statements not yet decided are decided safely: any Deny among them applies (an explicit
    deny), no Allow among them does."""
    budget = Budget(steps)
    token = CURRENT.set(budget)
    try:
        allowed = False
        for i, st in enumerate(policy.statements):
            if st.effect == "Allow" and allowed:
                continue  # an Allow is already found; only a Deny can change the answer
            try:
                applies = statement_applies(st, ctx)
            except EvaluationTooLong:
                return _undecided(policy.statements[i:], allowed, ctx, steps)
            if applies:
                if st.effect == "Deny":
                    return Decision.DENY
                allowed = True
        return Decision.ALLOW if allowed else Decision.NO_MATCH
    finally:
        CURRENT.reset(token)


def _undecided(
    rest: tuple[Statement, ...], allowed: bool, ctx: RequestContext, steps: int
) -> Decision:
    """The decision when the statements ``rest`` could not be evaluated within ``steps``."""
    deny = any(st.effect == "Deny" for st in rest)
    log.warning(
        "the key policy of %s needed more than %d steps to decide %s for %s: %s",
        ctx.resource_arn,
        steps,
        ctx.action,
        ctx.principal_arn,
        "a Deny it could not finish applies" if deny else "the Allows it could not finish do not",
    )
    if deny:
        return Decision.DENY
    return Decision.ALLOW if allowed else Decision.NO_MATCH


def statement_applies(st: Statement, ctx: RequestContext) -> bool:
    """Whether one statement matches the request (its Effect aside)."""
    spend(1)
    if st.principal is not None:
        if not principals_match(st.principal, ctx.principal_arn, ctx.principal_account):
            return False
    elif st.not_principal is not None:
        if st.effect == "Allow":
            return False  # refused in new policies (check_new); never an allow for everyone
        if not_principal_exempts(st.not_principal, ctx.principal_arn, ctx.principal_account):
            return False
    else:
        return False
    if st.actions is not None:
        if not any(_glob(a, ctx.action, fold=True) for a in st.actions):
            return False
    elif st.not_actions is not None:
        if any(_glob(a, ctx.action, fold=True) for a in st.not_actions):
            return False
    else:
        return False
    if st.resources is not None:
        if not any(_glob(r, ctx.resource_arn) for r in st.resources):
            return False
    elif st.not_resources is not None:
        if any(_glob(r, ctx.resource_arn) for r in st.not_resources):
            return False
    else:
        return False
    # A condition on a key hsmkms cannot know (only in a policy stored before CreateKey and
    # PutKeyPolicy refused them): it holds for a Deny and fails for an Allow.
    return all(
        st.effect == "Deny" if unknowable(c.key) else condition_holds(c, ctx) for c in st.conditions
    )


def principals_match(principals: Principals, principal_arn: str, account_id: str) -> bool:
    """Whether a Principal element names the caller (see the module docstring)."""
    if principals.everyone:
        return True
    spend(len(principals.aws))
    return any(principal_names(p, principal_arn, account_id) for p in principals.aws)


def not_principal_exempts(principals: Principals, principal_arn: str, account_id: str) -> bool:
    """Whether a Deny's NotPrincipal exempts the caller (IAM User Guide, "AWS JSON policy
    elements: NotPrincipal"): AWS evaluates the request as each identity of the caller, its
    account, the role of an assumed-role session, and the user or session itself, so the
    caller is exempt only when every one of them is named. An account alone exempts only
    the account itself (its root user), a user without its account nobody."""
    if principals.everyone:
        return True
    names = principals.aws
    spend(3 * len(names))
    if not any(_names_account(n, account_id) for n in names):
        return False
    own = PRINCIPAL_ARN.match(principal_arn)
    if own is not None and own.group(3) == "root":
        return True  # the account itself
    if principal_arn not in names:
        return False
    session = _SESSION_ARN.match(principal_arn)
    return session is None or any(_names_role(n, session) for n in names)


def _names_account(name: str, account_id: str) -> bool:
    if name == account_id:
        return True
    m = PRINCIPAL_ARN.match(name)
    return (
        m is not None
        and m.group(1) == "iam"
        and m.group(2) == account_id
        and (m.group(3) == "root")
    )


def _names_role(name: str, session: re.Match[str]) -> bool:
    """Whether ``name`` is the role ARN (with any path) of the assumed-role ``session``."""
    m = PRINCIPAL_ARN.match(name)
    return (
        m is not None
        and m.group(1) == "iam"
        and m.group(2) == session.group(2)
        and m.group(3).startswith("role/")
        and m.group(3).rsplit("/", 1)[-1] == session.group(3)
    )


def principal_names(name: str, principal_arn: str, account_id: str) -> bool:
    """Whether one principal of a policy or grant (ARN, account id, account root ARN, "*")
    names the caller ``principal_arn`` of ``account_id``."""
    if name == "*" or name == principal_arn:
        return True
    if name == account_id:
        return True
    m = PRINCIPAL_ARN.match(name)
    if m is None or m.group(2) != account_id:
        return False
    resource = m.group(3)
    if resource == "root":
        return True
    session = _SESSION_ARN.match(principal_arn)
    if session and m.group(1) == "iam" and resource.startswith("role/"):
        return resource.rsplit("/", 1)[-1] == session.group(3)
    return False


def condition_holds(c: Condition, ctx: RequestContext) -> bool:
    """One condition key under one operator, with AWS's rules for missing keys and sets."""
    found = ctx.values(c.key)
    if found is not None and not found:
        found = None  # an empty set is a missing key
    if c.operator == "Null":
        want_null = [v.lower() == "true" for v in c.values]
        return (found is None) in want_null
    if found is None:
        if c.set_operator == "ForAllValues":
            return True
        if c.set_operator == "ForAnyValue":
            return False
        return c.if_exists or c.negated

    match = _MATCHERS[_POSITIVE.get(c.operator, c.operator)]
    spend(len(found) * len(c.values))  # the comparisons below, at most

    def member_ok(value: str) -> bool:
        hit = any(match(value, expected) for expected in c.values)
        return not hit if c.negated else hit

    if c.set_operator == "ForAllValues":
        return all(member_ok(v) for v in found)
    if c.set_operator == "ForAnyValue":
        return any(member_ok(v) for v in found)
    # No set operator: the operator's plain reading, "the value equals one of ..." for a
    # positive operator and its negation for a negated one.
    hit = any(match(v, expected) for v in found for expected in c.values)
    return not hit if c.negated else hit
