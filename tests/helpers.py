"""Assertions shared by the tests of every face."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from botocore.exceptions import ClientError

from hsmkms.specs import SUPPORTED_PAIR_SPECS

# Every DataKeyPairSpec hsmkms serves, by name (the one table is hsmkms/specs.py).
KEY_PAIR_SPECS = [spec.value for spec in SUPPORTED_PAIR_SPECS]


@contextmanager
def raises(code: str, match: str | None = None) -> Iterator[pytest.ExceptionInfo[ClientError]]:
    """Expect an AWS error named ``code`` (as boto3 reports it), whatever the face."""
    with pytest.raises(ClientError) as info:
        yield info
    error = info.value.response["Error"]
    assert error["Code"] == code, f"expected {code}, got {error['Code']}: {error.get('Message')}"
    if match is not None:
        assert match in error.get("Message", ""), error.get("Message")
