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

The package, one idea a module: :mod:`~hsmkms.model.shapes` (the compiled model and its
operation names), :mod:`~hsmkms.model.validation` (the checks, on every request),
:mod:`~hsmkms.model.wording` (AWS's messages), :mod:`~hsmkms.model.wire` (the JSON 1.1 body).
"""

from __future__ import annotations

from hsmkms.model.shapes import (
    SERVICE,
    TARGET_PREFIX,
    Shape,
    input_shape,
    operation_for_method,
    operations,
    output_shape,
)
from hsmkms.model.validation import validate_input
from hsmkms.model.wire import from_wire, to_wire
from hsmkms.model.wording import validation_message


def key_use_operations() -> frozenset[str]:
    """The successful cryptographic operations GetKeyLastUsage counts: the enum of
    KeyLastUsage.Operation in botocore's model."""
    shape = output_shape("GetKeyLastUsage")
    assert shape is not None and shape.members is not None
    last = shape.members["KeyLastUsage"]
    assert last.members is not None
    return last.members["Operation"].enum_set or frozenset()


__all__ = [
    "SERVICE",
    "TARGET_PREFIX",
    "Shape",
    "from_wire",
    "input_shape",
    "key_use_operations",
    "operation_for_method",
    "operations",
    "output_shape",
    "to_wire",
    "validate_input",
    "validation_message",
]
