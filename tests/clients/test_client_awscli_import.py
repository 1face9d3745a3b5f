"""docs/import.md as a user runs it (issue 16): the shell blocks of its sections 1 and 2 (the
AWS CLI and OpenSSL, AWS's own import steps) run unchanged by bash against a real hsmkms
server, so that the page cannot drift from what works. Each block's own checks (a decrypt
that must give the material back, ``openssl dgst -verify``) run too, and this test checks
what a user would then look at, with the AWS CLI: the key's state and the blobs.
"""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest
from server import ServerProcess
from test_client_awscli import AwsCli, aws_command

DOC = Path(__file__).resolve().parents[2] / "docs" / "import.md"
_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def blocks(section: str) -> list[str]:
    """The ```sh blocks of the section whose heading starts with ``section``."""
    text = DOC.read_text()
    start = text.index(f"\n## {section}")
    end = text.find("\n## ", start + 1)
    return _BLOCK.findall(text[start : end if end > 0 else None])


def run_doc(cli: AwsCli, script: str) -> str:
    """Run a block as the doc's reader would: `aws` on the PATH, E naming this server."""
    aws_dir = cli.workdir / "bin"
    aws_dir.mkdir(exist_ok=True)
    (aws_dir / "aws").write_text("#!/bin/sh\nexec " + " ".join(aws_command()) + ' "$@"\n')
    (aws_dir / "aws").chmod(0o755)
    env = dict(cli.env, PATH=f"{aws_dir}:{cli.env.get('PATH', '')}")
    header = f'set -eu\nE="--endpoint-url {cli.server.url}"\n'
    done = subprocess.run(
        ["bash", "-c", header + script + '\necho "KEY=$KEY"\n'],
        cwd=cli.workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done.stdout


def key_of(output: str) -> str:
    return re.findall(r"^KEY=(\S+)$", output, re.M)[-1]


@pytest.fixture(scope="module")
def cli(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> AwsCli:
    return AwsCli(server, tmp_path_factory.mktemp("aws-cli-import"))


def test_the_doc_sets_up_the_cli_like_the_readme():
    setup = DOC.read_text().split("\n## ")[0]
    assert 'E="--endpoint-url http://127.0.0.1:8080"' in setup
    assert "AWS_SHARED_CREDENTIALS_FILE=var/credentials AWS_PROFILE=hsmkms" in setup


def test_section_1_symmetric_material_with_rsaes_oaep_sha_256(cli: AwsCli):
    (script,) = blocks("1.")
    key_id = key_of(run_doc(cli, script))
    meta = cli.json("describe-key", "--key-id", key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and meta["Origin"] == "EXTERNAL"
    material = (cli.workdir / "PlaintextKeyMaterial.bin").read_bytes()
    blob = cli.json(
        "encrypt", "--key-id", key_id, "--plaintext", "fileb://PlaintextKeyMaterial.bin"
    )
    blob_file = cli.blob_file(blob["CiphertextBlob"])
    # Delete the material: the key waits for it, and the blob does not decrypt.
    cli.json("delete-imported-key-material", "--key-id", key_id)
    assert cli.json("describe-key", "--key-id", key_id)["KeyMetadata"]["KeyState"] == (
        "PendingImport"
    )
    refused = cli.run("decrypt", "--ciphertext-blob", blob_file)
    assert refused.returncode != 0 and "KMSInvalidStateException" in refused.stderr
    # The same material again, with the same import token (within its 24 hours): decrypts.
    again = cli.json(
        "import-key-material", "--key-id", key_id,
        "--encrypted-key-material", "fileb://EncryptedKeyMaterial.bin",
        "--import-token", "fileb://ImportToken.bin",
        "--expiration-model", "KEY_MATERIAL_DOES_NOT_EXPIRE",
    )  # fmt: skip
    assert again["KeyMaterialId"] == meta["CurrentKeyMaterialId"]
    plain = cli.json("decrypt", "--ciphertext-blob", blob_file)["Plaintext"]
    assert base64.b64decode(plain) == material


def test_section_2_an_openssl_ec_key_with_rsa_aes_key_wrap_sha_256(cli: AwsCli):
    (script,) = blocks("2.")
    output = run_doc(cli, script)
    assert "Verified OK" in output
    key_id = key_of(output)
    public = cli.json("get-public-key", "--key-id", key_id)
    assert public["KeySpec"] == "ECC_NIST_P256"
    mine = subprocess.run(
        ["openssl", "pkey", "-in", "PrivateKey.pem", "-pubout", "-outform", "DER"],
        cwd=cli.workdir,
        capture_output=True,
        check=True,
    ).stdout
    assert base64.b64decode(public["PublicKey"]) == mine
