"""AWS's wording of a refused input: the member path (``keyPairSpec``, ``tags.1.member``),
the value as Java prints it, each constraint's sentence, and the SerializationException
Coral answers for a JSON value of the wrong type."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from hsmkms import errors
from hsmkms.model.shapes import Shape

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


def _lower_camel(member: str) -> str:
    """AWS's member path segment: the first letter lowered, nothing else (``sAMLOptions``)."""
    return member[:1].lower() + member[1:]


def _join(prefix: str, segment: str) -> str:
    return f"{prefix}.{segment}" if prefix else segment


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
