"""The store's records besides keys and materials (store/base.py): import parameters, last
uses, leases, aliases, grants, pages. Immutable values; a change is a new record written
through the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class ImportParametersRecord:
    """What one GetParametersForImport handed out: its import token names this record
    (``import_id``, 66 hex characters: the wrapping key's CKA_ID), which binds the KMS key,
    the wrapping algorithm and spec, and the expiry. ``destroyed``: its wrapping key is gone."""

    import_id: str
    key_id: str
    wrapping_algorithm: str
    wrapping_spec: str
    public_key: bytes
    created_at: datetime
    expires_at: datetime
    destroyed: bool = False


@dataclass(frozen=True)
class KeyUsageRecord:
    """A key record's (``key_id``: its ref) last successful cryptographic operation."""

    key_id: str
    operation: str
    used_at: datetime
    request_id: str
    event_id: str


@dataclass(frozen=True)
class CustomKeyStoreRecord:
    """A custom key store: another PKCS#11 token (AWS_CLOUDHSM; ``cluster_id`` names it in the
    settings) or an XKS proxy (EXTERNAL_KEY_STORE). Its secret (the token's PIN, the proxy's
    SigV4 secret) is not here: it stays in a 0600 file of the home."""

    store_id: str
    account_id: str
    region: str
    name: str
    store_type: str
    state: str
    created_at: datetime
    error_code: str | None = None
    cluster_id: str | None = None
    trust_anchor: str | None = None
    xks_uri_endpoint: str | None = None
    xks_uri_path: str | None = None
    xks_connectivity: str | None = None
    xks_access_key_id: str | None = None


@dataclass(frozen=True)
class LeaseRecord:
    """A named lease in the store: one holder at a time until ``expires_at``. Processes and
    nodes that share the store take turns through it (the scheduler's duties, one key's
    rotation), so who holds it is decided by the store's transaction, never in memory."""

    name: str
    holder: str
    acquired_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class AliasRecord:
    account_id: str
    region: str
    alias_name: str
    key_id: str
    created_at: datetime
    updated_at: datetime

    @property
    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:{self.alias_name}"


@dataclass(frozen=True)
class GrantRecord:
    """One grant on a KMS key: who (grantee) may do which operations, under which
    encryption-context constraints, and who may retire it."""

    grant_id: str  # 64 lowercase hex characters
    key_id: str  # the ref of the key record it is on (KeyRecord.ref: a replica's own grants)
    grantee_principal: str
    operations: tuple[str, ...]
    issuing_account: str  # the account id of the principal that created the grant
    created_at: datetime
    name: str = ""
    retiring_principal: str | None = None
    # {"EncryptionContextEquals": {...}} and/or {"EncryptionContextSubset": {...}}
    constraints: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    items: list = field(default_factory=list)
    next_marker: str | None = None
