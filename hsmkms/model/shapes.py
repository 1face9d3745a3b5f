"""botocore's KMS model compiled once per process into small immutable :class:`Shape` records,
and what the rest of the service asks of it: the operation names, boto3's method names for
them, and each operation's input and output shapes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from botocore import xform_name
from botocore.loaders import Loader

from hsmkms import errors

SERVICE = "kms"
TARGET_PREFIX = "TrentService"


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


__all__ = [
    "SERVICE",
    "TARGET_PREFIX",
    "Shape",
    "input_shape",
    "operation_for_method",
    "operations",
    "output_shape",
]
