"""Key policy documents and their evaluation, as AWS documents them: pure, no store, no HTTP.

A request is described by a :class:`RequestContext` (action, caller, key, encryption context,
...); a key policy is parsed once into immutable :class:`Statement` records; :func:`evaluate`
answers AWS's three-way decision:

* an explicit ``Deny`` in a matching statement wins (:attr:`Decision.DENY`);
* else an ``Allow`` in a matching statement allows (:attr:`Decision.ALLOW`);
* else nothing allows: the implicit deny (:attr:`Decision.NO_MATCH`), which a grant may still
  turn into an allow (the caller, :mod:`hsmkms.service.policy`, decides that).

What is copied from AWS (IAM JSON policy reference, "Policy evaluation logic", "Condition
operators", "Single-valued vs. multivalued context keys", and the KMS developer guide's
"Condition keys for AWS KMS"):

* ``Principal``/``NotPrincipal``: ``"*"``, ``{"AWS": ...}`` with ARNs or account ids. An account
  (``111122223333`` or ``arn:aws:iam::111122223333:root``) names every principal of that account:
  hsmkms has no IAM, so the default key policy's "let the account's IAM policies decide" means
  "the account's principals may". A role ARN also names that role's assumed-role sessions.
  ``Service``/``Federated``/``CanonicalUser`` principals never match a caller here.
* ``Action``/``NotAction`` with ``*`` and ``?`` wildcards, case-insensitive.
* ``Resource``/``NotResource``: ``"*"`` or the key ARN (wildcards allowed, case-sensitive).
  A statement without ``Action`` or without ``Resource`` is accepted and has no effect, as
  KMS documents for CreateKey and PutKeyPolicy.
* Conditions: every operator and every key of a ``Condition`` block must hold; the values of
  one key are alternatives (OR), or for a negated operator (``StringNotEquals``...) all must
  fail (NOR). A key missing from the request fails the condition, except under a negated
  operator, an ``...IfExists`` operator, ``Null``, or ``ForAllValues:`` (which holds for an
  empty or missing set); ``ForAnyValue:`` fails on a missing set.
* Condition key names are case-insensitive, including the ``<key>`` of
  ``kms:EncryptionContext:<key>``; values are compared case-sensitively unless the operator
  says ``IgnoreCase``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from typing import Any

VERSIONS = ("2012-10-17", "2008-10-17")
INVALID_PRINCIPALS = "Policy contains a statement with one or more invalid principals."

# Condition keys whose value is a set (the others hold one value).
MULTIVALUED_KEYS = frozenset({"kms:encryptioncontextkeys", "kms:grantoperations",
                              "kms:resourcealiases"})

_STATEMENT_ELEMENTS = frozenset({"Sid", "Effect", "Principal", "NotPrincipal", "Action",
                                 "NotAction", "Resource", "NotResource", "Condition"})
_POLICY_ELEMENTS = frozenset({"Version", "Id", "Statement"})
_ACCOUNT = re.compile(r"^\d{12}$")
PRINCIPAL_ARN = re.compile(
    r"^arn:aws[a-z-]*:(iam|sts)::(\d{12}):"
    r"(root|user/.+|role/.+|assumed-role/.+/.+|federated-user/.+)$"
)
_SESSION_ARN = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/.+$")


class PolicyError(ValueError):
    """A policy document that is not valid: the message says why (AWS's words where known)."""


class Decision(Enum):
    """AWS's evaluation outcome for one policy."""

    ALLOW = "Allow"
    DENY = "Deny"  # an explicit deny
    NO_MATCH = "NoMatch"  # the implicit deny: no statement allows


# -- the request ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestContext:
    """What a policy can see of one request: the action, who asks, on what, and with what.

    ``None`` means "not in the request" (a missing condition key). ``resource_aliases`` may be
    a callable, evaluated only if a policy asks for ``kms:ResourceAliases`` (it costs a store
    read). ``extra`` holds further condition keys by name (``kms:KeyOrigin``...)."""

    action: str
    principal_arn: str
    principal_account: str
    resource_arn: str = "*"
    encryption_context: Mapping[str, str] | None = None
    key_spec: str | None = None
    key_usage: str | None = None
    encryption_algorithm: str | None = None
    data_key_pair_spec: str | None = None
    grant_operations: Sequence[str] | None = None
    grant_is_for_aws_resource: bool | None = None
    request_alias: str | None = None
    resource_aliases: Sequence[str] | Callable[[], Sequence[str]] | None = None
    source_ip: str | None = None
    now: datetime | None = None
    extra: Mapping[str, str | Sequence[str]] = field(default_factory=dict)

    def values(self, key: str) -> tuple[str, ...] | None:
        """The request's values of condition key ``key`` (any case); None when absent."""
        name = key.lower()
        if name.startswith("kms:encryptioncontext:"):
            if not self.encryption_context:
                return None
            wanted = name[len("kms:encryptioncontext:"):]
            found = tuple(v for k, v in self.encryption_context.items() if k.lower() == wanted)
            return found or None
        if name == "kms:encryptioncontextkeys":
            return tuple(self.encryption_context) if self.encryption_context else None
        if name == "kms:resourcealiases":
            aliases = self.resource_aliases
            if callable(aliases):
                aliases = aliases()
            return tuple(aliases) if aliases else None
        simple = self._simple(name)
        if simple is not None:
            return simple
        for k, v in self.extra.items():
            if k.lower() == name:
                return (v,) if isinstance(v, str) else tuple(v)
        return None

    def _simple(self, name: str) -> tuple[str, ...] | None:
        value: Any
        if name in ("aws:principalarn",):
            value = self.principal_arn
        elif name in ("aws:principalaccount", "kms:calleraccount"):
            value = self.principal_account
        elif name == "aws:sourceip":
            value = self.source_ip or None
        elif name == "kms:keyspec":
            value = self.key_spec
        elif name == "kms:keyusage":
            value = self.key_usage
        elif name == "kms:encryptionalgorithm":
            value = self.encryption_algorithm
        elif name == "kms:datakeypairspec":
            value = self.data_key_pair_spec
        elif name == "kms:requestalias":
            value = self.request_alias
        elif name == "kms:grantoperations":
            return tuple(self.grant_operations) if self.grant_operations else None
        elif name == "kms:grantisforawsresource":
            value = None if self.grant_is_for_aws_resource is None else (
                "true" if self.grant_is_for_aws_resource else "false")
        elif name == "aws:currenttime":
            value = self.now.strftime("%Y-%m-%dT%H:%M:%SZ") if self.now else None
        elif name == "aws:epochtime":
            value = str(int(self.now.timestamp())) if self.now else None
        else:
            return None
        return None if value is None else (value,)


# -- the policy ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    """One key of one operator of a Condition block, e.g. ``ForAnyValue:StringLikeIfExists``."""

    operator: str  # the base operator: StringEquals, NumericLessThan, Null...
    key: str  # the condition key, as written
    values: tuple[str, ...]
    set_operator: str | None = None  # "ForAnyValue" | "ForAllValues"
    if_exists: bool = False

    @property
    def negated(self) -> bool:
        return self.operator in _NEGATED


@dataclass(frozen=True)
class Principals:
    """A Principal element: AWS principals (ARNs, account ids, "*"), and whether it names
    others (services, federated, canonical users) that never match a caller here."""

    aws: tuple[str, ...] = ()
    everyone: bool = False


@dataclass(frozen=True)
class Statement:
    effect: str  # "Allow" | "Deny"
    sid: str | None = None
    principal: Principals | None = None
    not_principal: Principals | None = None
    actions: tuple[str, ...] | None = None
    not_actions: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    not_resources: tuple[str, ...] | None = None
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Policy:
    statements: tuple[Statement, ...]
    version: str | None = None
    id: str | None = None


def parse(text: str) -> Policy:
    """A key policy document checked for JSON and shape; :class:`PolicyError` otherwise.

    Parsed policies are cached by their text: evaluation is on every request's path."""
    return _parse_cached(text)


@lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Policy:
    try:
        doc = json.loads(text)
    except ValueError:
        raise PolicyError("The key policy is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise PolicyError("The key policy must be a JSON object.")
    unknown = sorted(set(doc) - _POLICY_ELEMENTS)
    if unknown:
        raise PolicyError(f"The key policy contains an unsupported element: {unknown[0]}.")
    version = doc.get("Version")
    if version is not None and version not in VERSIONS:
        raise PolicyError(
            f"The policy Version {version!r} is not supported: use 2012-10-17 or 2008-10-17."
        )
    raw = doc.get("Statement")
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise PolicyError("The key policy must contain a Statement.")
    statements = tuple(_statement(st) for st in raw)
    sids = [s.sid for s in statements if s.sid is not None]
    if len(sids) != len(set(sids)):
        raise PolicyError("Statement IDs (SID) in a single policy must be unique.")
    policy_id = doc.get("Id")
    return Policy(statements, version, policy_id if isinstance(policy_id, str) else None)


def _statement(raw: Any) -> Statement:
    if not isinstance(raw, dict):
        raise PolicyError("Each policy statement must be a JSON object.")
    unknown = sorted(set(raw) - _STATEMENT_ELEMENTS)
    if unknown:
        raise PolicyError(f"A policy statement contains an unsupported element: {unknown[0]}.")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError("Each policy statement must have an Effect of Allow or Deny.")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise PolicyError("A statement's Sid must be a string.")
    for a, b in (("Principal", "NotPrincipal"), ("Action", "NotAction"),
                 ("Resource", "NotResource")):
        if a in raw and b in raw:
            raise PolicyError(f"A policy statement cannot have both {a} and {b}.")
    # A key policy statement must name its principals (KMS refuses one that does not).
    if "Principal" not in raw and "NotPrincipal" not in raw:
        raise PolicyError(INVALID_PRINCIPALS)
    return Statement(
        effect=effect,
        sid=sid,
        principal=_principals(raw["Principal"]) if "Principal" in raw else None,
        not_principal=_principals(raw["NotPrincipal"]) if "NotPrincipal" in raw else None,
        actions=_strings(raw, "Action"),
        not_actions=_strings(raw, "NotAction"),
        resources=_strings(raw, "Resource"),
        not_resources=_strings(raw, "NotResource"),
        conditions=_conditions(raw.get("Condition")),
    )


def _principals(raw: Any) -> Principals:
    if raw == "*":
        return Principals(everyone=True)
    if not isinstance(raw, dict) or not raw:
        raise PolicyError(INVALID_PRINCIPALS)
    aws: list[str] = []
    for kind, names in raw.items():
        listed = names if isinstance(names, list) else [names]
        if not listed or not all(isinstance(n, str) and n for n in listed):
            raise PolicyError(INVALID_PRINCIPALS)
        if kind == "AWS":
            for name in listed:
                if name != "*" and not _ACCOUNT.match(name) and not PRINCIPAL_ARN.match(name):
                    raise PolicyError(INVALID_PRINCIPALS)
            aws.extend(listed)
        elif kind not in ("Service", "Federated", "CanonicalUser"):
            raise PolicyError(INVALID_PRINCIPALS)
    return Principals(aws=tuple(aws), everyone="*" in aws)


def _strings(raw: dict[str, Any], element: str) -> tuple[str, ...] | None:
    if element not in raw:
        return None
    value = raw[element]
    listed = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v for v in listed):
        raise PolicyError(f"A statement's {element} must be a string or a list of strings.")
    return tuple(listed)


def _conditions(raw: Any) -> tuple[Condition, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise PolicyError("A statement's Condition must be a JSON object.")
    out: list[Condition] = []
    for operator, block in raw.items():
        base, set_op, if_exists = _split_operator(operator)
        if not isinstance(block, dict):
            raise PolicyError(f"Condition operator {operator} must map condition keys to values.")
        for key, value in block.items():
            listed = value if isinstance(value, list) else [value]
            if not all(isinstance(v, str | int | float | bool) for v in listed):
                raise PolicyError(
                    f"Condition {operator} {key}: values must be strings, numbers or booleans."
                )
            out.append(Condition(base, key, tuple(_as_text(v) for v in listed), set_op,
                                 if_exists))
    return tuple(out)


def _as_text(v: str | int | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _split_operator(operator: Any) -> tuple[str, str | None, bool]:
    if not isinstance(operator, str):
        raise PolicyError("A condition operator must be a string.")
    name, set_op = operator, None
    for prefix in ("ForAnyValue:", "ForAllValues:"):
        if name.startswith(prefix):
            set_op, name = prefix[:-1], name[len(prefix):]
    if_exists = name.endswith("IfExists") and name != "IfExists"
    if if_exists:
        name = name[: -len("IfExists")]
    if name not in _OPERATORS or (if_exists and name == "Null"):
        raise PolicyError(f"The policy contains an unsupported condition operator: {operator}.")
    return name, set_op, if_exists


# -- evaluation ----------------------------------------------------------------------------
def evaluate(policy: Policy, ctx: RequestContext) -> Decision:
    """AWS's decision for ``ctx`` under ``policy``: an explicit Deny wins, then Allow."""
    allowed = False
    for st in policy.statements:
        if st.effect == "Allow" and allowed:
            continue  # an Allow is already found; only a Deny can change the answer
        if statement_applies(st, ctx):
            if st.effect == "Deny":
                return Decision.DENY
            allowed = True
    return Decision.ALLOW if allowed else Decision.NO_MATCH


def statement_applies(st: Statement, ctx: RequestContext) -> bool:
    """Whether one statement matches the request (its Effect aside)."""
    if st.principal is not None:
        if not principals_match(st.principal, ctx.principal_arn, ctx.principal_account):
            return False
    elif st.not_principal is not None:
        if principals_match(st.not_principal, ctx.principal_arn, ctx.principal_account):
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
    return all(condition_holds(c, ctx) for c in st.conditions)


def principals_match(principals: Principals, principal_arn: str, account_id: str) -> bool:
    """Whether a Principal element names the caller (see the module docstring)."""
    if principals.everyone:
        return True
    return any(principal_names(p, principal_arn, account_id) for p in principals.aws)


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


# -- operators -----------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def _glob_re(pattern: str, fold: bool) -> re.Pattern[str]:
    body = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL if fold else re.DOTALL)


def _glob(pattern: str, value: str, fold: bool = False) -> bool:
    """IAM's wildcard match: ``*`` any run of characters, ``?`` any one character."""
    if pattern == "*":
        return True
    if "*" not in pattern and "?" not in pattern:
        return pattern.lower() == value.lower() if fold else pattern == value
    return _glob_re(pattern, fold).match(value) is not None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _numeric(compare: Callable[[float, float], bool]) -> Callable[[str, str], bool]:
    def match(value: str, expected: str) -> bool:
        a, b = _number(value), _number(expected)
        return a is not None and b is not None and compare(a, b)

    return match


def _instant(text: str) -> float | None:
    number = _number(text)
    if number is not None:
        return number
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _date(compare: Callable[[float, float], bool]) -> Callable[[str, str], bool]:
    def match(value: str, expected: str) -> bool:
        a, b = _instant(value), _instant(expected)
        return a is not None and b is not None and compare(a, b)

    return match


def _ip(value: str, expected: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(expected, strict=False)
    except ValueError:
        return False


def _arn(value: str, expected: str) -> bool:
    """ArnEquals/ArnLike: each of the six colon-separated parts matched on its own."""
    got, want = value.split(":", 5), expected.split(":", 5)
    return len(got) == len(want) == 6 and all(_glob(w, g) for w, g in zip(want, got, strict=True))


_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda v, e: v == e,
    "StringEqualsIgnoreCase": lambda v, e: v.casefold() == e.casefold(),
    "StringLike": lambda v, e: _glob(e, v),
    "NumericEquals": _numeric(lambda a, b: a == b),
    "NumericLessThan": _numeric(lambda a, b: a < b),
    "NumericLessThanEquals": _numeric(lambda a, b: a <= b),
    "NumericGreaterThan": _numeric(lambda a, b: a > b),
    "NumericGreaterThanEquals": _numeric(lambda a, b: a >= b),
    "DateEquals": _date(lambda a, b: a == b),
    "DateLessThan": _date(lambda a, b: a < b),
    "DateLessThanEquals": _date(lambda a, b: a <= b),
    "DateGreaterThan": _date(lambda a, b: a > b),
    "DateGreaterThanEquals": _date(lambda a, b: a >= b),
    "Bool": lambda v, e: v.lower() == e.lower(),
    "BinaryEquals": lambda v, e: v == e,
    "IpAddress": _ip,
    "ArnEquals": _arn,
    "ArnLike": _arn,
}
# Each negated operator and the positive operator it negates.
_POSITIVE = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "NumericNotEquals": "NumericEquals",
    "DateNotEquals": "DateEquals",
    "NotIpAddress": "IpAddress",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}
_NEGATED = frozenset(_POSITIVE)
_OPERATORS = frozenset(_MATCHERS) | _NEGATED | {"Null"}
