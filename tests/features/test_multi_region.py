"""Multi-Region keys (issue 17): CreateKey MultiRegion, ReplicateKey, UpdatePrimaryRegion,
DescribeKey's MultiRegionConfiguration, deletion of a primary with replicas, through the
library face (``KMS.in_region``) and boto3 clients per Region against one real server."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from helpers import raises

EAST, WEST, EU = "us-east-1", "us-west-2", "eu-west-1"


@pytest.fixture(scope="module", params=["library", "http"])
def regions(request: pytest.FixtureRequest):
    """A function Region -> a client of that Region, on each face."""
    if request.param == "library":
        library = request.getfixturevalue("library")
        return library.in_region
    server = request.getfixturevalue("server")
    made: dict[str, object] = {}
    return lambda region: made.setdefault(region, server.client(region))


def _mrk(client, **kwargs):
    return client.create_key(MultiRegion=True, **kwargs)["KeyMetadata"]


def test_a_multi_region_key_has_an_mrk_id_and_is_its_own_primary(regions):
    meta = _mrk(regions(EAST), Description="primary")
    assert re.fullmatch(r"mrk-[0-9a-f]{32}", meta["KeyId"])
    assert meta["MultiRegion"] is True
    config = meta["MultiRegionConfiguration"]
    assert config["MultiRegionKeyType"] == "PRIMARY"
    assert config["PrimaryKey"] == {"Arn": meta["Arn"], "Region": EAST}
    assert config["ReplicaKeys"] == []
    single = regions(EAST).create_key()["KeyMetadata"]
    assert single["MultiRegion"] is False and "MultiRegionConfiguration" not in single


def test_a_replica_decrypts_what_the_primary_encrypted_and_back(regions):
    east, west = regions(EAST), regions(WEST)
    primary = _mrk(east)
    key_id = primary["KeyId"]
    out = east.replicate_key(KeyId=key_id, ReplicaRegion=WEST, Description="replica")
    meta = out["ReplicaKeyMetadata"]
    assert meta["KeyId"] == key_id and meta["Arn"] == primary["Arn"].replace(EAST, WEST)
    assert meta["KeyState"] == "Creating"  # as AWS answers; usable at once here
    assert meta["MultiRegionConfiguration"]["MultiRegionKeyType"] == "REPLICA"
    assert '"kms:*"' in out["ReplicaPolicy"] and out["ReplicaTags"] == []
    described = west.describe_key(KeyId=key_id)["KeyMetadata"]
    assert described["KeyState"] == "Enabled" and described["Description"] == "replica"
    blob = east.encrypt(KeyId=key_id, Plaintext=b"from the east")["CiphertextBlob"]
    assert west.decrypt(CiphertextBlob=blob)["Plaintext"] == b"from the east"
    back = west.encrypt(KeyId=meta["Arn"], Plaintext=b"from the west")["CiphertextBlob"]
    assert east.decrypt(CiphertextBlob=back, KeyId=key_id)["Plaintext"] == b"from the west"
    dk = west.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert east.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == dk["Plaintext"]
    # A Region without a replica knows nothing of the key or its blobs.
    eu = regions(EU)
    with raises("NotFoundException"):
        eu.describe_key(KeyId=key_id)
    with raises("InvalidCiphertextException"):
        eu.decrypt(CiphertextBlob=blob)
    config = east.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
    assert config["ReplicaKeys"] == [{"Arn": meta["Arn"], "Region": WEST}]


def test_policy_tags_aliases_description_and_state_are_per_region(regions):
    east, west = regions(EAST), regions(WEST)
    key_id = _mrk(east, Tags=[{"TagKey": "side", "TagValue": "east"}])["KeyId"]
    east.replicate_key(
        KeyId=key_id, ReplicaRegion=WEST, Tags=[{"TagKey": "side", "TagValue": "west"}]
    )
    assert east.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "side", "TagValue": "east"}]
    assert west.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "side", "TagValue": "west"}]
    name = f"alias/mrk-{key_id[4:12]}"
    west.create_alias(AliasName=name, TargetKeyId=key_id)
    assert west.describe_key(KeyId=name)["KeyMetadata"]["Arn"].split(":")[3] == WEST
    with raises("NotFoundException"):
        east.describe_key(KeyId=name)
    aliases = west.list_aliases(KeyId=key_id)["Aliases"]
    assert [(a["AliasName"], a["TargetKeyId"]) for a in aliases] == [(name, key_id)]
    west.disable_key(KeyId=key_id)
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    with raises("DisabledException"):
        west.encrypt(KeyId=key_id, Plaintext=b"x")
    east.encrypt(KeyId=key_id, Plaintext=b"x")
    west.enable_key(KeyId=key_id)
    west.update_key_description(KeyId=key_id, Description="west only")
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == ""
    policy = west.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
    assert policy == east.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
    grant = west.create_grant(
        KeyId=key_id,
        GranteePrincipal="arn:aws:iam::111122223333:role/west",
        Operations=["Encrypt"],
    )["GrantId"]
    assert [g["GrantId"] for g in west.list_grants(KeyId=key_id)["Grants"]] == [grant]
    assert east.list_grants(KeyId=key_id)["Grants"] == []
    listed = {k["KeyId"] for k in west.list_keys(Limit=1000)["Keys"]}
    assert key_id in listed


def test_replicate_key_refuses_what_aws_refuses(regions):
    east, west = regions(EAST), regions(WEST)
    single = east.create_key()["KeyMetadata"]["KeyId"]
    with raises("UnsupportedOperationException", "not a multi-Region key"):
        east.replicate_key(KeyId=single, ReplicaRegion=WEST)
    key_id = _mrk(east)["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    with raises("AlreadyExistsException"):
        east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    with raises("ValidationException"):
        east.replicate_key(KeyId=key_id, ReplicaRegion=EAST)
    with raises("UnsupportedOperationException", "replica"):
        west.replicate_key(KeyId=key_id, ReplicaRegion=EU)
    with raises("NotFoundException"):
        regions(EU).replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    with raises("UnsupportedOperationException", "rotation"):
        west.enable_key_rotation(KeyId=key_id)
    with raises("UnsupportedOperationException", "EXTERNAL"):
        east.create_key(MultiRegion=True, Origin="EXTERNAL")


def test_rotation_is_shared_with_the_replicas(regions):
    east, west = regions(EAST), regions(WEST)
    key_id = _mrk(east)["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    old = east.encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]
    east.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=100)
    status = west.get_key_rotation_status(KeyId=key_id)
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 100
    east.rotate_key_on_demand(KeyId=key_id)
    current = east.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]
    assert west.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == current
    new = west.encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"]
    assert east.decrypt(CiphertextBlob=new)["Plaintext"] == b"after"
    assert west.decrypt(CiphertextBlob=old)["Plaintext"] == b"before"


def test_update_primary_region_swaps_the_roles(regions):
    east, west = regions(EAST), regions(WEST)
    key_id = _mrk(east)["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    with raises("NotFoundException"):
        east.update_primary_region(KeyId=key_id, PrimaryRegion=EU)
    east.update_primary_region(KeyId=key_id, PrimaryRegion=WEST)
    for client, kind in ((west, "PRIMARY"), (east, "REPLICA")):
        config = client.describe_key(KeyId=key_id)["KeyMetadata"]["MultiRegionConfiguration"]
        assert config["MultiRegionKeyType"] == kind
        assert config["PrimaryKey"]["Region"] == WEST
        assert [r["Region"] for r in config["ReplicaKeys"]] == [EAST]
    west.replicate_key(KeyId=key_id, ReplicaRegion=EU)  # only the primary replicates now
    with raises("UnsupportedOperationException", "replica"):
        east.replicate_key(KeyId=key_id, ReplicaRegion="ap-south-1")
    blob = regions(EU).encrypt(KeyId=key_id, Plaintext=b"eu")["CiphertextBlob"]
    assert east.decrypt(CiphertextBlob=blob)["Plaintext"] == b"eu"


def test_a_primary_with_replicas_waits_for_them_to_be_deleted(library, service):
    """The library face only: the deletion sweep runs in this process, at a chosen time."""
    from hsmkms.service.keys import sweep

    east, west = library.in_region(EAST), library.in_region(WEST)
    key_id = _mrk(east)["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    blob = east.encrypt(KeyId=key_id, Plaintext=b"kept")["CiphertextBlob"]
    out = east.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    assert out["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in out
    meta = east.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingReplicaDeletion" and "DeletionDate" not in meta
    with raises("KMSInvalidStateException"):
        east.encrypt(KeyId=key_id, Plaintext=b"x")
    east.cancel_key_deletion(KeyId=key_id)
    assert east.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    east.enable_key(KeyId=key_id)
    east.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    west.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    # Past the replica's waiting period: the replica goes, its materials stay (the primary
    # holds them), and the primary starts its own waiting period.
    due = west.describe_key(KeyId=key_id)["KeyMetadata"]["DeletionDate"]
    at = due + timedelta(seconds=1)
    assert key_id in sweep(service, at=at)
    with raises("NotFoundException"):
        west.describe_key(KeyId=key_id)
    meta = east.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion" and meta["DeletionDate"] > at
    assert meta["MultiRegionConfiguration"]["ReplicaKeys"] == []
    assert not service.store.was_deleted(key_id)
    east.cancel_key_deletion(KeyId=key_id)
    east.enable_key(KeyId=key_id)
    assert east.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"
    # The last record goes with the materials, and leaves the key's tombstone.
    materials = [m.material_id for m in service.store.materials(key_id)]
    east.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    due = east.describe_key(KeyId=key_id)["KeyMetadata"]["DeletionDate"]
    assert key_id in sweep(service, at=due + timedelta(seconds=1))
    assert service.store.was_deleted(key_id) and service.store.materials(key_id) == []
    assert all(not service.masters.ready(m) for m in materials)
    with raises("NotFoundException", "deleted"):
        east.decrypt(CiphertextBlob=blob)


def test_policies_see_the_multi_region_condition_keys(regions):
    import json

    east, west = regions(EAST), regions(WEST)
    account = east.describe_key(KeyId=_mrk(east)["KeyId"])["KeyMetadata"]["AWSAccountId"]

    def policy(*denies: dict) -> str:
        allow = {
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }
        return json.dumps({"Version": "2012-10-17", "Statement": [allow, *denies]})

    no_eu = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:ReplicateKey",
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:ReplicaRegion": EU}},
    }
    key_id = _mrk(east, Policy=policy(no_eu))["KeyId"]
    with raises("AccessDeniedException"):
        east.replicate_key(KeyId=key_id, ReplicaRegion=EU)
    no_replica_encrypt = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:Encrypt",
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:MultiRegionKeyType": "REPLICA"}},
    }
    out = east.replicate_key(KeyId=key_id, ReplicaRegion=WEST, Policy=policy(no_replica_encrypt))
    assert json.loads(out["ReplicaPolicy"])["Statement"][1]["Condition"]
    with raises("AccessDeniedException"):
        west.encrypt(KeyId=key_id, Plaintext=b"x")
    blob = east.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    assert west.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_a_primary_and_its_replica_track_their_last_use_apart(regions):
    east, west = regions(EAST), regions(WEST)
    key_id = _mrk(east)["KeyId"]
    east.replicate_key(KeyId=key_id, ReplicaRegion=WEST)
    blob = east.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    west.decrypt(CiphertextBlob=blob)
    assert east.get_key_last_usage(KeyId=key_id)["KeyLastUsage"]["Operation"] == "Encrypt"
    assert west.get_key_last_usage(KeyId=key_id)["KeyLastUsage"]["Operation"] == "Decrypt"
