"""Test-only stand-in for ``hsmkms.service.Service``, for the wire tests while the operation
layer is not there yet.

tests/server.py puts this directory on PYTHONPATH of the server it starts, with
HSMKMS_TEST_STUB=1, only when the real operation layer cannot run yet (see
``server.real_service_available``); Python imports this module at start-up in the server and
in each of its uvicorn workers. Once the real layer runs, it is never used.

The stub answers GenerateRandom and ListKeys; every other operation is
UnsupportedOperationException, as the real layer answers for what it does not implement.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any


def _install() -> None:
    if os.environ.get("HSMKMS_TEST_STUB") != "1":
        return

    from hsmkms import errors
    from hsmkms.kms import Caller

    class StubService:
        def __init__(self, settings: Any) -> None:
            self.settings = settings

        @classmethod
        def open(cls, settings: Any) -> StubService:
            return cls(settings)

        def dispatch(self, operation: str, params: dict[str, Any], caller: Caller) -> dict:
            if operation == "GenerateRandom":
                return {"Plaintext": os.urandom(params.get("NumberOfBytes", 32))}
            if operation == "ListKeys":
                return {"Keys": [], "Truncated": False}
            raise errors.UnsupportedOperationException(
                f"{operation} is not supported by the test stub"
            )

        def health(self) -> dict[str, Any]:
            return {"ok": True, "token": {"label": "stub", "ok": True}}

        def default_caller(self) -> Caller:
            return Caller("000000000000", "arn:aws:iam::000000000000:root")

        def close(self) -> None:
            pass

    module = types.ModuleType("hsmkms.service")
    module.Service = StubService  # type: ignore[attr-defined]
    sys.modules["hsmkms.service"] = module


_install()
