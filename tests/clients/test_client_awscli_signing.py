"""The AWS CLI signs, verifies and MACs with asymmetric and HMAC KMS keys of a real hsmkms
server (issue 14): ``aws kms create-key --key-spec ... --key-usage ...``, ``sign``, ``verify``,
``get-public-key``, ``generate-mac`` and ``verify-mac``, each run as a user would type it.

The CLI runs exactly as in test_client_awscli.py (its ``AwsCli``: only the home's credentials
file, no machine AWS configuration). Messages, digests, signatures and MACs go in as raw bytes
through ``fileb://``; every signature is also checked offline with ``cryptography`` against
the public key ``get-public-key`` printed, so a server that agreed with itself would not pass.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from helpers import offline_verify
from server import ServerProcess
from test_client_awscli import AwsCli

MESSAGE = b"signed by hsmkms through the AWS CLI\n"


@pytest.fixture(scope="module")
def cli(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> AwsCli:
    return AwsCli(server, tmp_path_factory.mktemp("aws-cli-signing"))


def raw_file(cli: AwsCli, data: bytes) -> str:
    """Write raw bytes into the CLI's directory; their ``fileb://`` argument."""
    path = cli.workdir / f"raw-{secrets.token_hex(4)}.bin"
    path.write_bytes(data)
    return f"fileb://{path.name}"


_made: dict[tuple[str, str], dict[str, Any]] = {}


def create_key(cli: AwsCli, spec: str, usage: str) -> dict[str, Any]:
    """``aws kms create-key`` once per spec and usage for the module."""
    if (spec, usage) in _made:
        return _made[spec, usage]
    metadata: dict[str, Any] = cli.json(
        "create-key",
        "--key-spec", spec,
        "--key-usage", usage,
        "--description", f"{spec} {usage} made by the AWS CLI",
    )["KeyMetadata"]  # fmt: skip
    assert metadata["KeySpec"] == spec
    assert metadata["KeyUsage"] == usage
    assert metadata["KeyState"] == "Enabled"
    _made[spec, usage] = metadata
    return metadata


def assert_verify_refused(cli: AwsCli, *args: str) -> None:
    proc = cli.run("verify", *args)
    assert proc.returncode != 0, proc.stdout
    assert "KMSInvalidSignatureException" in proc.stderr
    assert "when calling the Verify operation" in proc.stderr
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize(
    ("spec", "algorithm", "key_type"),
    [
        ("ECC_NIST_P256", "ECDSA_SHA_256", ec.EllipticCurvePublicKey),
        ("RSA_2048", "RSASSA_PSS_SHA_256", rsa.RSAPublicKey),
    ],
)
def test_sign_verify_and_get_public_key_through_the_cli(
    cli: AwsCli, spec: str, algorithm: str, key_type: type
) -> None:
    key = create_key(cli, spec, "SIGN_VERIFY")
    assert algorithm in key["SigningAlgorithms"]

    published = cli.json("get-public-key", "--key-id", key["KeyId"])
    assert published["KeyId"] == key["Arn"]
    assert published["KeySpec"] == spec
    assert published["KeyUsage"] == "SIGN_VERIFY"
    assert algorithm in published["SigningAlgorithms"]
    public = serialization.load_der_public_key(base64.b64decode(published["PublicKey"]))
    assert isinstance(public, key_type)
    if isinstance(public, ec.EllipticCurvePublicKey):
        assert public.curve.name == "secp256r1"
    else:
        assert public.key_size == 2048

    signed = cli.json(
        "sign",
        "--key-id", key["Arn"],
        "--message", raw_file(cli, MESSAGE),
        "--message-type", "RAW",
        "--signing-algorithm", algorithm,
    )  # fmt: skip
    assert signed["KeyId"] == key["Arn"]
    assert signed["SigningAlgorithm"] == algorithm
    signature = base64.b64decode(signed["Signature"])
    offline_verify(public, algorithm, MESSAGE, signature)  # raises InvalidSignature if not

    verified = cli.json(
        "verify",
        "--key-id", key["KeyId"],
        "--message", raw_file(cli, MESSAGE),
        "--message-type", "RAW",
        "--signature", raw_file(cli, signature),
        "--signing-algorithm", algorithm,
    )  # fmt: skip
    assert verified == {
        "KeyId": key["Arn"],
        "SignatureValid": True,
        "SigningAlgorithm": algorithm,
    }

    tampered = bytearray(signature)
    tampered[len(tampered) // 2] ^= 0x01
    assert_verify_refused(
        cli,
        "--key-id", key["KeyId"],
        "--message", raw_file(cli, MESSAGE),
        "--signature", raw_file(cli, bytes(tampered)),
        "--signing-algorithm", algorithm,
    )  # fmt: skip
    assert_verify_refused(
        cli,
        "--key-id", key["KeyId"],
        "--message", raw_file(cli, MESSAGE + b"!"),
        "--signature", raw_file(cli, signature),
        "--signing-algorithm", algorithm,
    )  # fmt: skip


def test_a_digest_signed_through_the_cli_verifies_as_the_raw_message(cli: AwsCli) -> None:
    """``--message-type DIGEST`` with the SHA-256 of the message is the RAW message's signature:
    it verifies offline over the message and through ``verify`` with ``--message-type RAW``."""
    key = create_key(cli, "ECC_NIST_P256", "SIGN_VERIFY")  # the key the test above made
    digest = hashlib.sha256(MESSAGE).digest()
    signed = cli.json(
        "sign",
        "--key-id", key["KeyId"],
        "--message", raw_file(cli, digest),
        "--message-type", "DIGEST",
        "--signing-algorithm", "ECDSA_SHA_256",
    )  # fmt: skip
    signature = base64.b64decode(signed["Signature"])
    public = serialization.load_der_public_key(
        base64.b64decode(cli.json("get-public-key", "--key-id", key["KeyId"])["PublicKey"])
    )
    offline_verify(public, "ECDSA_SHA_256", MESSAGE, signature)

    proc = cli.run(
        "verify",
        "--key-id", key["KeyId"],
        "--message", raw_file(cli, MESSAGE),
        "--message-type", "RAW",
        "--signature", raw_file(cli, signature),
        "--signing-algorithm", "ECDSA_SHA_256",
        "--query", "SignatureValid",
        "--output", "text",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_generate_mac_and_verify_mac_through_the_cli(cli: AwsCli) -> None:
    key = create_key(cli, "HMAC_256", "GENERATE_VERIFY_MAC")
    assert key["MacAlgorithms"] == ["HMAC_SHA_256"]

    made = cli.json(
        "generate-mac",
        "--key-id", key["KeyId"],
        "--message", raw_file(cli, MESSAGE),
        "--mac-algorithm", "HMAC_SHA_256",
    )  # fmt: skip
    assert made["KeyId"] == key["Arn"]
    assert made["MacAlgorithm"] == "HMAC_SHA_256"
    mac = base64.b64decode(made["Mac"])
    assert len(mac) == 32

    verified = cli.json(
        "verify-mac",
        "--key-id", key["Arn"],
        "--message", raw_file(cli, MESSAGE),
        "--mac", raw_file(cli, mac),
        "--mac-algorithm", "HMAC_SHA_256",
    )  # fmt: skip
    assert verified == {"KeyId": key["Arn"], "MacValid": True, "MacAlgorithm": "HMAC_SHA_256"}

    proc = cli.run(
        "verify-mac",
        "--key-id", key["KeyId"],
        "--message", raw_file(cli, MESSAGE),
        "--mac", raw_file(cli, bytes([mac[0] ^ 0x01]) + mac[1:]),
        "--mac-algorithm", "HMAC_SHA_256",
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    assert "KMSInvalidMacException" in proc.stderr
    assert "when calling the VerifyMac operation" in proc.stderr
