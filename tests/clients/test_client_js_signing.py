"""The AWS SDK for JavaScript v3 signs, verifies and MACs with asymmetric and HMAC KMS keys of a
real hsmkms server (issue 14).

tests/js/kms_signing.mjs makes an ECC_NIST_P256 and an RSA_2048 SIGN_VERIFY key and an HMAC_256
key with CreateKeyCommand, then runs SignCommand, VerifyCommand, GetPublicKeyCommand,
GenerateMacCommand and VerifyMacCommand, and sends a tampered signature and MAC. It runs in the
environment test_client_js.py gives the SDK (only the home's credentials file) and prints a JSON
report with each message, signature and public key; this test checks every signature again
offline with ``cryptography``, and the error names the SDK raised for the tampered ones.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from server import ServerProcess
from test_client_js import JS_DIR, NODE, run_js_script

SCRIPT = JS_DIR / "kms_signing.mjs"
CASES = {
    "ECC_NIST_P256/ECDSA_SHA_256": ec.EllipticCurvePublicKey,
    "RSA_2048/RSASSA_PKCS1_V1_5_SHA_256": rsa.RSAPublicKey,
}


def run_signing_script(server: ServerProcess, scratch: Path) -> dict[str, Any]:
    return run_js_script(server, scratch, SCRIPT)


@pytest.fixture(scope="module")
def report(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if NODE is None:
        pytest.skip("node is not on PATH: install Node.js >= 20 to run the JS SDK client test")
    return run_signing_script(server, tmp_path_factory.mktemp("js-signing"))


def case_of(report: dict[str, Any], label: str) -> dict[str, Any]:
    failures = [f for f in report["failures"] if f["step"] == label]
    assert failures == [], json.dumps(failures, indent=2)
    case: dict[str, Any] = report["signing"][label]
    return case


@pytest.mark.parametrize("label", list(CASES))
def test_a_js_sdk_signature_verifies_offline_and_through_verify(
    report: dict[str, Any], label: str
) -> None:
    case = case_of(report, label)
    assert case["keyArn"].startswith("arn:aws:kms:us-east-1:")
    public = serialization.load_der_public_key(base64.b64decode(case["publicKey"]))
    assert isinstance(public, CASES[label])
    if isinstance(public, ec.EllipticCurvePublicKey):
        assert public.curve.name == "secp256r1"
    else:
        assert public.key_size == 2048
    message = base64.b64decode(case["message"])
    signature = base64.b64decode(case["signature"])
    if case["algorithm"] == "ECDSA_SHA_256":
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    else:
        assert case["algorithm"] == "RSASSA_PKCS1_V1_5_SHA_256"
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    assert case["signatureValid"] is True
    assert f"{label}: node:crypto verifies the signature with the public key" in report["checks"]


@pytest.mark.parametrize("label", list(CASES))
def test_a_tampered_signature_is_kms_invalid_signature_to_the_js_sdk(
    report: dict[str, Any], label: str
) -> None:
    case = case_of(report, label)
    for refused in (case["tamperedError"], case["otherMessageError"]):
        assert refused is not None, "Verify accepted it"
        assert refused["name"] == "KMSInvalidSignatureException", refused
        assert refused["httpStatus"] == 400, refused


def test_generate_mac_and_verify_mac_through_the_js_sdk(report: dict[str, Any]) -> None:
    failures = [f for f in report["failures"] if f["step"] == "HMAC_256"]
    assert failures == [], json.dumps(failures, indent=2)
    mac = report["mac"]
    assert mac["algorithm"] == "HMAC_SHA_256"
    assert mac["macLength"] == 32
    assert mac["macValid"] is True
    assert "HMAC_256: GenerateMac is deterministic" in report["checks"]
    assert mac["tamperedError"]["name"] == "KMSInvalidMacException", mac["tamperedError"]
    assert mac["tamperedError"]["httpStatus"] == 400


def test_the_signing_script_exits_zero_with_no_failure_at_all(report: dict[str, Any]) -> None:
    assert report["failures"] == [], json.dumps(report["failures"], indent=2)
    assert report["ok"] is True
    assert report["exitCode"] == 0, report["stderr"]
