"""A key policy document, parsed and checked once into immutable records (:class:`Policy`,
:class:`Statement`, :class:`Principals`, :class:`Condition`); a document that is not valid is a
:class:`PolicyError` whose message says why."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hsmkms.service.policy_eval.condition_keys import unknowable
from hsmkms.service.policy_eval.operators import _NEGATED, _OPERATORS

VERSIONS = ("2012-10-17", "2008-10-17")
INVALID_PRINCIPALS = "Policy contains a statement with one or more invalid principals."

_STATEMENT_ELEMENTS = frozenset(
    {
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
)
_POLICY_ELEMENTS = frozenset({"Version", "Id", "Statement"})
_ACCOUNT = re.compile(r"^\d{12}$")
PRINCIPAL_ARN = re.compile(
    r"^arn:aws[a-z-]*:(iam|sts)::(\d{12}):"
    r"(root|user/.+|role/.+|assumed-role/.+/.+|federated-user/.+)$"
)


class PolicyError(ValueError):
    """A policy document that is not valid: the message says why (AWS's words where known)."""


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
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python recurses
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


def check_new(policy: Policy) -> None:
    """What CreateKey and PutKeyPolicy refuse beyond :func:`parse` (:class:`PolicyError`).

    Kept out of :func:`parse`, which also reads stored policies: a policy stored before these
    rules still parses (a key must never lock its administrators out), and the evaluator
    reads what these rules refuse so that it can only refuse more, never allow more."""
    for st in policy.statements:
        if st.effect == "Allow" and st.not_principal is not None:
            raise PolicyError(
                "A statement with NotPrincipal must have Effect Deny: AWS KMS does not support "
                "NotPrincipal with Allow, which would allow every principal but those named."
            )
        for c in st.conditions:
            if unknowable(c.key):
                raise PolicyError(
                    f"The key policy uses the condition key {c.key}, which hsmkms cannot "
                    "evaluate (it has no IAM principal tags, no AWS Organizations, no such key): "
                    "remove the condition or use a key from docs/authorization.md."
                )


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
    for a, b in (
        ("Principal", "NotPrincipal"),
        ("Action", "NotAction"),
        ("Resource", "NotResource"),
    ):
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
            out.append(Condition(base, key, tuple(_as_text(v) for v in listed), set_op, if_exists))
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
            set_op, name = prefix[:-1], name[len(prefix) :]
    if_exists = name.endswith("IfExists") and name != "IfExists"
    if if_exists:
        name = name[: -len("IfExists")]
    if name not in _OPERATORS or (if_exists and name == "Null"):
        raise PolicyError(f"The policy contains an unsupported condition operator: {operator}.")
    return name, set_op, if_exists
