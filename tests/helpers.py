"""Assertions shared by the tests of every face."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from hsmkms.specs import SUPPORTED_PAIR_SPECS

# Every DataKeyPairSpec hsmkms serves, by name (the one table is hsmkms/specs.py).
KEY_PAIR_SPECS = [spec.value for spec in SUPPORTED_PAIR_SPECS]
# The pre-quantum ones: what clients whose crypto predates ML-KEM (Node 20) can read.
CLASSICAL_PAIR_SPECS = [s for s in KEY_PAIR_SPECS if not s.startswith("ML_KEM_")]
# RSA-3072 and RSA-4096 pairs take 0.3-1.5 s each to generate on SoftHSM2.
SLOW_TO_GENERATE = frozenset({"RSA_3072", "RSA_4096"})


def generation_params(specs: list[str]) -> list[Any]:
    """``specs`` for ``parametrize``, those slow to generate marked ``slow``."""
    return [pytest.param(s, marks=pytest.mark.slow) if s in SLOW_TO_GENERATE else s for s in specs]


@contextmanager
def raises(code: str, match: str | None = None) -> Iterator[pytest.ExceptionInfo[ClientError]]:
    """Expect an AWS error named ``code`` (as boto3 reports it), whatever the face."""
    with pytest.raises(ClientError) as info:
        yield info
    error = info.value.response["Error"]
    assert error["Code"] == code, f"expected {code}, got {error['Code']}: {error.get('Message')}"
    if match is not None:
        assert match in error.get("Message", ""), error.get("Message")


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files in ``directory``
    (for a server that serves HTTPS in a test)."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = datetime.now(UTC) - timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def policy(*statements: dict[str, Any]) -> str:
    """A key policy document of ``statements``."""
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def statement(effect: str, principal: str, action: Any, condition: Any = None) -> dict[str, Any]:
    """One statement on every resource; ``principal`` an ARN or "*"."""
    st: dict[str, Any] = {
        "Effect": effect,
        "Principal": {"AWS": principal} if principal != "*" else "*",
        "Action": action,
        "Resource": "*",
    }
    if condition is not None:
        st["Condition"] = condition
    return st


def offline_verify(public: Any, algorithm: str, message: bytes, signature: bytes) -> None:
    """Raises cryptography's InvalidSignature unless ``signature`` is the KMS signing
    ``algorithm``'s (ECDSA_*, RSASSA_PSS_*, RSASSA_PKCS1_V1_5_*) over ``message``; PSS with MGF1
    of the same hash and a salt of the hash's length, as KMS signs."""
    h = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}[algorithm[-3:]]()
    if algorithm.startswith("ECDSA"):
        public.verify(signature, message, ec.ECDSA(h))
    elif algorithm.startswith("RSASSA_PSS"):
        public.verify(signature, message, padding.PSS(padding.MGF1(h), h.digest_size), h)
    else:
        public.verify(signature, message, padding.PKCS1v15(), h)
