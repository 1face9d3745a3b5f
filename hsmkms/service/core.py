"""What every operation shares: the request, key resolution, state and usage checks.

KeyId resolution follows AWS: a key id or alias name names a key of the caller's account; a
key ARN or alias ARN may name another account's key (cross-account use); an ARN of another
region names nothing here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hsmkms import errors
from hsmkms.store import KeyRecord

if TYPE_CHECKING:
    from hsmkms.kms import Caller
    from hsmkms.service import Service

Handler = Callable[["Service", "Request"], dict[str, Any]]
OPERATIONS: dict[str, Handler] = {}

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key/(.+)$")
_ALIAS_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(alias/.+)$")

SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"


def operation(name: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of the KMS operation ``name``."""

    def register(fn: Handler) -> Handler:
        OPERATIONS[name] = fn
        return fn

    return register


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Request:
    operation: str
    params: dict[str, Any]
    caller: Caller
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.params.get(name)
        return default if value is None else value

    @property
    def dry_run(self) -> bool:
        return bool(self.params.get("DryRun"))


def validation(field_name: str, value: Any, constraint: str) -> errors.KMSError:
    """AWS's single-member ValidationException wording."""
    return errors.ValidationException(
        f"1 validation error detected: Value '{value}' at '{field_name}' failed to satisfy "
        f"constraint: {constraint}"
    )


def check_grant_tokens(req: Request) -> None:
    """Each grant token must be one hsmkms issued (else InvalidGrantTokenException); the grant
    ids they name are left in ``req.extra["grant_ids"]``, and authorization
    (:func:`hsmkms.service.policy.authorize`) checks those grants still exist."""
    if "grant_ids" in req.extra:
        return
    from hsmkms.service.grants import grant_id_of_token

    tokens = req.get("GrantTokens", [])
    if any(not isinstance(t, str) for t in tokens):
        raise errors.InvalidGrantTokenException("The grant token is not valid.")
    req.extra["grant_ids"] = [grant_id_of_token(t) for t in tokens]


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
    region = svc.region
    account = caller.account_id
    target: str | None = None
    if _UUID.match(key_id):
        target = key_id
    elif m := _KEY_ARN.match(key_id):
        if m.group(1) != region or not _UUID.match(m.group(3)):
            raise errors.NotFoundException(f"Key '{key_id}' does not exist")
        account, target = m.group(2), m.group(3)
    elif allow_alias and key_id.startswith("alias/"):
        target = _alias_target(svc, account, key_id)
    elif allow_alias and (m := _ALIAS_ARN.match(key_id)):
        if m.group(1) != region:
            raise errors.NotFoundException(f"Alias {key_id} is not found.")
        account = m.group(2)
        target = _alias_target(svc, account, m.group(3))
    else:
        raise errors.NotFoundException(f"Invalid keyId '{key_id}'")
    key = svc.store.get_key(target)
    if key is None or key.account_id != account or key.region != region:
        raise errors.NotFoundException(
            f"Key '{key_arn(region, account, target)}' does not exist"
        )
    return key


def _alias_target(svc: Service, account: str, alias_name: str) -> str:
    alias = svc.store.get_alias(account, svc.region, alias_name)
    if alias is None:
        raise errors.NotFoundException(
            f"Alias {alias_arn(svc.region, account, alias_name)} is not found."
        )
    return alias.key_id


def check_enabled(key: KeyRecord) -> None:
    """AWS's key state table for operations that need an Enabled key."""
    if key.state == "Disabled":
        raise errors.DisabledException(f"{key.arn} is disabled.")
    if key.state == "PendingDeletion":
        raise errors.KMSInvalidStateException(f"{key.arn} is pending deletion.")
    if key.state != "Enabled":
        raise errors.KMSInvalidStateException(f"{key.arn} is {key.state}.")


def check_usable(key: KeyRecord) -> None:
    """A key that cryptographic operations may use: Enabled and ENCRYPT_DECRYPT."""
    check_enabled(key)
    if key.key_usage != ENCRYPT_DECRYPT or key.key_spec != SYMMETRIC_DEFAULT:
        raise errors.InvalidKeyUsageException(
            f"{key.arn} key usage is {key.key_usage}, which is not valid for this operation."
        )


def check_not_pending_deletion(key: KeyRecord) -> None:
    if key.state == "PendingDeletion":
        raise errors.KMSInvalidStateException(f"{key.arn} is pending deletion.")


def check_algorithm(key: KeyRecord, algorithm: str | None) -> str:
    if algorithm not in (None, SYMMETRIC_DEFAULT):
        raise errors.InvalidKeyUsageException(
            f"{key.arn} does not support the encryption algorithm {algorithm}: a symmetric "
            f"encryption KMS key supports only {SYMMETRIC_DEFAULT}."
        )
    return SYMMETRIC_DEFAULT


def new_key_id() -> str:
    return str(uuid.uuid4())
