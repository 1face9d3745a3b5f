"""Tags: TagResource, UntagResource, ListResourceTags, and AWS's tag rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hsmkms import errors
from hsmkms.service.core import Request, check_not_pending_deletion, operation

if TYPE_CHECKING:
    from hsmkms.service import Service

MAX_TAGS = 50


def validate_tags(tags: list[dict[str, str]]) -> dict[str, str]:
    """Tags as a dict, checked as AWS checks them (aws: prefix reserved, no duplicates)."""
    out: dict[str, str] = {}
    for tag in tags:
        k, v = tag["TagKey"], tag["TagValue"]
        if k.lower().startswith("aws:"):
            raise errors.TagException("Tag keys beginning with 'aws:' are reserved for AWS use.")
        if k in out:
            raise errors.TagException(f"Duplicate tag key '{k}' in the request.")
        out[k] = v
    if len(out) > MAX_TAGS:
        raise errors.TagException(f"A KMS key can have at most {MAX_TAGS} tags.")
    return out


@operation("TagResource")
def tag_resource(svc: Service, req: Request) -> dict[str, Any]:
    key = svc.authorized_key(req, req.params["KeyId"], allow_alias=False)
    check_not_pending_deletion(key)
    tags = validate_tags(req.params["Tags"])
    if len(set(svc.store.get_tags(key.key_id)) | set(tags)) > MAX_TAGS:
        raise errors.LimitExceededException(f"A KMS key can have at most {MAX_TAGS} tags.")
    svc.store.set_tags(key.key_id, tags)
    return {}


@operation("UntagResource")
def untag_resource(svc: Service, req: Request) -> dict[str, Any]:
    key = svc.authorized_key(req, req.params["KeyId"], allow_alias=False)
    check_not_pending_deletion(key)
    svc.store.remove_tags(key.key_id, list(req.params["TagKeys"]))
    return {}


@operation("ListResourceTags")
def list_resource_tags(svc: Service, req: Request) -> dict[str, Any]:
    key = svc.authorized_key(req, req.params["KeyId"], allow_alias=False)
    tags = svc.store.get_tags(key.key_id)
    limit = int(req.get("Limit", 50))
    keys = sorted(tags)
    marker = req.get("Marker")
    if marker is not None:
        if marker not in tags:
            raise errors.InvalidMarkerException("The marker is invalid.")
        keys = [k for k in keys if k > marker]
    page = keys[:limit]
    out: dict[str, Any] = {
        "Tags": [{"TagKey": k, "TagValue": tags[k]} for k in page],
        "Truncated": len(keys) > limit,
    }
    if len(keys) > limit:
        out["NextMarker"] = page[-1]
    return out
