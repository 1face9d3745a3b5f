"""The AWS SDK for JavaScript v3 (``@aws-sdk/client-kms`` from npm) against a real hsmkms server.

tests/js/kms_client.mjs is a Node.js program written as a user would write it: a ``KMSClient``
with nothing hsmkms-specific but ``endpoint``, credentials and region from the SDK's default
chain (``AWS_SHARED_CREDENTIALS_FILE`` + ``AWS_PROFILE``, the home's ``credentials`` file). It
creates a key and an alias, then runs GenerateDataKeyPair, GenerateDataKeyPairWithoutPlaintext,
GenerateDataKeyWithoutPlaintext and Decrypt, and checks every key pair with ``node:crypto``
(SPKI and PKCS#8 DER load, the private key's public half is the returned public key, a signature
verifies). It prints a JSON report; this test runs it and asserts on the report.

Install the client with ``npm ci`` in tests/js (scripts/_setup.sh ``ensure_node_deps`` does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import CLASSICAL_PAIR_SPECS as KEY_PAIR_SPECS  # node:crypto 20 lacks ML-KEM
from server import ServerProcess

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "kms_client.mjs"
NODE = shutil.which("node")


def client_environment(server: ServerProcess, scratch: Path) -> dict[str, str]:
    """Only what a user's shell would hold for this account: no AWS config leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(server.credentials),
        AWS_PROFILE="hsmkms",
        AWS_CONFIG_FILE=str(scratch / "no-such-config"),
        AWS_EC2_METADATA_DISABLED="true",
        HOME=str(scratch),
        NODE_NO_WARNINGS="1",  # the SDK's "node >= 22 soon" notice on stderr
    )
    return env


def run_js_script(server: ServerProcess, scratch: Path, script: Path, *args: str) -> dict[str, Any]:
    """Run one of tests/js's scripts against ``server``: its JSON report, with its exit code
    and stderr."""
    assert NODE is not None
    if not (JS_DIR / "node_modules" / "@aws-sdk" / "client-kms").is_dir():
        pytest.fail(
            "@aws-sdk/client-kms is not installed: run `npm ci` in tests/js "
            "(scripts/test and .ci/run do it through ensure_node_deps)"
        )
    proc = subprocess.run(
        [NODE, str(script), "--endpoint", server.url, *args],
        cwd=JS_DIR,
        env=client_environment(server, scratch),
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(
            f"{script.name} printed no JSON report (exit {proc.returncode})\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    report["exitCode"] = proc.returncode
    report["stderr"] = proc.stderr
    return report


def run_js_client(server: ServerProcess, scratch: Path, specs: list[str]) -> dict[str, Any]:
    return run_js_script(server, scratch, SCRIPT, "--specs", ",".join(specs))


@pytest.fixture(scope="module")
def js_report(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if NODE is None:
        pytest.skip("node is not on PATH: install Node.js >= 20 to run the JS SDK client test")
    return run_js_client(server, tmp_path_factory.mktemp("js-client"), KEY_PAIR_SPECS)


def failures_of(report: dict[str, Any], step_prefix: str = "") -> list[dict[str, Any]]:
    return [f for f in report["failures"] if f["step"].startswith(step_prefix)]


def test_the_js_sdk_creates_a_key_through_the_endpoint_and_credentials_file(
    js_report: dict[str, Any],
) -> None:
    assert failures_of(js_report, "CreateKey") == []
    assert js_report["keyArn"].startswith("arn:aws:kms:us-east-1:")
    assert "CreateAlias succeeds" in js_report["checks"]


@pytest.mark.parametrize("spec", KEY_PAIR_SPECS)
def test_generate_data_key_pair_gives_keys_node_crypto_loads_and_decrypt_opens(
    js_report: dict[str, Any], spec: str
) -> None:
    assert failures_of(js_report, f"GenerateDataKeyPair {spec}") == []
    checks = js_report["checks"]
    assert f"{spec}: the private key's public half equals the returned public key" in checks
    assert f"{spec}: Decrypt of the private key blob gives back the same PKCS#8" in checks
    assert (
        f"{spec}: Decrypt with another encryption context is refused with "
        "InvalidCiphertextException" in checks
    )


@pytest.mark.parametrize("spec", KEY_PAIR_SPECS)
def test_generate_data_key_pair_without_plaintext_decrypts_to_the_matching_private_key(
    js_report: dict[str, Any], spec: str
) -> None:
    assert failures_of(js_report, f"GenerateDataKeyPairWithoutPlaintext {spec}") == []
    assert f"{spec}: WithoutPlaintext returns no private key plaintext" in js_report["checks"]
    assert (
        f"{spec}: a signature by the private key verifies with the public key"
        in js_report["checks"]
    )


def test_generate_data_key_without_plaintext_decrypts_to_a_key_of_the_asked_size(
    js_report: dict[str, Any],
) -> None:
    assert failures_of(js_report, "GenerateDataKeyWithoutPlaintext") == []
    checks = js_report["checks"]
    assert 'GenerateDataKeyWithoutPlaintext {"KeySpec":"AES_256"}: Decrypt gives 32 bytes' in checks
    assert 'GenerateDataKeyWithoutPlaintext {"NumberOfBytes":64}: Decrypt gives 64 bytes' in checks
    assert (
        'GenerateDataKeyWithoutPlaintext {"KeySpec":"AES_256"}: Decrypt of a flipped blob '
        "is refused with InvalidCiphertextException" in checks
    )


def test_the_js_client_exits_zero_with_no_failure_at_all(js_report: dict[str, Any]) -> None:
    assert js_report["failures"] == [], json.dumps(js_report["failures"], indent=2)
    assert js_report["ok"] is True
    assert js_report["exitCode"] == 0, js_report["stderr"]
