"""Tags: TagResource, UntagResource, ListResourceTags, and AWS's tag rules.

AWS behaviour copied (the API reference of the three operations, "Tags in AWS KMS" in the
Developer Guide, and the service model):

- A tag key is 1-128 characters and a value 0-256: the service model's lengths, answered with
  ValidationException before any of this runs. Keys and values are case-sensitive.
- Tag keys that begin with ``aws:`` (in any case) are reserved for AWS: TagException from
  CreateKey, TagResource and UntagResource alike.
- One value per tag key: TagResource with a key the KMS key has replaces its value; the same
  key twice in one request is TagException.
- At most 50 tags on a KMS key: CreateKey with more is TagException; a TagResource that would
  leave more is LimitExceededException (a quota), and changes nothing.
- UntagResource of a tag key the KMS key lacks succeeds and does nothing.
- TagResource and UntagResource refuse a PendingDeletion key (KMSInvalidStateException);
  ListResourceTags answers in every key state.
- KeyId is a key id or key ARN (not an alias), of the caller's own account: none of the three
  works across accounts.
- ListResourceTags: Limit 1..50 (default 50), tags in key order, an opaque marker.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from hsmkms import errors
from hsmkms.service.core import (
    Request,
    check_not_pending_deletion,
    operation,
    validation,
)
from hsmkms.store import KeyRecord

if TYPE_CHECKING:
    from hsmkms.service import Service

MAX_TAGS = 50
RESERVED_PREFIX = "aws:"


def _check_not_reserved(tag_key: str) -> None:
    if tag_key.lower().startswith(RESERVED_PREFIX):
        raise errors.TagException(
            f"Tag key '{tag_key}' is not valid: tag keys beginning with 'aws:' are reserved "
            f"for AWS use."
        )


def validate_tags(tags: list[dict[str, str]]) -> dict[str, str]:
    """Tags as a dict, checked as AWS checks them (aws: prefix reserved, no duplicate keys, at
    most 50); TagException else."""
    out: dict[str, str] = {}
    for tag in tags:
        k, v = tag["TagKey"], tag["TagValue"]
        _check_not_reserved(k)
        if k in out:
            raise errors.TagException(f"Duplicate tag key '{k}' in the request.")
        out[k] = v
    if len(out) > MAX_TAGS:
        raise errors.TagException(f"A KMS key can have at most {MAX_TAGS} tags.")
    return out


def _own_key(svc: Service, req: Request) -> KeyRecord:
    """The key named by key id or key ARN (not an alias); authorization refuses another
    account's key to all three operations (NotFoundException)."""
    return svc.authorized_key(req, req.key_id, allow_alias=False)


@operation("TagResource")
def tag_resource(svc: Service, req: Request) -> dict[str, Any]:
    key = _own_key(svc, req)
    check_not_pending_deletion(key)
    tags = validate_tags(req.structures("Tags"))
    if len(set(svc.store.get_tags(key.ref)) | set(tags)) > MAX_TAGS:
        raise errors.LimitExceededException(
            f"A KMS key can have at most {MAX_TAGS} tags: {key.arn} would have more."
        )
    svc.store.set_tags(key.ref, tags)
    return {}


@operation("UntagResource")
def untag_resource(svc: Service, req: Request) -> dict[str, Any]:
    key = _own_key(svc, req)
    check_not_pending_deletion(key)
    tag_keys = req.texts("TagKeys")
    for k in tag_keys:
        _check_not_reserved(k)
    svc.store.remove_tags(key.ref, tag_keys)
    return {}


def _marker(tag_key: str) -> str:
    """An opaque marker that fits the model's MarkerType (printable Latin-1) whatever the
    tag key's characters."""
    return base64.urlsafe_b64encode(tag_key.encode("utf-8")).decode("ascii")


def _after_marker(marker: str) -> str:
    try:
        raw = base64.b64decode(marker.encode("ascii"), altchars=b"-_", validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise errors.InvalidMarkerException("The marker is invalid.") from None


@operation("ListResourceTags")
def list_resource_tags(svc: Service, req: Request) -> dict[str, Any]:
    limit = req.number("Limit")
    limit = MAX_TAGS if limit is None else limit
    if limit > MAX_TAGS:
        raise validation("limit", limit, f"Member must have value less than or equal to {MAX_TAGS}")
    key = _own_key(svc, req)
    tags = svc.store.get_tags(key.ref)
    keys = sorted(tags)
    marker = req.text("Marker")
    if marker is not None:
        after = _after_marker(marker)
        keys = [k for k in keys if k > after]
    page = keys[:limit]
    out: dict[str, Any] = {
        "Tags": [{"TagKey": k, "TagValue": tags[k]} for k in page],
        "Truncated": len(keys) > limit,
    }
    if len(keys) > limit:
        out["NextMarker"] = _marker(page[-1])
    return out
