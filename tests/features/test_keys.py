"""CreateKey, DescribeKey, ListKeys and the key states, as boto3 users see them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from helpers import raises


def test_create_key_returns_full_metadata(kms):
    meta = kms.create_key(Description="orders", Tags=[{"TagKey": "team", "TagValue": "a"}])[
        "KeyMetadata"
    ]
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", meta["KeyId"]
    )
    assert meta["Arn"].endswith(":key/" + meta["KeyId"])
    assert meta["Arn"].startswith(f"arn:aws:kms:us-east-1:{meta['AWSAccountId']}:")
    assert isinstance(meta["CreationDate"], datetime)
    assert meta["Enabled"] is True
    assert meta["KeyState"] == "Enabled"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["KeyManager"] == "CUSTOMER"
    assert meta["Origin"] == "AWS_KMS"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert re.fullmatch(r"[0-9a-f]{64}", meta["CurrentKeyMaterialId"])
    assert meta["Description"] == "orders"


def test_describe_key_accepts_id_arn_alias_and_alias_arn(kms):
    meta = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/describe-me", TargetKeyId=meta["KeyId"])
    alias_arn = meta["Arn"].split(":key/")[0] + ":alias/describe-me"
    for ident in (meta["KeyId"], meta["Arn"], "alias/describe-me", alias_arn):
        assert kms.describe_key(KeyId=ident)["KeyMetadata"]["KeyId"] == meta["KeyId"]


def test_unknown_keys_are_not_found(kms):
    meta = kms.create_key()["KeyMetadata"]
    with raises("NotFoundException", "does not exist"):
        kms.describe_key(KeyId="11111111-2222-3333-4444-555555555555")
    with raises("NotFoundException"):
        kms.describe_key(KeyId="alias/never-made")
    other_region = meta["Arn"].replace(":us-east-1:", ":eu-west-1:")
    with raises("NotFoundException"):
        kms.describe_key(KeyId=other_region)
    other_account = re.sub(r":\d{12}:", ":999999999999:", meta["Arn"])
    with raises("NotFoundException"):
        kms.describe_key(KeyId=other_account)
    with raises("NotFoundException"):
        kms.describe_key(KeyId="not-a-key-id")


def test_list_keys_paginates_with_markers(kms):
    made = {kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(5)}
    seen: list[str] = []
    marker = None
    while True:
        kwargs = {"Limit": 2} | ({"Marker": marker} if marker else {})
        page = kms.list_keys(**kwargs)
        assert len(page["Keys"]) <= 2
        seen += [k["KeyId"] for k in page["Keys"]]
        for k in page["Keys"]:
            assert k["KeyArn"].endswith(k["KeyId"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert made <= set(seen)
    assert len(seen) == len(set(seen))
    with raises("InvalidMarkerException"):
        kms.list_keys(Marker="garbage!")


def test_disable_enable_cycle(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.disable_key(KeyId=key)
    meta = kms.describe_key(KeyId=key)["KeyMetadata"]
    assert (meta["KeyState"], meta["Enabled"]) == ("Disabled", False)
    with raises("DisabledException", "is disabled"):
        kms.encrypt(KeyId=key, Plaintext=b"x")
    with raises("DisabledException"):
        kms.generate_data_key_pair(KeyId=key, KeyPairSpec="ECC_NIST_P256")
    kms.enable_key(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    kms.encrypt(KeyId=key, Plaintext=b"x")


def test_schedule_and_cancel_deletion(kms):
    key = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"keep me")["CiphertextBlob"]
    out = kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert out["KeyId"] == key["Arn"]
    assert out["KeyState"] == "PendingDeletion"
    assert out["PendingWindowInDays"] == 7
    delta = out["DeletionDate"] - key["CreationDate"]
    assert timedelta(days=6, hours=23) < delta < timedelta(days=7, hours=1)
    meta = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    assert meta["DeletionDate"] == out["DeletionDate"]
    with raises("KMSInvalidStateException", "pending deletion"):
        kms.decrypt(CiphertextBlob=blob)
    with raises("KMSInvalidStateException"):
        kms.generate_data_key_without_plaintext(KeyId=key["KeyId"], KeySpec="AES_256")
    with raises("KMSInvalidStateException"):
        kms.enable_key(KeyId=key["KeyId"])
    with raises("KMSInvalidStateException"):
        kms.schedule_key_deletion(KeyId=key["KeyId"])
    assert kms.cancel_key_deletion(KeyId=key["KeyId"])["KeyId"] == key["Arn"]
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    with raises("KMSInvalidStateException", "not pending deletion"):
        kms.cancel_key_deletion(KeyId=key["KeyId"])
    kms.enable_key(KeyId=key["KeyId"])
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"keep me"


@pytest.mark.parametrize("days", [6, 31])
def test_deletion_window_outside_7_to_30_days_is_invalid(kms, days):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    with raises("ValidationException", "pendingWindowInDays"):
        kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=days)


def test_default_deletion_window_is_30_days(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    assert kms.schedule_key_deletion(KeyId=key)["PendingWindowInDays"] == 30


def test_update_key_description(kms):
    key = kms.create_key(Description="old")["KeyMetadata"]["KeyId"]
    kms.update_key_description(KeyId=key, Description="new")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["Description"] == "new"


def test_unsupported_key_specs_say_so(kms):
    with raises("UnsupportedOperationException", "SM2"):
        kms.create_key(KeySpec="SM2", KeyUsage="SIGN_VERIFY")
    with raises("ValidationException", "CustomKeyStoreId"):  # a custom key store's origin
        kms.create_key(Origin="AWS_CLOUDHSM")


def test_tags_are_stored_and_aws_prefix_is_reserved(kms):
    key = kms.create_key(Tags=[{"TagKey": "env", "TagValue": "ci"}])["KeyMetadata"]["KeyId"]
    assert kms.list_resource_tags(KeyId=key)["Tags"] == [{"TagKey": "env", "TagValue": "ci"}]
    with raises("TagException"):
        kms.create_key(Tags=[{"TagKey": "aws:owner", "TagValue": "x"}])


def test_policy_is_validated(kms):
    with raises("MalformedPolicyDocumentException"):
        kms.create_key(Policy="{not json")
