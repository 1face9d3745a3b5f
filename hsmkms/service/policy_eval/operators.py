"""The condition operators of IAM's policy language, as AWS documents them ("IAM JSON policy
elements: Condition operators"): string, numeric, date, Boolean, binary, IP address and ARN
comparisons, their negations, and the wildcard match (``*``, ``?``) that StringLike, ArnLike
and the Action and Resource elements share."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache


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
