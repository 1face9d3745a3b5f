"""The library face: ``hsmkms.KMS``, with boto3's method names, parameters and response shapes.

    kms = hsmkms.KMS(home="var")                       # the embedded default
    kms.generate_data_key_pair(KeyId="alias/app", KeyPairSpec="ECC_NIST_P256")

Every method is ``call(<Operation>, kwargs)``: input is validated against botocore's KMS
service model (so the library and the HTTP server answer the same ValidationException), then
handed to the operation layer. Errors are :class:`hsmkms.errors.KMSError`, a botocore
``ClientError``, so boto3 code catches them unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hsmkms import errors, model
from hsmkms.config import Settings


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the verified principal and its account."""

    account_id: str
    principal_arn: str
    access_key_id: str = ""
    source_ip: str = ""


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class KMS:
    """One process's KMS: a token session, a store and the operation layer behind them."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        caller: Caller | None = None,
        preload_keys: bool = True,
        **overrides: Any,
    ) -> None:
        from hsmkms.service import Service

        self.settings = settings or Settings.load(**overrides)
        self.service = Service.open(self.settings, preload_keys=preload_keys)
        self.caller = caller or self.service.default_caller()

    @classmethod
    def from_service(cls, service: Any, caller: Caller | None = None) -> KMS:
        """A KMS over an already open operation layer (shares its token and store)."""
        kms = object.__new__(cls)
        kms.settings = service.settings
        kms.service = service
        kms.caller = caller or service.default_caller()
        return kms

    # -- generic entry, used by the wire layer ------------------------------------------
    def call(self, operation: str, params: dict[str, Any], caller: Caller | None = None) -> dict:
        """Run one KMS operation; raise :class:`KMSError` named as AWS names it."""
        try:
            model.validate_input(operation, params)
            return self.service.dispatch(operation, params, caller or self.caller)
        except errors.KMSError as exc:
            if not exc.operation_name or exc.operation_name == "operation":
                raise exc.with_operation(operation) from None
            raise

    def try_quick(
        self, operation: str, params: dict[str, Any], caller: Caller | None = None
    ) -> dict | None:
        """:meth:`call` when ``operation`` is quick enough for the server's event loop
        (:mod:`hsmkms.service.quick`), else None: then :meth:`call` it on a thread."""
        from hsmkms.service import quick

        runs_quickly = getattr(self.service, "runs_quickly", None)  # stand-ins may lack it
        if runs_quickly is None or not runs_quickly(operation, params):
            return None
        no_wait = quick.NO_WAIT.set(True)
        try:
            return self.call(operation, params, caller)
        except quick.WouldBlock:
            return None
        finally:
            quick.NO_WAIT.reset(no_wait)

    def keypair_pool_stock(self) -> dict[str, int]:
        """Pre-generated pairs in stock in this process, by spec (empty: no pool)."""
        pool = getattr(self.service, "pool", None)
        return dict(pool.stock()) if pool is not None and pool.size else {}

    def health(self) -> dict[str, Any]:
        return self.service.health()

    def close(self) -> None:
        self.service.close()

    def as_caller(self, caller: Caller) -> KMS:
        """A view of this KMS that acts as ``caller`` (shares the token and store)."""
        return KMS.from_service(self.service, caller)

    def __enter__(self) -> KMS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        operation = model.operation_for_method(name)
        if operation is None:
            raise AttributeError(name)

        def method(**kwargs: Any) -> dict:
            return self.call(operation, kwargs)

        method.__name__ = name
        return method

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {_snake(op) for op in model.operations()})
