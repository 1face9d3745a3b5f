"""Signatures and RSA ciphertexts checked with the openssl command line, an implementation
independent of hsmkms and of the Python bindings (issue 14): what a user runs offline."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")

CASES = [  # spec, algorithm, openssl options for `pkeyutl -verify` of a digest (or None: dgst)
    ("ECC_NIST_P256", "ECDSA_SHA_256", ["-digest", "sha256"]),
    ("ECC_SECG_P256K1", "ECDSA_SHA_256", ["-digest", "sha256"]),
    ("ECC_NIST_P384", "ECDSA_SHA_384", ["-digest", "sha384"]),
    ("RSA_2048", "RSASSA_PSS_SHA_256", ["-digest", "sha256", "-pkeyopt", "rsa_padding_mode:pss",
                                        "-pkeyopt", "rsa_pss_saltlen:digest"]),
    ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_512", ["-digest", "sha512"]),
]  # fmt: skip


def openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=30)


def public_pem(kms, key_id: str, directory: Path) -> Path:
    der = kms.get_public_key(KeyId=key_id)["PublicKey"]
    path = directory / f"{key_id}.pem"
    path.write_bytes(
        serialization.load_der_public_key(der).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.mark.parametrize("spec,algorithm,options", CASES)
def test_openssl_verifies_kms_signatures(http, tmp_path, spec, algorithm, options):
    key = http.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    pem = public_pem(http, key, tmp_path)
    message = tmp_path / "message"
    message.write_bytes(os.urandom(1000))
    signature = tmp_path / "signature"
    signature.write_bytes(
        http.sign(KeyId=key, Message=message.read_bytes(), SigningAlgorithm=algorithm)["Signature"]
    )
    digest = options[1]
    dgst = ["dgst", f"-{digest}", "-verify", str(pem), "-signature", str(signature)]
    if "rsa_padding_mode:pss" in options:
        dgst += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
    ok = openssl(*dgst, str(message))
    assert ok.returncode == 0 and b"Verified OK" in ok.stdout, ok.stderr
    message.write_bytes(message.read_bytes() + b"x")
    assert openssl(*dgst, str(message)).returncode != 0


def test_openssl_verifies_an_ed25519_signature(http, tmp_path):
    key = http.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")["KeyMetadata"][
        "KeyId"
    ]
    pem = public_pem(http, key, tmp_path)
    message, signature = tmp_path / "message", tmp_path / "signature"
    message.write_bytes(b"pure Ed25519, RFC 8032")
    signature.write_bytes(
        http.sign(KeyId=key, Message=message.read_bytes(), SigningAlgorithm="ED25519_SHA_512")[
            "Signature"
        ]
    )
    ok = openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(pem), "-rawin",
                 "-in", str(message), "-sigfile", str(signature))  # fmt: skip
    assert ok.returncode == 0 and b"Signature Verified Successfully" in ok.stdout, ok.stderr


@pytest.mark.parametrize(
    "algorithm,digest", [("RSAES_OAEP_SHA_1", "sha1"), ("RSAES_OAEP_SHA_256", "sha256")]
)
def test_a_ciphertext_openssl_made_decrypts_through_kms(http, tmp_path, algorithm, digest):
    key = http.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    pem = public_pem(http, key, tmp_path)
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(64))
    out = openssl("pkeyutl", "-encrypt", "-pubin", "-inkey", str(pem), "-in", str(plain),
                  "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", f"rsa_oaep_md:{digest}",
                  "-pkeyopt", f"rsa_mgf1_md:{digest}")  # fmt: skip
    assert out.returncode == 0, out.stderr
    back = http.decrypt(KeyId=key, CiphertextBlob=out.stdout, EncryptionAlgorithm=algorithm)
    assert back["Plaintext"] == plain.read_bytes()
