"""The CloudTrail-shaped event of one request (AWS CloudTrail's record of a KMS API call).

What is kept follows CloudTrail's KMS events: ``requestParameters`` holds the request's
members in lowerCamelCase (``keyId``, ``encryptionContext``, ``keyPairSpec``, ``grantTokens``)
*without* any member botocore's KMS model types as a blob (Plaintext, CiphertextBlob,
Message, Signature, Mac, PublicKey, ImportToken, EncryptedKeyMaterial, ...) or marks
sensitive (KeyStorePassword, the XKS proxy's secret); ``responseElements`` is null for the
read-only and cryptographic operations and, for the others, their answer walked the same way
(so CreateKey's keyMetadata, ScheduleKeyDeletion's deletionDate; CreateGrant's grant token
left out, as CloudTrail leaves it out). Map keys (an encryption context's, a tag's) are the
caller's and kept as they are. Timestamps inside ``responseElements`` are written as
CloudTrail writes them there ("Dec 3, 2026, 5:00:00 AM"); ``eventTime`` is ISO 8601 UTC.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, Protocol

from hsmkms import model

if TYPE_CHECKING:
    from hsmkms import errors
    from hsmkms.identity import Caller
    from hsmkms.model import Shape

EVENT_VERSION = "1.08"
EVENT_SOURCE = "kms.amazonaws.com"
KEY_TYPE = "AWS::KMS::Key"
# Where the library face (no network, no User-Agent) is the caller.
IN_PROCESS = "in-process"
LIBRARY_AGENT = "hsmkms library"

# The cryptographic operations: CloudTrail records them read-only, with no responseElements.
CRYPTOGRAPHIC = model.key_use_operations() | {"GenerateRandom"}
# Answer members CloudTrail leaves out of responseElements though they are neither blobs nor
# sensitive in the model: a grant token lets its holder use the grant before it is consistent.
LEFT_OUT = frozenset({"GrantToken"})


class UsedKey(Protocol):
    """What an event says of a key a request used (a :class:`hsmkms.store.KeyRecord`)."""

    @property
    def arn(self) -> str: ...

    @property
    def account_id(self) -> str: ...

    @property
    def current_material_id(self) -> str | None: ...


class AuditedRequest(Protocol):
    """What an event is made of (:class:`hsmkms.service.core.Request`, which this package
    does not import: the audit trail sits beside the operation layer, not inside it)."""

    @property
    def operation(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def caller(self) -> Caller: ...

    @property
    def used(self) -> Sequence[UsedKey]: ...

    @property
    def request_id(self) -> str: ...

    @property
    def event_id(self) -> str: ...


def is_read_only(operation: str) -> bool:
    """CloudTrail's ``readOnly``: the Describe, List and Get calls and the cryptographic ones."""
    return operation in CRYPTOGRAPHIC or operation.startswith(("Describe", "List", "Get"))


def event(
    req: AuditedRequest,
    error: errors.KMSError | None,
    answer: dict[str, Any] | None,
    default_region: str,
    now: float | None = None,
) -> dict[str, Any]:
    """The event of ``req`` as a dict (:func:`event_json`, parsed)."""
    parsed: dict[str, Any] = json.loads(event_json(req, error, answer, default_region, now))
    return parsed


def event_json(
    req: AuditedRequest,
    error: errors.KMSError | None,
    answer: dict[str, Any] | None,
    default_region: str,
    now: float | None = None,
) -> bytes:
    """The event of ``req``, which ended in ``error`` (None: it succeeded with ``answer``), as
    one JSON object in CloudTrail's member order.

    Nothing of it is a secret: no blob member of the request or the answer, no member the
    model marks sensitive, no grant token of an answer. ``now``: seconds since the epoch.

    Built from pieces rather than by one ``json.dumps`` of a dict: what repeats from request
    to request (the caller's identity, a key's resource entry, the second's timestamp, the
    constant members) is serialised once and reused, which halves the cost of an event (it is
    on the path of every request)."""
    op = req.operation
    caller = req.caller
    read_only = is_read_only(op)
    used = _unique(req.used)
    parts = [
        _identity_json(caller.principal_arn, caller.account_id, caller.access_key_id),
        _time_json(now),
        _quote(op),
        ',"awsRegion":',
        _quote(caller.region or default_region),
        ',"sourceIPAddress":',
        _quote(caller.source_ip or IN_PROCESS),
        ',"userAgent":',
        _quote(caller.user_agent or LIBRARY_AGENT),
    ]
    if error is not None:
        parts += (',"errorCode":', _quote(error.code))
        if error.message:
            parts += (',"errorMessage":', _quote(error.message))
    parts += (',"requestParameters":', _dumps(_clean_top(_input(op), req.params)))
    response = None
    if error is None and answer and not read_only:
        response = _clean_top(_output(op), answer)
    parts += (',"responseElements":', _dumps(response))
    extra = _additional(op, answer, used) if error is None else None
    if extra:
        parts += (',"additionalEventData":', _dumps(extra))
    parts += (
        ',"requestID":',
        _quote(req.request_id),
        ',"eventID":',
        _quote(req.event_id),
        ',"readOnly":true' if read_only else ',"readOnly":false',
    )
    resources = [_resource_json(k.arn, k.account_id) for k in used]
    made = _made_arn(answer) if error is None else None
    if made and all(made != k.arn for k in used):
        resources.append(_resource_json(made, made.split(":")[4]))
    if resources:
        parts += (',"resources":[', ",".join(resources), "]")
    parts += (
        ',"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":',
        _quote(caller.account_id),
        ',"eventCategory":"Management"}',
    )
    return "".join(parts).encode("ascii")


_quote: Callable[[str], str] = encode_basestring_ascii  # a JSON string, quotes included


# json.dumps builds a JSONEncoder per call (~1.5 us of a 2.5 us dumps of a small dict): the C
# encoder it ends in, made once (json.encoder's own fallback where there is no C encoder).
if c_make_encoder is not None:
    _encode = c_make_encoder(None, str, encode_basestring_ascii, None, ":", ",", False, False, True)
else:  # pragma: no cover
    _encode = json.JSONEncoder(separators=(",", ":"), default=str).iterencode


def _dumps(value: Any) -> str:
    if not value:
        return "null"
    return "".join(_encode(value, 0))


@functools.lru_cache(maxsize=1024)
def _identity_json(arn: str, account: str, access_key_id: str) -> str:
    found = dict(_identity(arn, account))
    if access_key_id:
        found["accessKeyId"] = access_key_id
    return '{"eventVersion":"1.08","userIdentity":' + _dumps(found)


@functools.lru_cache(maxsize=4096)
def _resource_json(arn: str, account: str) -> str:
    return _dumps({"accountId": account, "type": KEY_TYPE, "ARN": arn})


_last_second: list[Any] = [None, ""]


def _time_json(now: float | None) -> str:
    """``eventTime`` (to the second, as CloudTrail writes it) up to ``eventName``'s value."""
    second = int(time.time() if now is None else now)
    if _last_second[0] != second:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        text = f',"eventTime":"{stamp}","eventSource":"{EVENT_SOURCE}","eventName":'
        _last_second[:] = [second, text]  # one list: a reader sees the old pair or the new
    return str(_last_second[1])


# -- who ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _identity(arn: str, account: str) -> tuple[tuple[str, Any], ...]:
    """Root for ``:root``, AssumedRole for an STS assumed-role session (with its role as the
    session issuer), IAMUser for ``:user/``. AWS's principalId is a unique id IAM assigns
    (AIDA... for a user, AROA...:session for a role session); hsmkms has no IAM, so it derives
    one of the same shape from the ARN: the same principal always has the same id."""
    resource = arn.split(":", 5)[5] if arn.count(":") >= 5 else arn
    if resource == "root":
        return (("type", "Root"), ("principalId", account), ("arn", arn), ("accountId", account))
    if resource.startswith("assumed-role/"):
        _, role, session = (resource.split("/", 2) + ["", ""])[:3]
        role_arn = f"arn:aws:iam::{account}:role/{role}"
        role_id = _unique_id("AROA", role_arn)
        issuer = {
            "type": "Role",
            "principalId": role_id,
            "arn": role_arn,
            "accountId": account,
            "userName": role,
        }
        return (
            ("type", "AssumedRole"),
            ("principalId", f"{role_id}:{session}"),
            ("arn", arn),
            ("accountId", account),
            ("sessionContext", {"sessionIssuer": issuer}),
        )
    kind = "IAMUser" if resource.startswith("user/") else "Unknown"
    found: tuple[tuple[str, Any], ...] = (
        ("type", kind),
        ("principalId", _unique_id("AIDA", arn)),
        ("arn", arn),
        ("accountId", account),
    )
    if kind == "IAMUser":
        found += (("userName", resource.rsplit("/", 1)[-1]),)
    return found


def _unique_id(prefix: str, arn: str) -> str:
    """An IAM-shaped unique id (prefix and 17 base32 characters) drawn from the ARN."""
    return prefix + base64.b32encode(hashlib.sha256(arn.encode()).digest()).decode()[:17]


# -- what -----------------------------------------------------------------------------------
def _unique(keys: Sequence[UsedKey]) -> list[UsedKey]:
    seen: dict[str, UsedKey] = {}
    for key in keys:
        seen.setdefault(key.arn, key)
    return list(seen.values())


def _additional(op: str, answer: dict[str, Any] | None, used: list[UsedKey]) -> dict[str, Any]:
    """``additionalEventData``: the key material an operation used (the answer names it where
    the model has a member for it; else the key's current, and only, material)."""
    if answer is None:
        return {}
    if op == "ReEncrypt":
        return {
            "sourceKeyMaterialId": answer.get("SourceKeyMaterialId"),
            "destinationKeyMaterialId": answer.get("DestinationKeyMaterialId"),
        }
    material = answer.get("KeyMaterialId")
    if material is None and op in CRYPTOGRAPHIC and used:
        material = used[0].current_material_id
    return {"keyMaterialId": material} if material else {}


def _made_arn(answer: dict[str, Any] | None) -> str | None:
    """The ARN of a key the request made (CreateKey, ReplicateKey)."""
    if not answer:
        return None
    meta = answer.get("KeyMetadata") or answer.get("ReplicaKeyMetadata")
    arn = meta.get("Arn") if isinstance(meta, dict) else None
    return arn if isinstance(arn, str) else None


@functools.cache
def _input(op: str) -> Shape | None:
    return model.input_shape(op) if op in model.operations() else None


@functools.cache
def _output(op: str) -> Shape | None:
    return model.output_shape(op) if op in model.operations() else None


def _clean_top(shape: Shape | None, value: Any) -> dict[str, Any]:
    if shape is None or not isinstance(value, dict):
        return {}
    return _clean_structure(shape, value)


def _secret(name: str, shape: Shape) -> bool:
    return shape.type == "blob" or shape.sensitive or name in LEFT_OUT


def _clean_structure(shape: Shape, value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    members = shape.members
    for name, item in value.items():
        member = members.get(name)
        if member is None or item is None or _secret(name, member):
            continue
        out[name[:1].lower() + name[1:]] = item if _plain(member) else _clean(member, item)
    return out


def _clean(shape: Shape, value: Any) -> Any:
    kind = shape.type
    if kind == "structure":
        return _clean_structure(shape, value) if isinstance(value, dict) else None
    if kind == "list" and shape.member is not None:
        member = shape.member
        if _plain(member):
            return list(value)
        if _secret("", member):
            return None
        return [_clean(member, v) for v in value]
    if kind == "map" and shape.value is not None:
        if _secret("", shape.value):
            return None
        return {k: _clean(shape.value, v) for k, v in value.items()}
    if kind == "timestamp":
        return cloudtrail_time(value)
    return value


@functools.cache
def _plain(shape: Shape) -> bool:
    """Whether values of ``shape`` are written as they are: no structure (whose members are
    renamed), no timestamp, nothing secret anywhere inside."""
    if shape.type in ("structure", "timestamp", "blob") or shape.sensitive:
        return False
    if shape.type == "list":
        return shape.member is not None and _plain(shape.member)
    if shape.type == "map":
        return shape.value is not None and _plain(shape.value)
    return True


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def cloudtrail_time(value: Any) -> Any:
    """A timestamp as CloudTrail writes one inside responseElements: "Dec 3, 2026, 5:00:00
    AM" (UTC; Java's default medium format)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = datetime.fromtimestamp(value, UTC)
    if not isinstance(value, datetime):
        return value
    t = value.astimezone(UTC) if value.tzinfo else value
    hour = t.hour % 12 or 12
    half = "AM" if t.hour < 12 else "PM"
    return f"{_MONTHS[t.month - 1]} {t.day}, {t.year}, {hour}:{t.minute:02d}:{t.second:02d} {half}"
