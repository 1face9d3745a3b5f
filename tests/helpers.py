"""Assertions shared by the tests of every face."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from botocore.exceptions import ClientError

KEY_PAIR_SPECS = [
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "ECC_NIST_EDWARDS25519",
]


@contextmanager
def raises(code: str, match: str | None = None) -> Iterator[pytest.ExceptionInfo[ClientError]]:
    """Expect an AWS error named ``code`` (as boto3 reports it), whatever the face."""
    with pytest.raises(ClientError) as info:
        yield info
    error = info.value.response["Error"]
    assert error["Code"] == code, f"expected {code}, got {error['Code']}: {error.get('Message')}"
    if match is not None:
        assert match in error.get("Message", ""), error.get("Message")
