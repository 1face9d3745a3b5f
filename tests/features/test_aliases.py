"""Aliases: names, uniqueness, moving, deleting, listing."""

from __future__ import annotations

import uuid

import pytest
from helpers import raises


def _name(prefix: str = "a") -> str:
    return f"alias/{prefix}-{uuid.uuid4().hex[:12]}"


def test_alias_lifecycle(kms):
    k1 = kms.create_key()["KeyMetadata"]
    k2 = kms.create_key()["KeyMetadata"]
    name = _name()
    kms.create_alias(AliasName=name, TargetKeyId=k1["Arn"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == k1["KeyId"]
    with raises("AlreadyExistsException", "already exists"):
        kms.create_alias(AliasName=name, TargetKeyId=k2["KeyId"])
    kms.update_alias(AliasName=name, TargetKeyId=k2["KeyId"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == k2["KeyId"]
    listed = kms.list_aliases(KeyId=k2["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in listed] == [name]
    entry = listed[0]
    assert entry["TargetKeyId"] == k2["KeyId"]
    assert entry["AliasArn"] == k2["Arn"].split(":key/")[0] + ":" + name
    assert entry["LastUpdatedDate"] >= entry["CreationDate"]
    kms.delete_alias(AliasName=name)
    with raises("NotFoundException", "is not found"):
        kms.describe_key(KeyId=name)
    with raises("NotFoundException"):
        kms.delete_alias(AliasName=name)


def test_alias_names_follow_aws_rules(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    with raises("ValidationException", 'prefix "alias/"'):
        kms.create_alias(AliasName="no-prefix", TargetKeyId=key)
    with raises("InvalidAliasNameException", "reserved"):
        kms.create_alias(AliasName="alias/aws/mine", TargetKeyId=key)
    with raises("NotFoundException"):
        kms.create_alias(AliasName=_name(), TargetKeyId="11111111-2222-3333-4444-555555555555")


@pytest.mark.parametrize("bad", ["alias/has space", "alias/ünï"])
def test_alias_names_with_forbidden_characters_are_refused(kms, bad):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(Exception) as info:
        kms.create_alias(AliasName=bad, TargetKeyId=key)
    code = info.value.response["Error"]["Code"]  # type: ignore[attr-defined]
    assert code in ("ValidationException", "InvalidAliasNameException")


def test_list_aliases_paginates(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    names = sorted(_name("page") for _ in range(5))
    for n in names:
        kms.create_alias(AliasName=n, TargetKeyId=key)
    seen, marker = [], None
    while True:
        page = kms.list_aliases(KeyId=key, Limit=2, **({"Marker": marker} if marker else {}))
        seen += [a["AliasName"] for a in page["Aliases"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert seen == names


def test_alias_cannot_target_key_pending_deletion(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    with raises("KMSInvalidStateException"):
        kms.create_alias(AliasName=_name(), TargetKeyId=key)
