"""The wire: AWS JSON 1.1 bodies <-> boto3's Python values, walking an operation's shapes
(blobs base64, timestamps epoch seconds, enums their AWS string)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from hsmkms import errors
from hsmkms.model.shapes import Shape, input_shape, output_shape
from hsmkms.model.validation import _as_datetime, _as_int
from hsmkms.model.wording import _LIST_FOUND, _join, _lower_camel, _mismatch

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _b64decode(text: str, path: str) -> bytes:
    """Strict standard base64 with padding, as AWS's JSON front end decodes blobs.

    The reasons are Coral's; the value itself is not echoed (it may be a secret).
    """
    data = text.encode("ascii", "replace")
    if not len(data) % 4:
        # The common case in C: validate=True accepts exactly the alphabet with at most two
        # trailing "=" (what the checks below spell out, one character at a time, to name
        # the offending one). A 3,309-byte ML-DSA signature took 100 us in the loop, 3 here.
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            pass
    if len(data) % 4:
        reason = f"Base64 encoded length is expected a multiple of 4 bytes but found: {len(data)}"
    else:
        body = data.rstrip(b"=")
        if len(data) - len(body) > 2 or any(c not in _B64_ALPHABET for c in body):
            bad = next((chr(c) for c in body if c not in _B64_ALPHABET), "=")
            reason = f"Invalid Base64 character: '{bad}'"
        else:
            try:
                return base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                reason = "Invalid last non-pad Base64 character"
    raise errors.SerializationException(
        f"Value at '{path}' can not be converted to a Blob: {reason}"
    )


def from_wire(operation: str, obj: Any) -> dict[str, Any]:
    """An AWS JSON 1.1 request body (parsed JSON) -> boto3's Python params.

    Blobs are base64-decoded anywhere in the input shape tree (invalid base64 is a
    ``SerializationException``), epoch-second timestamps become ``datetime``, JSON ``null`` is
    absent, unknown members are dropped. A JSON value of the wrong type raises the
    ``SerializationException`` AWS answers; everything else is left for :func:`validate_input`.
    """
    shape = input_shape(operation)
    if not isinstance(obj, dict):
        # Coral: a top-level array names itself; any other scalar gets no message at all.
        raise errors.SerializationException(_LIST_FOUND if isinstance(obj, list) else "")
    if shape is None:
        return {}
    return _from_wire_structure(shape, obj, "")


def _from_wire_structure(shape: Shape, obj: dict[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in obj.items():
        member = shape.members.get(name)
        if member is None or value is None:
            continue
        out[name] = _from_wire(member, value, _join(path, _lower_camel(name)))
    return out


def _from_wire(shape: Shape, value: Any, path: str) -> Any:
    kind = shape.type
    if kind == "blob":
        if isinstance(value, str):
            return _b64decode(value, path)
        raise _mismatch(shape, value)
    if kind == "timestamp":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _as_datetime(shape, value)
        raise _mismatch(shape, value)
    if kind == "structure":
        if not isinstance(value, dict):
            raise _mismatch(shape, value)
        return _from_wire_structure(shape, value, path)
    if kind == "list":
        if not isinstance(value, list):
            raise _mismatch(shape, value)
        assert shape.member is not None
        return [
            _from_wire(shape.member, v, f"{path}.{i + 1}.member")
            for i, v in enumerate(x for x in value if x is not None)
        ]
    if kind == "map":
        if not isinstance(value, dict):
            raise _mismatch(shape, value)
        assert shape.value is not None
        return {k: _from_wire(shape.value, v, path) for k, v in value.items() if v is not None}
    if kind == "string" and not isinstance(value, str):
        raise _mismatch(shape, value)
    if kind == "boolean" and not isinstance(value, bool):
        raise _mismatch(shape, value)
    if kind in ("integer", "long"):
        return _as_int(shape, value)
    return value


def to_wire(operation: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """boto3's Python result -> a JSON-able AWS JSON 1.1 response body, walking the output shape.

    Blobs become base64 text, ``datetime`` epoch seconds (a float, as AWS sends), enums their
    value; ``None`` and members the output shape does not have are left out (the contract is
    the model, not whatever the operation layer returned).
    """
    shape = output_shape(operation)
    if shape is None:
        return {}
    return _to_wire_structure(shape, result)


def _to_wire_structure(shape: Shape, obj: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in obj.items():
        member = shape.members.get(name)
        if member is None or value is None:
            continue
        out[name] = _to_wire(member, value)
    return out


def _to_wire(shape: Shape, value: Any) -> Any:
    kind = shape.type
    if kind == "blob":
        if isinstance(value, str):
            value = value.encode("utf-8")
        return base64.b64encode(value).decode("ascii")
    if kind == "timestamp":
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            return (value - _EPOCH).total_seconds()
        return value
    if kind == "structure":
        return _to_wire_structure(shape, value)
    if kind == "list":
        assert shape.member is not None
        return [_to_wire(shape.member, v) for v in value if v is not None]
    if kind == "map":
        assert shape.value is not None
        return {_plain(k): _to_wire(shape.value, v) for k, v in value.items() if v is not None}
    return _plain(value)


def _plain(value: Any) -> Any:
    """Enum members (``KeyState.ENABLED``) as their AWS string."""
    return value.value if isinstance(value, Enum) else value
