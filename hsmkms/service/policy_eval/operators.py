"""The condition operators of IAM's policy language, as AWS documents them ("IAM JSON policy
elements: Condition operators"): string, numeric, date, Boolean, binary, IP address and ARN
comparisons, their negations, and the wildcard match (``*``, ``?``) that StringLike, ArnLike
and the Action and Resource elements share."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from hsmkms.service.policy_eval.budget import spend


@dataclass(frozen=True)
class _Segment:
    """A run of a wildcard pattern between two ``*``: literals and ``?`` (one character each),
    so of fixed length. ``chunks`` are its literals with their offsets; ``anchor`` is the
    longest, which :meth:`str.find` looks for first."""

    length: int
    chunks: tuple[tuple[int, str], ...]
    anchor: int

    def at(self, value: str, i: int) -> bool:
        """Whether the segment matches ``value`` from position ``i``."""
        return i + self.length <= len(value) and all(
            value.startswith(lit, i + off) for off, lit in self.chunks
        )

    def find(self, value: str, start: int, end: int) -> int:
        """The leftmost ``i`` in ``[start, end - length]`` where the segment matches, or -1."""
        last = end - self.length
        if start > last:
            return -1
        if not self.chunks:  # only "?": any position will do
            return start
        off, lit = self.chunks[self.anchor]
        i = start
        while i <= last:
            spend(1 + len(self.chunks))
            j = value.find(lit, i + off, last + off + len(lit))
            if j < 0:
                return -1
            i = j - off
            if self.at(value, i):
                return i
            i += 1
        return -1


def _segment(text: str) -> _Segment:
    chunks: list[tuple[int, str]] = []  # the literals between the "?", with their offsets
    offset = 0
    for literal in text.split("?"):
        if literal:
            chunks.append((offset, literal))
        offset += len(literal) + 1
    anchor = max(range(len(chunks)), key=lambda k: len(chunks[k][1]), default=0)
    return _Segment(len(text), tuple(chunks), anchor)


@lru_cache(maxsize=4096)
def _segments(pattern: str) -> tuple[_Segment, ...]:
    return tuple(_segment(part) for part in pattern.split("*"))


def _glob(pattern: str, value: str, fold: bool = False) -> bool:
    """IAM's wildcard match: ``*`` any run of characters, ``?`` any one character.

    Linear, without regular expressions or recursion: the pattern is cut at each ``*`` into
    fixed-length segments; the first must match at the start, the last at the end, and each
    one between at its leftmost place after the one before (the leftmost place leaves the
    most room to the rest, so no other choice can succeed where it fails). Each step is
    charged to the evaluation's :mod:`~hsmkms.service.policy_eval.budget`."""
    if pattern == "*":
        return True
    if fold:
        pattern, value = pattern.lower(), value.lower()
    if "*" not in pattern and "?" not in pattern:
        return pattern == value
    segments = _segments(pattern)
    spend(len(segments))
    first, last = segments[0], segments[-1]
    if len(segments) == 1:
        return first.length == len(value) and first.at(value, 0)
    end = len(value) - last.length
    if end < first.length or not first.at(value, 0) or not last.at(value, end):
        return False
    pos = first.length
    for segment in segments[1:-1]:
        found = segment.find(value, pos, end)
        if found < 0:
            return False
        pos = found + segment.length
    return True


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
