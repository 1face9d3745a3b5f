"""What every operation shares: the request, key resolution, state and usage checks.

KeyId resolution follows AWS: a key id or alias name names a key of the caller's account; a
key ARN or alias ARN may name another account's key (cross-account use); an ARN of another
region names nothing here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from hsmkms import errors
from hsmkms.service import encryption_context
from hsmkms.specs import EncryptionAlgorithm, KeySpec, KeyState, KeyUsage
from hsmkms.store import KeyRecord, key_ref

if TYPE_CHECKING:
    from hsmkms.identity import Caller
    from hsmkms.service import Service

Handler = Callable[["Service", "Request"], dict[str, Any]]
OPERATIONS: dict[str, Handler] = {}

# A key id: a UUID, or a multi-Region key's mrk- and 32 hex digits.
_UUID = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$"
)
_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key/(.+)$")
_ALIAS_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(alias/.+)$")

E = TypeVar("E", bound=StrEnum)


def operation(name: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of the KMS operation ``name``."""

    def register(fn: Handler) -> Handler:
        OPERATIONS[name] = fn
        return fn

    return register


# The request the operation layer is running (Service.dispatch sets it): what a call to an
# external key store proxy names in its requestMetadata.
CURRENT: ContextVar[Request | None] = ContextVar("hsmkms_current_request", default=None)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(eq=False)
class Request:
    """One operation's request: its validated parameters (botocore's model has checked every
    member's type, length, range and enum) seen through typed accessors, and who asks.

    ``grants_checked`` is the one thing authorization learns and keeps for the rest of the
    request: that every grant token names a grant that exists (asked of the store once).
    ``used``: the keys the request was allowed to use, in order (:meth:`Service.used_key`);
    ``charges``: what it took from the request quotas (service/quotas.py), for a refund when
    it runs again from the start."""

    operation: str
    params: Mapping[str, Any]
    caller: Caller
    grants_checked: bool = field(default=False, compare=False)
    used: list[KeyRecord] = field(default_factory=list, compare=False)
    charges: list[Any] = field(default_factory=list, compare=False)
    # The request's id (the wire's x-amzn-RequestId, else one drawn here) and the id of its
    # audit event (CloudTrail's eventID), which GetKeyLastUsage names.
    request_id: str = field(default="", compare=False)
    # A Recipient's attestation document once verified (service/recipient.py).
    attestation: Any = field(default=None, compare=False)
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()), compare=False)

    def __post_init__(self) -> None:
        if not self.request_id:
            self.request_id = self.caller.request_id or str(uuid.uuid4())

    def again(self) -> Request:
        """The same request, as yet unchecked (for a retry from the start)."""
        return Request(
            self.operation,
            self.params,
            self.caller,
            request_id=self.request_id,
            event_id=self.event_id,
        )

    def get(self, name: str, default: Any = None) -> Any:
        value = self.params.get(name)
        return default if value is None else value

    # -- typed views of the members (None where the member is absent) ---------------------
    def text(self, name: str) -> str | None:
        return self.params.get(name)

    def number(self, name: str) -> int | None:
        value = self.params.get(name)
        return None if value is None else int(value)

    def data(self, name: str) -> bytes | None:
        return self.params.get(name)

    def flag(self, name: str) -> bool:
        return bool(self.params.get(name))

    def texts(self, name: str) -> list[str]:
        return list(self.params.get(name) or ())

    def choice(self, name: str, kind: type[E]) -> E | None:
        """An enum member (the model checked the value is one of the enum's)."""
        value = self.params.get(name)
        return None if value is None else kind(value)

    def context(self, name: str = "EncryptionContext") -> dict[str, str] | None:
        return encryption_context.checked(self.params.get(name), name)

    def structures(self, name: str) -> list[dict[str, Any]]:
        """A list of structures (Tags, ...), empty when absent."""
        return list(self.params.get(name) or ())

    # -- members the model requires (present once validation has passed) -------------------
    def required_text(self, name: str) -> str:
        value: str = self.params[name]
        return value

    def required_data(self, name: str) -> bytes:
        value: bytes = self.params[name]
        return value

    @property
    def key_id(self) -> str:
        """``KeyId``, for the operations whose model requires it."""
        value: str = self.params["KeyId"]
        return value

    @property
    def dry_run(self) -> bool:
        return bool(self.params.get("DryRun"))

    @cached_property
    def grant_ids(self) -> tuple[str, ...]:
        """The grants the request's grant tokens name. Each token must be one hsmkms issued
        (else InvalidGrantTokenException); authorization
        (:func:`hsmkms.service.policy.authorize`) checks those grants still exist."""
        from hsmkms.service.grants import grant_id_of_token

        tokens = self.params.get("GrantTokens") or []
        if any(not isinstance(t, str) for t in tokens):
            raise errors.InvalidGrantTokenException("The grant token is not valid.")
        return tuple(grant_id_of_token(t) for t in tokens)


def validation(field_name: str, value: Any, constraint: str) -> errors.KMSError:
    """AWS's single-member ValidationException wording."""
    return errors.ValidationException(
        f"1 validation error detected: Value '{value}' at '{field_name}' failed to satisfy "
        f"constraint: {constraint}"
    )


def check_grant_tokens(req: Request) -> None:
    """The request's grant tokens are ones hsmkms issued (InvalidGrantTokenException else)."""
    req.grant_ids  # noqa: B018  (reading it checks every token)


def check_dry_run(req: Request) -> None:
    """Last step before the work: every other check has passed."""
    if req.dry_run:
        raise errors.DryRunOperationException(
            "The request would have succeeded, but the DryRun option is set."
        )


def key_arn(region: str, account_id: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{account_id}:key/{key_id}"


def alias_arn(region: str, account_id: str, alias_name: str) -> str:
    return f"arn:aws:kms:{region}:{account_id}:{alias_name}"


def resolve_key(svc: Service, caller: Caller, key_id: str, allow_alias: bool = True) -> KeyRecord:
    """The key named by a key id, key ARN, alias name or alias ARN; NotFoundException else."""
    region = svc.region_of(caller)
    account = caller.account_id
    target: str | None = None
    if _UUID.match(key_id):
        target = key_id
    elif m := _KEY_ARN.match(key_id):
        if m.group(1) != region or not _UUID.match(m.group(3)):
            raise errors.NotFoundException(f"Key '{key_id}' does not exist")
        account, target = m.group(2), m.group(3)
    elif allow_alias and key_id.startswith("alias/"):
        target = _alias_target(svc, region, account, key_id)
    elif allow_alias and (m := _ALIAS_ARN.match(key_id)):
        if m.group(1) != region:
            raise errors.NotFoundException(f"Alias {key_id} is not found.")
        account = m.group(2)
        target = _alias_target(svc, region, account, m.group(3))
    else:
        raise errors.NotFoundException(f"Invalid keyId '{key_id}'")
    key = svc.store.get_key(key_ref(target, region))
    if key is None or key.account_id != account or key.region != region:
        raise errors.NotFoundException(f"Key '{key_arn(region, account, target)}' does not exist")
    return key


def named_key_id(name: object) -> str | None:
    """The key id a KeyId member names by itself (a key id or a key ARN), without a store
    read; None for an alias or anything else."""
    if not isinstance(name, str):
        return None
    if _UUID.match(name):
        return name
    m = _KEY_ARN.match(name)
    return m.group(3) if m and _UUID.match(m.group(3)) else None


def _alias_target(svc: Service, region: str, account: str, alias_name: str) -> str:
    alias = svc.store.get_alias(account, region, alias_name)
    if alias is None:
        raise errors.NotFoundException(
            f"Alias {alias_arn(region, account, alias_name)} is not found."
        )
    return alias.key_id


def check_enabled(key: KeyRecord) -> None:
    """AWS's key state table for operations that need an Enabled key."""
    if key.state == KeyState.DISABLED:
        raise errors.DisabledException(f"{key.arn} is disabled.")
    if key.state == KeyState.PENDING_DELETION:
        raise errors.KMSInvalidStateException(f"{key.arn} is pending deletion.")
    if key.state != KeyState.ENABLED:
        raise errors.KMSInvalidStateException(f"{key.arn} is {key.state}.")


def check_usable(key: KeyRecord) -> None:
    """A key that cryptographic operations may use: Enabled and ENCRYPT_DECRYPT."""
    check_enabled(key)
    if key.key_usage == KeyUsage.ENCRYPT_DECRYPT and key.key_spec != KeySpec.SYMMETRIC_DEFAULT:
        raise errors.InvalidKeyUsageException(
            f"{key.arn} is an asymmetric {key.key_spec} key: this operation needs a symmetric "
            "encryption KMS key."
        )
    if key.key_usage != KeyUsage.ENCRYPT_DECRYPT or key.key_spec != KeySpec.SYMMETRIC_DEFAULT:
        raise errors.InvalidKeyUsageException(
            f"{key.arn} key usage is {key.key_usage}, which is not valid for this operation."
        )


def check_not_pending_deletion(key: KeyRecord) -> None:
    if key.state in (KeyState.PENDING_DELETION, KeyState.PENDING_REPLICA_DELETION):
        raise errors.KMSInvalidStateException(f"{key.arn} is pending deletion.")


def check_algorithm(key: KeyRecord, algorithm: str | None) -> EncryptionAlgorithm:
    default = EncryptionAlgorithm.SYMMETRIC_DEFAULT
    if algorithm not in (None, default):
        raise errors.InvalidKeyUsageException(
            f"{key.arn} does not support the encryption algorithm {algorithm}: a symmetric "
            f"encryption KMS key supports only {default}."
        )
    return default


def new_key_id(multi_region: bool = False) -> str:
    return f"mrk-{uuid.uuid4().hex}" if multi_region else str(uuid.uuid4())
