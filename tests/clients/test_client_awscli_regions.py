"""The AWS CLI across Regions of one hsmkms endpoint (issue 17): ``--region`` picks the SigV4
scope, a multi-Region key made in us-east-1 is replicated to us-west-2 with ``replicate-key``,
and a blob made in one Region decrypts through the replica with ``--region us-west-2``."""

from __future__ import annotations

import base64

import pytest
from server import ServerProcess
from test_client_awscli import AwsCli


@pytest.fixture(scope="module")
def cli(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> AwsCli:
    return AwsCli(server, tmp_path_factory.mktemp("aws-cli-regions"))


def test_the_cli_replicates_a_key_and_decrypts_in_another_region(cli: AwsCli):
    key = cli.json("create-key", "--multi-region", "--region", "us-east-1")["KeyMetadata"]
    key_id = key["KeyId"]
    assert key_id.startswith("mrk-") and key["MultiRegion"] is True
    replica = cli.json(
        "replicate-key", "--key-id", key_id, "--replica-region", "us-west-2",
        "--region", "us-east-1",
    )["ReplicaKeyMetadata"]  # fmt: skip
    assert replica["Arn"] == key["Arn"].replace("us-east-1", "us-west-2")
    (cli.workdir / "plain.txt").write_text("across regions")
    blob = cli.json(
        "encrypt", "--key-id", key_id, "--plaintext", "fileb://plain.txt", "--region", "us-east-1"
    )
    out = cli.json(
        "decrypt", "--ciphertext-blob", cli.blob_file(blob["CiphertextBlob"]),
        "--region", "us-west-2",
    )  # fmt: skip
    assert base64.b64decode(out["Plaintext"]) == b"across regions"
    assert out["KeyId"] == replica["Arn"]
    moved = cli.run(
        "update-primary-region", "--key-id", key_id, "--primary-region", "us-west-2",
        "--region", "us-east-1",
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    described = cli.json("describe-key", "--key-id", key_id, "--region", "us-west-2")
    assert described["KeyMetadata"]["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"
    usage = cli.json("get-key-last-usage", "--key-id", key_id, "--region", "us-west-2")
    assert usage["KeyLastUsage"]["Operation"] == "Decrypt"
    proc = cli.run("describe-key", "--key-id", key_id, "--region", "eu-west-1")
    assert proc.returncode != 0 and "NotFoundException" in proc.stderr
