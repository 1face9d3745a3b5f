"""Key material rotation as boto3 users see it: EnableKeyRotation, DisableKeyRotation,
GetKeyRotationStatus, RotateKeyOnDemand, ListKeyRotations; every old blob still decrypts.

Automatic rotation by the scheduler is in test_scheduler.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from helpers import raises

DAY = timedelta(days=1)


def _near(when: datetime, expected: datetime, slack: timedelta = timedelta(minutes=1)) -> bool:
    return abs(when - expected) <= slack


def test_a_new_key_does_not_rotate(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is False
    assert status["KeyId"] == key
    assert "NextRotationDate" not in status and "RotationPeriodInDays" not in status
    assert kms.list_key_rotations(KeyId=key)["Rotations"] == []


def test_enable_key_rotation_schedules_the_first_rotation_one_period_ahead(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.enable_key_rotation(KeyId=key)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 365
    first = status["NextRotationDate"]
    assert _near(first, datetime.now(UTC) + 365 * DAY)

    # The same call again must not push the rotation back (think of Terraform re-applying).
    kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=365)
    assert kms.get_key_rotation_status(KeyId=key)["NextRotationDate"] == first

    # A new period counts from the last rotation (here: from when rotation was enabled).
    kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["RotationPeriodInDays"] == 90
    assert _near(status["NextRotationDate"], first - 365 * DAY + 90 * DAY, timedelta(seconds=1))

    kms.disable_key_rotation(KeyId=key)
    status = kms.get_key_rotation_status(KeyId=key)
    assert status["KeyRotationEnabled"] is False
    assert "NextRotationDate" not in status


def test_rotation_period_above_2560_days_is_a_validation_error(kms):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    with raises("ValidationException", "rotationPeriodInDays"):
        kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=2561)
    kms.enable_key_rotation(KeyId=key, RotationPeriodInDays=2560)


def test_rotation_period_below_90_days_is_a_validation_error(library):
    # Over HTTP, boto3 itself refuses a value under the model's minimum before sending it.
    key = library.create_key()["KeyMetadata"]["KeyId"]
    with raises("ValidationException", "greater than or equal to 90"):
        library.enable_key_rotation(KeyId=key, RotationPeriodInDays=89)
    library.enable_key_rotation(KeyId=key, RotationPeriodInDays=90)


def test_rotation_operations_take_a_key_id_or_arn_not_an_alias(kms):
    meta = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/rotate-by-alias", TargetKeyId=meta["KeyId"])
    for call in (
        kms.enable_key_rotation,
        kms.rotate_key_on_demand,
        kms.list_key_rotations,
        kms.get_key_rotation_status,
    ):
        with raises("NotFoundException"):
            call(KeyId="alias/rotate-by-alias")
    kms.enable_key_rotation(KeyId=meta["Arn"])
    assert kms.get_key_rotation_status(KeyId=meta["Arn"])["KeyRotationEnabled"] is True


def test_key_states_as_aws_key_state_table_says(kms):
    key = kms.create_key()["KeyMetadata"]
    kid, arn = key["KeyId"], key["Arn"]
    kms.enable_key_rotation(KeyId=kid)

    kms.disable_key(KeyId=kid)
    for call in (kms.enable_key_rotation, kms.disable_key_rotation, kms.rotate_key_on_demand):
        with raises("DisabledException", f"{arn} is disabled."):
            call(KeyId=kid)
    # The status does not change while the key is disabled.
    assert kms.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is True
    kms.enable_key(KeyId=kid)

    kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    for call in (kms.enable_key_rotation, kms.disable_key_rotation, kms.rotate_key_on_demand):
        with raises("KMSInvalidStateException", f"{arn} is pending deletion."):
            call(KeyId=kid)
    # Pending deletion reads as false; ListKeyRotations still answers.
    assert kms.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is False
    assert kms.list_key_rotations(KeyId=kid)["Rotations"] == []
    kms.cancel_key_deletion(KeyId=kid)
    assert kms.get_key_rotation_status(KeyId=kid)["KeyRotationEnabled"] is True


def test_each_rotation_makes_a_new_current_material_and_every_old_blob_still_decrypts(kms):
    key = kms.create_key()["KeyMetadata"]
    kid = key["KeyId"]
    materials = [key["CurrentKeyMaterialId"]]
    blobs = [kms.encrypt(KeyId=kid, Plaintext=b"blob 0")["CiphertextBlob"]]
    data_key = kms.generate_data_key(KeyId=kid, KeySpec="AES_256")
    assert data_key["KeyMaterialId"] == materials[0]
    for n in (1, 2, 3):
        assert kms.rotate_key_on_demand(KeyId=kid)["KeyId"] == kid
        current = kms.describe_key(KeyId=kid)["KeyMetadata"]["CurrentKeyMaterialId"]
        assert current not in materials
        materials.append(current)
        out = kms.encrypt(KeyId=kid, Plaintext=f"blob {n}".encode())
        blobs.append(out["CiphertextBlob"])

    for n, (blob, material) in enumerate(zip(blobs, materials, strict=True)):
        out = kms.decrypt(CiphertextBlob=blob)
        assert out["Plaintext"] == f"blob {n}".encode()
        assert out["KeyMaterialId"] == material
    old = kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])
    assert (old["Plaintext"], old["KeyMaterialId"]) == (data_key["Plaintext"], materials[0])


def test_list_key_rotations_lists_them_oldest_first_a_page_at_a_time(kms):
    key = kms.create_key()["KeyMetadata"]
    kid, first = key["KeyId"], key["CurrentKeyMaterialId"]
    rotated = []
    for _ in range(3):
        kms.rotate_key_on_demand(KeyId=kid)
        rotated.append(kms.describe_key(KeyId=kid)["KeyMetadata"]["CurrentKeyMaterialId"])

    out = kms.list_key_rotations(KeyId=kid)
    assert out["Truncated"] is False and "NextMarker" not in out
    rotations = out["Rotations"]
    assert [r["KeyMaterialId"] for r in rotations] == rotated
    assert {r["KeyId"] for r in rotations} == {kid}
    assert {r["RotationType"] for r in rotations} == {"ON_DEMAND"}
    assert [r["KeyMaterialState"] for r in rotations] == ["NON_CURRENT", "NON_CURRENT", "CURRENT"]
    dates = [r["RotationDate"] for r in rotations]
    assert dates == sorted(dates) and _near(dates[-1], datetime.now(UTC))

    page = kms.list_key_rotations(KeyId=kid, Limit=2)
    assert page["Truncated"] is True
    assert [r["KeyMaterialId"] for r in page["Rotations"]] == rotated[:2]
    rest = kms.list_key_rotations(KeyId=kid, Limit=2, Marker=page["NextMarker"])
    assert [r["KeyMaterialId"] for r in rest["Rotations"]] == rotated[2:]
    assert rest["Truncated"] is False

    every = kms.list_key_rotations(KeyId=kid, IncludeKeyMaterial="ALL_KEY_MATERIAL")["Rotations"]
    assert [r["KeyMaterialId"] for r in every] == [first, *rotated]
    # The first material was no rotation: no RotationDate or RotationType (as AWS).
    assert "RotationDate" not in every[0] and "RotationType" not in every[0]

    with raises("InvalidMarkerException"):
        kms.list_key_rotations(KeyId=kid, Marker="not-a-marker")


def test_re_encrypt_moves_a_blob_onto_the_newest_material_and_onto_another_key(kms):
    source = kms.create_key()["KeyMetadata"]
    other = kms.create_key()["KeyMetadata"]
    old_material = source["CurrentKeyMaterialId"]
    blob = kms.encrypt(KeyId=source["KeyId"], Plaintext=b"move me")["CiphertextBlob"]
    kms.rotate_key_on_demand(KeyId=source["KeyId"])
    newest = kms.describe_key(KeyId=source["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]

    same_key = kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=source["KeyId"])
    assert same_key["SourceKeyMaterialId"] == old_material
    assert same_key["DestinationKeyMaterialId"] == newest
    out = kms.decrypt(CiphertextBlob=same_key["CiphertextBlob"])
    assert (out["Plaintext"], out["KeyMaterialId"]) == (b"move me", newest)

    kms.rotate_key_on_demand(KeyId=other["KeyId"])
    other_newest = kms.describe_key(KeyId=other["KeyId"])["KeyMetadata"]["CurrentKeyMaterialId"]
    moved = kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=other["KeyId"])
    assert moved["SourceKeyMaterialId"] == old_material
    assert moved["DestinationKeyMaterialId"] == other_newest
    out = kms.decrypt(CiphertextBlob=moved["CiphertextBlob"])
    assert (out["KeyId"], out["KeyMaterialId"]) == (other["Arn"], other_newest)


def test_a_key_rotates_on_demand_at_most_25_times(kms):
    kid = kms.create_key()["KeyMetadata"]["KeyId"]
    for _ in range(25):
        kms.rotate_key_on_demand(KeyId=kid)
    before = kms.describe_key(KeyId=kid)["KeyMetadata"]["CurrentKeyMaterialId"]
    with raises("LimitExceededException", "25 on-demand rotations"):
        kms.rotate_key_on_demand(KeyId=kid)
    assert kms.describe_key(KeyId=kid)["KeyMetadata"]["CurrentKeyMaterialId"] == before
    assert len(kms.list_key_rotations(KeyId=kid)["Rotations"]) == 25


def test_only_get_key_rotation_status_works_across_accounts(library):
    import json

    from hsmkms.kms import Caller

    own = library.caller.account_id
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{own}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
        ],
    }
    key = library.create_key(Policy=json.dumps(policy))["KeyMetadata"]
    stranger = library.as_caller(Caller("999999999999", "arn:aws:iam::999999999999:root"))
    assert stranger.get_key_rotation_status(KeyId=key["Arn"])["KeyRotationEnabled"] is False
    for operation in (
        "enable_key_rotation",
        "disable_key_rotation",
        "rotate_key_on_demand",
        "list_key_rotations",
    ):
        with raises("NotFoundException"):
            getattr(stranger, operation)(KeyId=key["Arn"])


def test_a_blob_under_a_material_another_process_rotated_in_decrypts_at_once(
    library, settings, token
):
    from hsmkms.compose import build_service
    from hsmkms.kms import KMS
    from hsmkms.store import open_store

    # Another worker on the same store: its own connection, and its own cache of records.
    other = build_service(settings, token, open_store(settings.store_path))
    try:
        elsewhere = KMS.from_service(other)
        kid = library.create_key()["KeyMetadata"]["KeyId"]
        first = library.encrypt(KeyId=kid, Plaintext=b"before")["CiphertextBlob"]
        assert library.decrypt(CiphertextBlob=first)["Plaintext"] == b"before"
        elsewhere.rotate_key_on_demand(KeyId=kid)
        newest = elsewhere.describe_key(KeyId=kid)["KeyMetadata"]["CurrentKeyMaterialId"]
        blob = elsewhere.encrypt(KeyId=kid, Plaintext=b"after")["CiphertextBlob"]
        out = library.decrypt(CiphertextBlob=blob)
        assert (out["Plaintext"], out["KeyMaterialId"]) == (b"after", newest)
    finally:
        other.pool.close()
        other.store.close()
