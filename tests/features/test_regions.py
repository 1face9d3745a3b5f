"""One endpoint, several Regions (issue 17, its Regions part): a request runs in the Region of
its SigV4 scope; keys, aliases and ARNs live in (account, Region), as in AWS, where a KMS key
is never usable from another Region, by id or by ARN. boto3 clients per Region against one
real server, and the library face's ``in_region``."""

from __future__ import annotations

import pytest
from helpers import raises
from server import ServerProcess

WEST, EAST = "us-west-2", "us-east-1"


@pytest.fixture(scope="module")
def clients(server: ServerProcess):
    return server.client(EAST), server.client(WEST)


def test_a_key_lives_in_the_region_it_was_made_in(clients):
    east, west = clients
    meta = west.create_key(Description="made in us-west-2")["KeyMetadata"]
    assert meta["Arn"].startswith(f"arn:aws:kms:{WEST}:")
    assert west.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Arn"] == meta["Arn"]
    for name in (meta["KeyId"], meta["Arn"]):
        with raises("NotFoundException"):
            east.describe_key(KeyId=name)
    west_ids = {k["KeyId"] for k in west.list_keys(Limit=1000)["Keys"]}
    east_ids = {k["KeyId"] for k in east.list_keys(Limit=1000)["Keys"]}
    assert meta["KeyId"] in west_ids and meta["KeyId"] not in east_ids


def test_a_blob_decrypts_only_in_its_region(clients):
    east, west = clients
    key_id = west.create_key()["KeyMetadata"]["KeyId"]
    blob = west.encrypt(KeyId=key_id, Plaintext=b"regional")["CiphertextBlob"]
    assert west.decrypt(CiphertextBlob=blob)["Plaintext"] == b"regional"
    with raises("InvalidCiphertextException"):
        east.decrypt(CiphertextBlob=blob)


def test_aliases_are_per_region(clients):
    east, west = clients
    east_key = east.create_key()["KeyMetadata"]["KeyId"]
    west_key = west.create_key()["KeyMetadata"]["KeyId"]
    name = f"alias/regional-{west_key[:8]}"
    east.create_alias(AliasName=name, TargetKeyId=east_key)
    west.create_alias(AliasName=name, TargetKeyId=west_key)  # the same name, another Region
    assert east.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == east_key
    assert west.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == west_key
    with raises("NotFoundException"):
        east.create_alias(AliasName=f"{name}-x", TargetKeyId=west_key)
    west_arn = f"arn:aws:kms:{WEST}:" + west.describe_key(KeyId=name)["KeyMetadata"]["Arn"].split(
        ":"
    )[4] + f":{name}"  # fmt: skip
    with raises("NotFoundException"):
        east.describe_key(KeyId=west_arn)


def test_the_library_face_runs_in_its_region_setting_or_in_region(library):
    west = library.in_region(WEST)
    key_id = west.create_key()["KeyMetadata"]["KeyId"]
    assert west.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"].split(":")[3] == WEST
    with raises("NotFoundException"):
        library.describe_key(KeyId=key_id)
    assert library.create_key()["KeyMetadata"]["Arn"].split(":")[3] == library.settings.region


@pytest.mark.slow
def test_the_regions_setting_limits_the_scopes_accepted(tmp_path_factory):
    env = {"HSMKMS_REGIONS": "us-east-1,eu-west-1"}
    with ServerProcess(tmp_path_factory.mktemp("regions-setting"), env=env) as srv:
        assert srv.client("eu-west-1").create_key()["KeyMetadata"]["Arn"].split(":")[3] == (
            "eu-west-1"
        )
        with raises("InvalidSignatureException", "Credential should be scoped to a valid region"):
            srv.client(WEST).list_keys()


def test_the_regions_setting_reads_a_list_a_star_or_refuses_nonsense(tmp_path):
    from hsmkms.config import ConfigError, Settings

    listed = Settings.load(env={}, home=tmp_path, regions="eu-west-1, ap-south-1")
    assert listed.region_set() == {"eu-west-1", "ap-south-1", "us-east-1"}
    config = tmp_path / "settings.toml"
    config.write_text('regions = ["eu-central-1", "us-west-2"]\n')
    assert Settings.load(config, env={}).region_set() == {"eu-central-1", "us-west-2", "us-east-1"}
    everything = Settings.load(env={}, home=tmp_path).region_set()
    assert {"us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1"} <= everything
    with pytest.raises(ConfigError, match="regions"):
        Settings.load(env={}, home=tmp_path, regions="us-east-1; drop table")
