"""The API contract: botocore's bundled KMS service model (``kms/2014-11-01/service-2.json``).

Everything the wire and the library face need from the model lives here, compiled once per
process from botocore's JSON into small immutable :class:`Shape` records:

* :func:`operations`, :func:`operation_for_method` — the operation names, and boto3's method
  names for them (``generate_data_key_pair`` -> ``GenerateDataKeyPair``).
* :func:`validate_input` — AWS's input validation. Type errors are a ``SerializationException``
  worded as AWS's JSON 1.1 front end (Coral) words them (``STRING_VALUE can not be converted
  to an Integer``); constraint errors are one ``ValidationException`` listing every failure::

      1 validation error detected: Value 'X' at 'keyPairSpec' failed to satisfy constraint:
      Member must satisfy enum value set: [RSA_2048, ...]

* :func:`from_wire` / :func:`to_wire` — AWS JSON 1.1 bodies <-> boto3's Python values (blobs
  base64, timestamps epoch seconds).

Where AWS's behaviour is not observable from outside we chose, and say so:

* Several failures are listed in the model's member order (AWS's order follows a Java hash
  order we cannot reproduce); within one member, the pattern is reported before the length,
  as AWS does.
* Enum value sets are printed in the model's order (AWS prints them in a Java hash order).
* Blob values and members the model marks ``sensitive`` are never echoed: AWS writes
  ``Value at 'plaintext' ...`` for them, and so do we.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from functools import cache
from typing import Any

from botocore import xform_name
from botocore.loaders import Loader

from hsmkms import errors

SERVICE = "kms"
TARGET_PREFIX = "TrentService"

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Coral's type-mismatch messages (observed on AWS JSON 1.1 services: a JSON list or object
# where a scalar is expected, a scalar where a list, map or structure is expected).
_LIST_FOUND = "Start of list found where not expected"
_MAP_FOUND = "Start of structure or map found where not expected."
# How Coral names each model type in "<JSON kind> can not be converted to <type>".
_TYPE_NOUN = {
    "string": "a String",
    "integer": "an Integer",
    "long": "a Long",
    "boolean": "a Boolean",
    "blob": "a Blob",
    "timestamp": "a Timestamp",
    "float": "a Float",
    "double": "a Double",
}


# -- the compiled model ----------------------------------------------------------------------
@dataclass(eq=False)
class Shape:
    """One shape of the model with the constraints validation needs.

    Mutable only while the model is compiled (shapes may refer to themselves); treat as frozen.
    """

    name: str
    type: str
    min: int | float | None = None
    max: int | float | None = None
    pattern: str | None = None
    regex: re.Pattern[str] | None = None
    enum: tuple[str, ...] = ()
    enum_set: frozenset[str] = frozenset()
    sensitive: bool = False
    # structure
    members: dict[str, Shape] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    # list
    member: Shape | None = None
    # map
    key: Shape | None = None
    value: Shape | None = None


@dataclass(frozen=True)
class _Model:
    operations: frozenset[str]
    inputs: dict[str, Shape | None]
    outputs: dict[str, Shape | None]
    methods: dict[str, str]


def _java_regex(pattern: str) -> re.Pattern[str] | None:
    """Compile a model pattern (Java syntax) for ``fullmatch``, as Java's ``matches()`` does.

    Java's ``\\w``, ``\\d`` and ``\\s`` are ASCII unless asked otherwise: hence ``re.ASCII``.
    A pattern Python cannot read is skipped rather than guessed at.
    """
    try:
        return re.compile(pattern, re.ASCII)
    except re.error:
        return None


@cache
def _model() -> _Model:
    """Load and compile botocore's KMS model once per process."""
    raw = Loader().load_service_model(SERVICE, "service-2")
    raw_shapes: dict[str, dict[str, Any]] = raw["shapes"]
    compiled: dict[str, Shape] = {}

    def shape(name: str) -> Shape:
        if name in compiled:
            return compiled[name]
        spec = raw_shapes[name]
        out = Shape(name=name, type=spec["type"])
        compiled[name] = out  # registered before its children: recursive shapes terminate
        out.min = spec.get("min")
        out.max = spec.get("max")
        out.sensitive = bool(spec.get("sensitive"))
        if "pattern" in spec:
            out.pattern = spec["pattern"]
            out.regex = _java_regex(spec["pattern"])
        if "enum" in spec:
            out.enum = tuple(spec["enum"])
            out.enum_set = frozenset(out.enum)
        if out.type == "structure":
            out.members = {m: shape(ref["shape"]) for m, ref in spec.get("members", {}).items()}
            out.required = tuple(spec.get("required", ()))
        elif out.type == "list":
            out.member = shape(spec["member"]["shape"])
        elif out.type == "map":
            out.key = shape(spec["key"]["shape"])
            out.value = shape(spec["value"]["shape"])
        return out

    inputs: dict[str, Shape | None] = {}
    outputs: dict[str, Shape | None] = {}
    for name, op in raw["operations"].items():
        inputs[name] = shape(op["input"]["shape"]) if "input" in op else None
        outputs[name] = shape(op["output"]["shape"]) if "output" in op else None
    names = frozenset(raw["operations"])
    return _Model(
        operations=names,
        inputs=inputs,
        outputs=outputs,
        methods={xform_name(name): name for name in names},
    )


def operations() -> frozenset[str]:
    """Every operation of the KMS API, by AWS's name (``GenerateDataKeyPair``)."""
    return _model().operations


def operation_for_method(snake_name: str) -> str | None:
    """boto3's method name -> its operation (``generate_data_key_pair`` -> ``GenerateDataKeyPair``).

    None if boto3 has no such KMS method."""
    return _model().methods.get(snake_name)


def input_shape(operation: str) -> Shape | None:
    """The input structure of ``operation`` (UnknownOperationException if there is none such)."""
    model = _model()
    if operation not in model.operations:
        raise errors.UnknownOperationException("")
    return model.inputs[operation]


def output_shape(operation: str) -> Shape | None:
    model = _model()
    if operation not in model.operations:
        raise errors.UnknownOperationException("")
    return model.outputs[operation]


# -- AWS's wording -----------------------------------------------------------------------------
def _lower_camel(member: str) -> str:
    """AWS's member path segment: the first letter lowered, nothing else (``sAMLOptions``)."""
    return member[:1].lower() + member[1:]


def _java_str(value: Any) -> str:
    """``value`` as Java's ``toString`` prints it, which is how AWS quotes values."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "java.nio.HeapByteBuffer"  # never printed for a member; only inside a list
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_java_str(k)}={_java_str(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_java_str(v) for v in value) + "]"
    return str(value)


def _constraint(shape: Shape, kind: str) -> str:
    """The text after ``failed to satisfy constraint: `` for one constraint of ``shape``."""
    if kind == "enum":
        return f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"
    if kind == "pattern":
        return f"Member must satisfy regular expression pattern: {shape.pattern}"
    noun = "value" if shape.type in ("integer", "long", "float", "double") else "length"
    if kind == "max":
        return f"Member must have {noun} less than or equal to {_java_number(shape.max)}"
    return f"Member must have {noun} greater than or equal to {_java_number(shape.min)}"


def _java_number(n: int | float | None) -> str:
    if isinstance(n, float) and n.is_integer():
        return str(int(n))
    return str(n)


def _element_constraints(shape: Shape) -> str:
    """AWS lists every constraint of a list element (or map key/value), failing or not:
    ``[Member must have length less than or equal to 8192, Member must have length greater
    than or equal to 1]``."""
    parts: list[str] = []
    if shape.max is not None:
        parts.append(_constraint(shape, "max"))
    if shape.min is not None:
        parts.append(_constraint(shape, "min"))
    if shape.enum:
        parts.append(_constraint(shape, "enum"))
    if shape.pattern is not None:
        parts.append(_constraint(shape, "pattern"))
    return "[" + ", ".join(parts) + "]"


def _value_at(shape: Shape, value: Any, path: str) -> str:
    """``Value 'X' at 'path'``; ``Value null at``; ``Value at`` for blobs and sensitive members."""
    if shape.sensitive or (value is not None and shape.type == "blob"):
        return f"Value at '{path}'"
    if value is None:
        return f"Value null at '{path}'"
    return f"Value '{_java_str(value)}' at '{path}'"


def validation_message(failures: list[str]) -> str:
    """``1 validation error detected: A`` / ``2 validation errors detected: A; B``."""
    n = len(failures)
    noun = "error" if n == 1 else "errors"
    return f"{n} validation {noun} detected: " + "; ".join(failures)


def _json_kind(value: Any) -> str:
    """The JSON token Coral names in a type-mismatch message."""
    if isinstance(value, bool):
        return "TRUE_VALUE" if value else "FALSE_VALUE"
    if isinstance(value, (int, float)):
        return "NUMBER_VALUE"
    if isinstance(value, str):
        return "STRING_VALUE"
    return f"Value of type {type(value).__name__}"


def _mismatch(shape: Shape, value: Any) -> errors.KMSError:
    """The SerializationException AWS answers when a JSON value has the wrong type."""
    if isinstance(value, (list, tuple)):
        return errors.SerializationException(_LIST_FOUND)
    if isinstance(value, Mapping):
        return errors.SerializationException(_MAP_FOUND)
    if shape.type == "list":
        return errors.SerializationException("Expected list or null")
    if shape.type == "map":
        return errors.SerializationException("Expected map or null")
    if shape.type == "structure":
        return errors.SerializationException("Expected null")
    noun = _TYPE_NOUN.get(shape.type, f"a {shape.type}")
    return errors.SerializationException(f"{_json_kind(value)} can not be converted to {noun}")


# -- validation ---------------------------------------------------------------------------------
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


def _join(prefix: str, segment: str) -> str:
    return f"{prefix}.{segment}" if prefix else segment


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


# -- the wire ---------------------------------------------------------------------------------
_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _b64decode(text: str, path: str) -> bytes:
    """Strict standard base64 with padding, as AWS's JSON front end decodes blobs.

    The reasons are Coral's; the value itself is not echoed (it may be a secret).
    """
    data = text.encode("ascii", "replace")
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


__all__ = [
    "SERVICE",
    "TARGET_PREFIX",
    "Shape",
    "from_wire",
    "input_shape",
    "operation_for_method",
    "operations",
    "output_shape",
    "to_wire",
    "validate_input",
    "validation_message",
]
