"""AWS's input validation, on boto3's Python values, against an operation's input shape:
type errors are a ``SerializationException``, failed constraints one ``ValidationException``
(worded by :mod:`hsmkms.model.wording`). The values are normalised on the way, as boto3 and
AWS read them; :mod:`hsmkms.model.wire` shares the integer and timestamp conversions.

This runs on every request (docs/benchmarks.md, "JSON parsing and model conversion")."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from hsmkms import errors
from hsmkms.model.shapes import Shape, input_shape
from hsmkms.model.wording import (
    _constraint,
    _element_constraints,
    _join,
    _lower_camel,
    _mismatch,
    _value_at,
    validation_message,
)

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


def validate_input(operation: str, params: dict[str, Any]) -> None:
    """Check ``params`` (boto3's Python values) against the input shape of ``operation``.

    Raises ``SerializationException`` for a value of the wrong type (AWS's JSON front end
    rejects those before validating), else one ``ValidationException`` naming every failed
    constraint with AWS's wording. Unknown members are ignored and dropped, as AWS's JSON
    protocol ignores unknown fields.

    ``params`` is normalised in place the way boto3 and AWS would read it: ``None`` values are
    absent, a ``str`` for a blob is its UTF-8 bytes and a file-like object its contents, a
    float for an integer is truncated (AWS truncates JSON numbers), a timestamp becomes an
    aware UTC ``datetime``. Nested containers are replaced by normalised copies, never
    mutated, so the caller's own objects are left alone.
    """
    shape = input_shape(operation)
    if shape is None:
        params.clear()
        return
    failures: list[str] = []
    normal = _check_structure(shape, params, "", failures)
    params.clear()
    params.update(normal)
    if failures:
        raise errors.ValidationException(validation_message(failures))


def _check_structure(
    shape: Shape, value: Mapping[str, Any], path: str, failures: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, member in shape.members.items():
        member_path = _join(path, _lower_camel(name))
        raw = value.get(name)
        if raw is None:
            if name in shape.required:
                failures.append(
                    f"{_value_at(member, None, member_path)} failed to satisfy constraint: "
                    "Member must not be null"
                )
            continue
        out[name] = _check(member, raw, member_path, failures)
    return out


def _check(shape: Shape, value: Any, path: str, failures: list[str]) -> Any:
    """Type-check and normalise one value; append its constraint failures; return it."""
    kind = shape.type
    if kind == "structure":
        if not isinstance(value, Mapping):
            raise _mismatch(shape, value)
        return _check_structure(shape, value, path, failures)
    if kind == "list":
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise _mismatch(shape, value)
        assert shape.member is not None
        element = shape.member
        items: list[Any] = []
        element_failed = False
        for i, item in enumerate(v for v in value if v is not None):
            # A list of structures reports inside each element (AWS: 'tags.1.member.tagKey');
            # a list of scalars reports once, at the list, with all the element's constraints.
            if element.type in ("structure", "list", "map"):
                items.append(_check(element, item, f"{path}.{i + 1}.member", failures))
            else:
                scratch: list[str] = []
                items.append(_check(element, item, path, scratch))
                element_failed = element_failed or bool(scratch)
        _check_size(shape, items, len(items), path, failures)
        if element_failed:
            failures.append(
                f"{_value_at(shape, items, path)} failed to satisfy constraint: "
                f"Member must satisfy constraint: {_element_constraints(element)}"
            )
        return items
    if kind == "map":
        if not isinstance(value, Mapping):
            raise _mismatch(shape, value)
        assert shape.key is not None and shape.value is not None
        mapping: dict[Any, Any] = {}
        keys_failed = values_failed = False
        for k, v in value.items():
            if v is None:
                continue
            scratch = []
            k = _check(shape.key, k, path, scratch)
            keys_failed = keys_failed or bool(scratch)
            scratch = []
            mapping[k] = _check(shape.value, v, path, scratch)
            values_failed = values_failed or bool(scratch)
        _check_size(shape, mapping, len(mapping), path, failures)
        for failed, what, element in (
            (keys_failed, "Map keys", shape.key),
            (values_failed, "Map value", shape.value),
        ):
            if failed:
                failures.append(
                    f"{_value_at(shape, mapping, path)} failed to satisfy constraint: "
                    f"{what} must satisfy constraint: {_element_constraints(element)}"
                )
        return mapping
    if kind == "string":
        if isinstance(value, Enum):
            value = value.value
        if not isinstance(value, str):
            raise _mismatch(shape, value)
        if not value.isascii() and not _is_text(value):
            raise errors.SerializationException(
                "String value is not valid Unicode: it holds a lone surrogate"
            )
        if shape.enum and value not in shape.enum_set:
            failures.append(
                f"{_value_at(shape, value, path)} failed to satisfy constraint: "
                f"{_constraint(shape, 'enum')}"
            )
        if shape.regex is not None and not shape.regex.fullmatch(value):
            failures.append(
                f"{_value_at(shape, value, path)} failed to satisfy constraint: "
                f"{_constraint(shape, 'pattern')}"
            )
        _check_size(shape, value, len(value), path, failures)
        return value
    if kind == "blob":
        value = _as_bytes(shape, value)
        _check_size(shape, value, len(value), path, failures)
        return value
    if kind in ("integer", "long"):
        value = _as_int(shape, value)
        _check_range(shape, value, path, failures)
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _mismatch(shape, value)
        _check_range(shape, value, path, failures)
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _mismatch(shape, value)
        return value
    if kind == "timestamp":
        return _as_datetime(shape, value)
    return value


def _is_text(value: str) -> bool:
    """Whether ``value`` is Unicode text. JSON's ``"\\ud800"`` escape, and the CESU-8 bytes
    ``json.loads`` lets through, give Python strings with lone surrogates, which no UTF-8
    encoder (the store's, the AAD's, a log's) accepts: found by the fuzz test as a 500."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_size(shape: Shape, value: Any, size: int, path: str, failures: list[str]) -> None:
    if shape.max is not None and size > shape.max:
        failures.append(
            f"{_value_at(shape, value, path)} failed to satisfy constraint: "
            f"{_constraint(shape, 'max')}"
        )
    if shape.min is not None and size < shape.min:
        failures.append(
            f"{_value_at(shape, value, path)} failed to satisfy constraint: "
            f"{_constraint(shape, 'min')}"
        )


def _check_range(shape: Shape, value: int | float, path: str, failures: list[str]) -> None:
    if shape.max is not None and value > shape.max:
        failures.append(
            f"{_value_at(shape, value, path)} failed to satisfy constraint: "
            f"{_constraint(shape, 'max')}"
        )
    if shape.min is not None and value < shape.min:
        failures.append(
            f"{_value_at(shape, value, path)} failed to satisfy constraint: "
            f"{_constraint(shape, 'min')}"
        )


def _as_bytes(shape: Shape, value: Any) -> bytes:
    """boto3 accepts bytes, bytearray, str (UTF-8 encoded) and readable objects for a blob."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    read = getattr(value, "read", None)
    if callable(read):
        data = read()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    raise _mismatch(shape, value)


def _as_int(shape: Shape, value: Any) -> int:
    """JSON numbers into an Integer: fractions truncate (as AWS does), out of range refused."""
    if isinstance(value, bool):
        raise _mismatch(shape, value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _mismatch(shape, value)
        value = int(value)
    if not isinstance(value, int):
        raise _mismatch(shape, value)
    low, high = _INT32 if shape.type == "integer" else _INT64
    if not low <= value <= high:
        raise _mismatch(shape, value)
    return value


def _as_datetime(shape: Shape, value: Any) -> datetime:
    """boto3 accepts a datetime, epoch seconds or an ISO 8601 string; naive means UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _mismatch(shape, value)
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise _mismatch(shape, value) from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _mismatch(shape, value) from None
        return _as_datetime(shape, parsed)
    raise _mismatch(shape, value)
