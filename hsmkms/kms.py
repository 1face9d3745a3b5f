"""The library face: ``hsmkms.KMS``, with boto3's method names, parameters and response shapes.

    kms = hsmkms.KMS(home="var")                       # the embedded default
    kms.generate_data_key_pair(KeyId="alias/app", KeyPairSpec="ECC_NIST_P256")

Every method is ``call(<Operation>, kwargs)``: input is validated against botocore's KMS
service model (so the library and the HTTP server answer the same ValidationException), then
handed to the operation layer. Errors are :class:`hsmkms.errors.KMSError`, a botocore
``ClientError``, so boto3 code catches them unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING, Any, Protocol

from hsmkms import errors, model
from hsmkms.config import Settings
from hsmkms.identity import Caller

if TYPE_CHECKING:
    from hsmkms.service.xks import XksProxy

__all__ = ["KMS", "Caller", "OperationLayer"]


class OperationLayer(Protocol):
    """What the library face needs of :class:`hsmkms.service.Service` (tests stand in)."""

    settings: Settings

    def dispatch(self, operation: str, params: dict[str, Any], caller: Caller) -> dict: ...

    def runs_quickly(self, operation: str, params: dict[str, Any]) -> bool: ...

    def pool_stock(self) -> dict[str, int]: ...

    def health(self) -> dict[str, Any]: ...

    def start_scheduler(self) -> object: ...

    def close(self) -> None: ...


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
        seed: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> None:
        """``seed``: a seed file (docs/seeding.md) applied now, before the first call; a bad
        one raises ValidationException naming the entry, and nothing of it stays behind. (The
        ``seed`` setting is the server's: ``hsmkms serve`` applies it once for all workers.)"""
        from hsmkms import compose, hsm

        settings = settings or Settings.load(**overrides)
        try:
            service = compose.open_service(settings, preload_keys=preload_keys)
        except hsm.TokenError as exc:
            raise errors.KMSInternalException(f"cannot open the token: {exc}") from None
        self._attach(service, caller)
        if seed is not None:
            from hsmkms import seed as seeding
            from hsmkms.service.quotas import unmetered

            try:
                with unmetered():  # the seed's own work: no client's quota pays for it
                    seeding.apply_file(service, seed)  # type: ignore[arg-type]
            except seeding.SeedError as exc:
                service.close()
                raise errors.ValidationException(str(exc)) from None

    @classmethod
    def from_service(cls, service: OperationLayer, caller: Caller | None = None) -> KMS:
        """A KMS over an already open operation layer (shares its token and store)."""
        kms = object.__new__(cls)
        kms._attach(service, caller)
        return kms

    def _attach(self, service: OperationLayer, caller: Caller | None) -> None:
        self.settings = service.settings
        self.service = service
        self._caller = caller

    @property
    def caller(self) -> Caller:
        """Who calls when a call names no one: by default the first identity of the
        credentials file (the embedded default's admin), read on first use."""
        if self._caller is None:
            from hsmkms import compose

            self._caller = compose.default_caller(self.settings)
        return self._caller

    # -- generic entry, used by the wire layer ------------------------------------------
    def call(self, operation: str, params: dict[str, Any], caller: Caller | None = None) -> dict:
        """Run one KMS operation; raise :class:`KMSError` named as AWS names it."""
        try:
            # The operation layer checks the input against the model (and audits a refusal).
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

        if not self.service.runs_quickly(operation, params):
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
        return self.service.pool_stock()

    def health(self) -> dict[str, Any]:
        return self.service.health()

    def start_background(self) -> None:
        """Start the process-lifetime jobs: due rotations and deletion sweeps."""
        self.service.start_scheduler()

    def close(self) -> None:
        self.service.close()

    def xks_proxy(self) -> XksProxy | None:
        """The XKS proxy API's operations over this KMS's token and store
        (hsmkms/service/xks.py), which ``hsmkms serve`` answers under ``xks_path_prefix``;
        None over a stand-in operation layer (a test's)."""
        from hsmkms.service import Service
        from hsmkms.service.xks import XksProxy

        return XksProxy(self.service) if isinstance(self.service, Service) else None

    def as_caller(self, caller: Caller) -> KMS:
        """A view of this KMS that acts as ``caller`` (shares the token and store)."""
        return KMS.from_service(self.service, caller)

    def in_region(self, region: str) -> KMS:
        """A view of this KMS whose calls run in ``region`` (by default they run in the
        ``region`` setting's): keys, aliases and ARNs are per account and Region."""
        return self.as_caller(dataclasses.replace(self.caller, region=region))

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
