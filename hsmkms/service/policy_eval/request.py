"""What a key policy can see of one request (:class:`RequestContext`), and the condition keys
it answers: AWS's global keys (``aws:PrincipalArn``, ``aws:SourceIp``, ``aws:CurrentTime``...)
and KMS's (``kms:EncryptionContext:<key>``, ``kms:KeySpec``, ``kms:ResourceAliases``...)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from hsmkms.service.policy_eval.budget import spend

# Condition keys whose value is a set (the others hold one value).
MULTIVALUED_KEYS = frozenset(
    {"kms:encryptioncontextkeys", "kms:grantoperations", "kms:resourcealiases", "aws:tagkeys"}
)
_PRINCIPAL_TYPES = {
    "root": "Account",
    "user": "User",
    "assumed-role": "AssumedRole",
    "federated-user": "FederatedUser",
}


@dataclass(frozen=True)
class RequestContext:
    """What a policy can see of one request: the action, who asks, on what, and with what.

    ``None`` means "not in the request" (a missing condition key). ``resource_aliases`` may be
    a callable, evaluated only if a policy asks for ``kms:ResourceAliases`` (it costs a store
    read), and so may ``resource_tags`` (``aws:ResourceTag/<key>``). ``request_tags`` are the
    tags a TagResource sets (``aws:RequestTag/<key>``). ``extra`` holds further condition
    keys by name (``kms:KeyOrigin``...). ``aws:PrincipalType``, ``aws:username`` and
    ``aws:ResourceAccount`` are read from the principal's and the key's ARNs."""

    action: str
    principal_arn: str
    principal_account: str
    resource_arn: str = "*"
    encryption_context: Mapping[str, str] | None = None
    key_spec: str | None = None
    key_usage: str | None = None
    encryption_algorithm: str | None = None
    data_key_pair_spec: str | None = None
    grant_operations: Sequence[str] | None = None
    grant_is_for_aws_resource: bool | None = None
    request_alias: str | None = None
    resource_aliases: Sequence[str] | Callable[[], Sequence[str]] | None = None
    source_ip: str | None = None
    now: datetime | None = None
    secure_transport: bool | None = None  # aws:SecureTransport: true only over TLS
    requested_region: str | None = None  # aws:RequestedRegion: the region the service serves
    resource_tags: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None
    request_tags: Mapping[str, str] | None = None
    extra: Mapping[str, str | Sequence[str]] = field(default_factory=dict)

    def values(self, key: str) -> tuple[str, ...] | None:
        """The request's values of condition key ``key`` (any case); None when absent."""
        name = key.lower()
        if name.startswith("kms:encryptioncontext:"):
            spend(1)
            return self._context_by_key.get(name[len("kms:encryptioncontext:") :])
        if name.startswith("aws:resourcetag/"):
            spend(1)
            return self._resource_tags_by_key.get(name[len("aws:resourcetag/") :])
        if name.startswith("aws:requesttag/"):
            spend(1)
            return _by_key(self.request_tags or {}).get(name[len("aws:requesttag/") :])
        if name == "kms:encryptioncontextkeys":
            return tuple(self.encryption_context) if self.encryption_context else None
        if name == "kms:resourcealiases":
            aliases = self.resource_aliases
            if callable(aliases):
                aliases = aliases()
            return tuple(aliases) if aliases else None
        simple = self._simple(name)
        if simple is not None:
            return simple
        for k, v in self.extra.items():
            if k.lower() == name:
                return (v,) if isinstance(v, str) else tuple(v)
        return None

    @cached_property
    def _context_by_key(self) -> dict[str, tuple[str, ...]]:
        """The encryption context's values by key in lower case, read once per request."""
        return _by_key(self.encryption_context or {})

    @cached_property
    def _resource_tags_by_key(self) -> dict[str, tuple[str, ...]]:
        """The key's tags by tag key in lower case, read (from the store) once per request."""
        tags = self.resource_tags
        if callable(tags):
            tags = tags()
        return _by_key(tags or {})

    def _simple(self, name: str) -> tuple[str, ...] | None:
        value: Any
        if name in ("aws:principalarn",):
            value = self.principal_arn
        elif name in ("aws:principalaccount", "kms:calleraccount"):
            value = self.principal_account
        elif name == "aws:sourceip":
            value = self.source_ip or None
        elif name == "kms:keyspec":
            value = self.key_spec
        elif name == "kms:keyusage":
            value = self.key_usage
        elif name == "kms:encryptionalgorithm":
            value = self.encryption_algorithm
        elif name == "kms:datakeypairspec":
            value = self.data_key_pair_spec
        elif name == "kms:requestalias":
            value = self.request_alias
        elif name == "kms:grantoperations":
            return tuple(self.grant_operations) if self.grant_operations else None
        elif name == "kms:grantisforawsresource":
            value = (
                None
                if self.grant_is_for_aws_resource is None
                else ("true" if self.grant_is_for_aws_resource else "false")
            )
        elif name == "aws:securetransport":
            value = None if self.secure_transport is None else str(self.secure_transport).lower()
        elif name == "aws:requestedregion":
            value = self.requested_region
        elif name in ("aws:principaltype", "aws:username"):
            value = _principal_part(self.principal_arn, name == "aws:username")
        elif name == "aws:resourceaccount":
            parts = self.resource_arn.split(":")
            value = parts[4] if len(parts) > 5 and parts[4] else None
        elif name == "aws:currenttime":
            value = self.now.strftime("%Y-%m-%dT%H:%M:%SZ") if self.now else None
        elif name == "aws:epochtime":
            value = str(int(self.now.timestamp())) if self.now else None
        else:
            return None
        return None if value is None else (value,)


def _by_key(pairs: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Values by key in lower case (condition key names are case-insensitive; two keys that
    differ only in case keep both values)."""
    spend(len(pairs))
    by_key: dict[str, tuple[str, ...]] = {}
    for k, v in pairs.items():
        by_key[k.lower()] = (*by_key.get(k.lower(), ()), v)
    return by_key


def _principal_part(principal_arn: str, username: bool) -> str | None:
    """``aws:PrincipalType`` (Account, User, AssumedRole, FederatedUser) of an IAM or STS
    principal ARN, or with ``username`` its ``aws:username`` (IAM users only)."""
    resource = principal_arn.split(":", 5)[-1]
    kind = resource.split("/", 1)[0]
    if username:
        return resource.rsplit("/", 1)[-1] if kind == "user" and "/" in resource else None
    return _PRINCIPAL_TYPES.get(kind)
