"""The AWS CLI (``aws kms ... --endpoint-url``) against a real hsmkms server.

Each command runs as a user would type it, in a separate process whose only AWS settings are
``AWS_SHARED_CREDENTIALS_FILE`` (the home's ``credentials``, which also gives the region) and
``AWS_PROFILE=hsmkms``; ``AWS_CONFIG_FILE`` points at a file that does not exist so that this
machine's own AWS configuration cannot leak in. Blobs go back in through ``fileb://``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from server import ServerProcess

CONTEXT = {"purpose": "aws-cli-test", "tenant": "acme"}


def aws_command() -> list[str]:
    """The ``aws`` of this venv (awscli 1.x is a test extra), else ``python -m awscli``."""
    script = Path(sys.executable).parent / "aws"
    if script.exists():
        return [str(script)]
    found = shutil.which("aws")
    if found:
        return [found]
    return [sys.executable, "-m", "awscli"]


class AwsCli:
    """``aws`` pointed at one hsmkms server, run in a scratch directory."""

    def __init__(self, server: ServerProcess, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(
            AWS_SHARED_CREDENTIALS_FILE=str(server.credentials),
            AWS_PROFILE="hsmkms",
            AWS_CONFIG_FILE=str(workdir / "no-such-config"),
            AWS_EC2_METADATA_DISABLED="true",
            AWS_PAGER="",
            HOME=str(workdir),
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*aws_command(), "kms", *args, "--endpoint-url", self.server.url],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def json(self, *args: str) -> dict[str, Any]:
        proc = self.run(*args, "--output", "json")
        assert proc.returncode == 0, f"aws kms {' '.join(args)} failed:\n{proc.stderr}"
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def blob_file(self, b64: str) -> str:
        """Write a base64 blob from the CLI's output as raw bytes; its ``fileb://`` argument."""
        path = self.workdir / f"blob-{secrets.token_hex(4)}.bin"
        path.write_bytes(base64.b64decode(b64))
        return f"fileb://{path.name}"


@pytest.fixture(scope="module")
def cli(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> AwsCli:
    return AwsCli(server, tmp_path_factory.mktemp("aws-cli"))


@pytest.fixture(scope="module")
def key(cli: AwsCli) -> dict[str, Any]:
    """A key made by ``aws kms create-key``, reached below by the alias ``create-alias`` gave it."""
    metadata: dict[str, Any] = cli.json("create-key", "--description", "made by the AWS CLI")[
        "KeyMetadata"
    ]
    alias = f"alias/aws-cli-{secrets.token_hex(4)}"
    created = cli.run("create-alias", "--alias-name", alias, "--target-key-id", metadata["KeyId"])
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == ""  # CreateAlias answers an empty body
    return {**metadata, "Alias": alias}


def context_arg(context: dict[str, str]) -> str:
    return json.dumps(context)


def load_pair(public_b64: str, private_der: bytes) -> tuple[Any, Any]:
    public = serialization.load_der_public_key(base64.b64decode(public_b64))
    private = serialization.load_der_private_key(private_der, password=None)
    return public, private


def assert_pair_matches(public: Any, private: Any) -> None:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert private.public_key().public_bytes(*spki) == public.public_bytes(*spki)


def test_create_key_answers_a_usable_enabled_symmetric_key(key: dict[str, Any]) -> None:
    assert key["Arn"].startswith("arn:aws:kms:us-east-1:")
    assert key["Arn"].endswith(f":key/{key['KeyId']}")
    assert key["KeyState"] == "Enabled"
    assert key["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert key["KeyUsage"] == "ENCRYPT_DECRYPT"
    # The CLI renders timestamps from epoch seconds; a number or an ISO date both parse.
    assert key["CreationDate"]


@pytest.mark.parametrize(
    ("spec", "key_type"),
    [
        ("RSA_2048", rsa.RSAPublicKey),
        ("ECC_NIST_P256", ec.EllipticCurvePublicKey),
        ("ECC_NIST_EDWARDS25519", ed25519.Ed25519PublicKey),
    ],
)
def test_generate_data_key_pair_gives_matching_keys_and_decrypt_opens_the_private_key(
    cli: AwsCli, key: dict[str, Any], spec: str, key_type: type
) -> None:
    out = cli.json(
        "generate-data-key-pair",
        "--key-id", key["Alias"],
        "--key-pair-spec", spec,
        "--encryption-context", context_arg(CONTEXT),
    )  # fmt: skip
    assert out["KeyId"] == key["Arn"]
    assert out["KeyPairSpec"] == spec
    private_der = base64.b64decode(out["PrivateKeyPlaintext"])
    public, private = load_pair(out["PublicKey"], private_der)
    assert isinstance(public, key_type)
    assert_pair_matches(public, private)
    assert (
        private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        == private_der
    ), "PrivateKeyPlaintext is PKCS#8 DER"

    opened = cli.json(
        "decrypt",
        "--ciphertext-blob", cli.blob_file(out["PrivateKeyCiphertextBlob"]),
        "--encryption-context", context_arg(CONTEXT),
    )  # fmt: skip
    assert base64.b64decode(opened["Plaintext"]) == private_der
    assert opened["KeyId"] == key["Arn"]
    assert opened["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"


def test_generate_data_key_pair_without_plaintext_decrypts_to_the_matching_private_key(
    cli: AwsCli, key: dict[str, Any]
) -> None:
    out = cli.json(
        "generate-data-key-pair-without-plaintext",
        "--key-id", key["Arn"],
        "--key-pair-spec", "ECC_NIST_P384",
        "--encryption-context", context_arg(CONTEXT),
    )  # fmt: skip
    assert "PrivateKeyPlaintext" not in out
    assert out["KeyId"] == key["Arn"]
    assert out["KeyPairSpec"] == "ECC_NIST_P384"

    # The documented shell idiom: --query Plaintext --output text, then base64 -d.
    proc = cli.run(
        "decrypt",
        "--ciphertext-blob", cli.blob_file(out["PrivateKeyCiphertextBlob"]),
        "--encryption-context", context_arg(CONTEXT),
        "--query", "Plaintext",
        "--output", "text",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    public, private = load_pair(out["PublicKey"], base64.b64decode(proc.stdout.strip()))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp384r1"
    assert_pair_matches(public, private)


def test_generate_data_key_without_plaintext_decrypts_to_a_32_byte_key(
    cli: AwsCli, key: dict[str, Any]
) -> None:
    out = cli.json(
        "generate-data-key-without-plaintext",
        "--key-id", key["Alias"],
        "--key-spec", "AES_256",
        "--encryption-context", context_arg(CONTEXT),
    )  # fmt: skip
    assert "Plaintext" not in out
    assert out["KeyId"] == key["Arn"]
    blob = cli.blob_file(out["CiphertextBlob"])
    opened = cli.json(
        "decrypt",
        "--ciphertext-blob", blob,
        "--encryption-context", context_arg(CONTEXT),
        "--key-id", key["Alias"],
    )  # fmt: skip
    assert len(base64.b64decode(opened["Plaintext"])) == 32
    assert opened["KeyId"] == key["Arn"]


def test_decrypt_with_the_wrong_encryption_context_fails_with_invalid_ciphertext(
    cli: AwsCli, key: dict[str, Any]
) -> None:
    out = cli.json(
        "generate-data-key-without-plaintext",
        "--key-id", key["KeyId"],
        "--number-of-bytes", "16",
        "--encryption-context", context_arg(CONTEXT),
    )  # fmt: skip
    proc = cli.run(
        "decrypt",
        "--ciphertext-blob", cli.blob_file(out["CiphertextBlob"]),
        "--encryption-context", context_arg({**CONTEXT, "tenant": "someone-else"}),
    )  # fmt: skip
    assert proc.returncode != 0
    assert "InvalidCiphertextException" in proc.stderr
    assert "when calling the Decrypt operation" in proc.stderr
    assert proc.stdout.strip() == ""


def test_an_alias_that_does_not_exist_fails_with_not_found(cli: AwsCli) -> None:
    proc = cli.run(
        "generate-data-key-pair",
        "--key-id", f"alias/no-such-alias-{secrets.token_hex(4)}",
        "--key-pair-spec", "ECC_NIST_P256",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "NotFoundException" in proc.stderr
