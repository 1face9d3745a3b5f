"""Tags on KMS keys: TagResource, UntagResource, ListResourceTags, with AWS's tag rules."""

from __future__ import annotations

from helpers import raises


def _tags(kms, key: str) -> dict[str, str]:
    return {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key)["Tags"]}


def test_tag_untag_and_list_a_key(kms):
    key = kms.create_key(Tags=[{"TagKey": "env", "TagValue": "ci"}])["KeyMetadata"]["KeyId"]
    kms.tag_resource(
        KeyId=key, Tags=[{"TagKey": "team", "TagValue": "pay"}, {"TagKey": "Team", "TagValue": ""}]
    )
    assert _tags(kms, key) == {"env": "ci", "team": "pay", "Team": ""}  # case-sensitive
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "team", "TagValue": "ops"}])  # replaces
    kms.untag_resource(KeyId=key, TagKeys=["env", "never-there"])  # absent keys are fine
    assert _tags(kms, key) == {"team": "ops", "Team": ""}


def test_tag_keys_beginning_with_aws_are_reserved_in_any_case(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    for tag_key in ("aws:owner", "AWS:owner", "Aws:x"):
        with raises("TagException", "reserved"):
            kms.tag_resource(KeyId=key, Tags=[{"TagKey": tag_key, "TagValue": "x"}])
        with raises("TagException", "reserved"):
            kms.create_key(Tags=[{"TagKey": tag_key, "TagValue": "x"}])
        with raises("TagException", "reserved"):
            kms.untag_resource(KeyId=key, TagKeys=[tag_key])
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "owner", "TagValue": "aws:is-fine-here"}])


def test_tag_key_and_value_lengths_are_the_models(kms, library):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    with raises("ValidationException", "tagKey"):
        kms.tag_resource(KeyId=key, Tags=[{"TagKey": "k" * 129, "TagValue": ""}])
    with raises("ValidationException", "tagValue"):
        kms.tag_resource(KeyId=key, Tags=[{"TagKey": "k", "TagValue": "v" * 257}])
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "k" * 128, "TagValue": "v" * 256}])
    # boto3 refuses an empty key before sending it; the library answers as AWS does.
    lib_key = library.create_key()["KeyMetadata"]["KeyId"]
    with raises("ValidationException", "tagKey"):
        library.tag_resource(KeyId=lib_key, Tags=[{"TagKey": "", "TagValue": "v"}])


def test_a_key_has_at_most_50_tags(kms):
    fifty = [{"TagKey": f"t{n:02}", "TagValue": str(n)} for n in range(50)]
    with raises("TagException", "at most 50"):
        kms.create_key(Tags=[*fifty, {"TagKey": "one-more", "TagValue": ""}])
    key = kms.create_key(Tags=fifty)["KeyMetadata"]["KeyId"]
    with raises("LimitExceededException", "at most 50"):
        kms.tag_resource(
            KeyId=key,
            Tags=[{"TagKey": "one-more", "TagValue": ""}, {"TagKey": "t00", "TagValue": "changed"}],
        )
    assert _tags(kms, key)["t00"] == "0"  # nothing of a refused request is written
    kms.tag_resource(KeyId=key, Tags=[{"TagKey": "t00", "TagValue": "changed"}])
    assert _tags(kms, key)["t00"] == "changed"


def test_the_same_tag_key_twice_in_one_request_is_a_tag_exception(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    with raises("TagException", "Duplicate"):
        kms.tag_resource(
            KeyId=key, Tags=[{"TagKey": "a", "TagValue": "1"}, {"TagKey": "a", "TagValue": "2"}]
        )


def test_a_key_pending_deletion_keeps_its_tags_readonly(kms):
    key = kms.create_key(Tags=[{"TagKey": "env", "TagValue": "ci"}])["KeyMetadata"]
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    with raises("KMSInvalidStateException", "pending deletion"):
        kms.tag_resource(KeyId=key["KeyId"], Tags=[{"TagKey": "a", "TagValue": "b"}])
    with raises("KMSInvalidStateException", "pending deletion"):
        kms.untag_resource(KeyId=key["KeyId"], TagKeys=["env"])
    assert _tags(kms, key["KeyId"]) == {"env": "ci"}


def test_tags_are_addressed_by_key_id_or_arn_not_alias(kms):
    meta = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/tagged", TargetKeyId=meta["KeyId"])
    with raises("NotFoundException"):
        kms.tag_resource(KeyId="alias/tagged", Tags=[{"TagKey": "a", "TagValue": "b"}])
    kms.tag_resource(KeyId=meta["Arn"], Tags=[{"TagKey": "a", "TagValue": "b"}])
    assert _tags(kms, meta["Arn"]) == {"a": "b"}


def test_list_resource_tags_pages_through_any_tag_keys(kms):
    names = ["alpha", "Zulu", "日本", "ümlaut", "emoji-\U0001f511", "a b", "x=y+z@w"]
    key = kms.create_key(Tags=[{"TagKey": n, "TagValue": n} for n in names])["KeyMetadata"]
    seen: list[str] = []
    marker = None
    while True:
        page = kms.list_resource_tags(
            KeyId=key["KeyId"], Limit=2, **({"Marker": marker} if marker else {})
        )
        assert len(page["Tags"]) <= 2
        seen += [t["TagKey"] for t in page["Tags"]]
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert seen == sorted(names)
    with raises("ValidationException", "less than or equal to 50"):
        kms.list_resource_tags(KeyId=key["KeyId"], Limit=51)
    with raises("InvalidMarkerException"):
        kms.list_resource_tags(KeyId=key["KeyId"], Marker="%%%")
