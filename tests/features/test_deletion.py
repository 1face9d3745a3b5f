"""After its waiting period a key is deleted: its material leaves the token, its blobs answer
NotFoundException (not InvalidCiphertextException, not a crash)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from helpers import raises


def test_sweeper_destroys_token_objects_after_the_waiting_period(library, service, token):
    key = library.create_key()["KeyMetadata"]
    blob = library.encrypt(KeyId=key["KeyId"], Plaintext=b"bye")["CiphertextBlob"]
    library.create_alias(AliasName="alias/doomed", TargetKeyId=key["KeyId"])
    material = bytes.fromhex(key["CurrentKeyMaterialId"])
    assert token.has_master_key(material)

    library.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert key["KeyId"] not in service.sweep()  # not due yet
    assert token.has_master_key(material)

    service.store.update_key(key["KeyId"], deletion_date=datetime.now(UTC) - timedelta(seconds=1))
    assert service.sweep() == [key["KeyId"]]
    assert not token.has_master_key(material)
    assert material not in {m for m, _label in token.list_master_keys()}
    with raises("NotFoundException"):
        library.describe_key(KeyId=key["KeyId"])
    with raises("NotFoundException"):
        library.describe_key(KeyId="alias/doomed")
    with raises("NotFoundException"):
        library.decrypt(CiphertextBlob=blob)
    assert service.sweep() == []
