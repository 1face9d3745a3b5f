"""Attestation documents made for the tests, as a Nitro Secure Module makes them: a test root CA
(P-384), an intermediate, an ES384 leaf, and a COSE_Sign1 over a CBOR payload with PCRs and
the enclave's RSA public key. ``Enclave`` also opens what hsmkms sends back: with OpenSSL's
``cms -decrypt`` (an independent CMS implementation) and by hand."""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.x509.oid import NameOID

IMAGE_A = hashlib.sha384(b"enclave image A").digest()
IMAGE_B = hashlib.sha384(b"enclave image B").digest()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = True,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(hours=1))
        .not_valid_after(not_after or now + timedelta(hours=3))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA384())
    )


@dataclass
class Authority:
    """A root, an intermediate and a leaf, like the Nitro chain."""

    root_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )

    def __post_init__(self) -> None:
        self.root = certificate("test nitro root", self.root_key)
        self.mid_key = ec.generate_private_key(ec.SECP384R1())
        self.mid = certificate("test zone", self.mid_key, ("test nitro root", self.root_key))
        self.leaf_key = ec.generate_private_key(ec.SECP384R1())
        self.leaf = certificate(
            "test enclave host", self.leaf_key, ("test zone", self.mid_key), ca=False
        )

    def pem(self, path: Path) -> Path:
        path.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))
        return path


@dataclass
class Enclave:
    """An enclave's RSA key and the documents it would present."""

    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    def spki(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def document(
        self,
        ca: Authority,
        *,
        image: bytes = IMAGE_A,
        payload: dict[str, Any] | None = None,
        timestamp_ms: int | None = None,
        leaf: x509.Certificate | None = None,
        leaf_key: ec.EllipticCurvePrivateKey | None = None,
        bundle: list[x509.Certificate] | None = None,
        tagged: bool = True,
        public_key: bytes | None = None,
    ) -> bytes:
        leaf = leaf or ca.leaf
        body = {
            "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
            "digest": "SHA384",
            "timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            "pcrs": {0: image, 1: hashlib.sha384(b"kernel").digest(), 2: bytes(48)},
            "certificate": leaf.public_bytes(serialization.Encoding.DER),
            "cabundle": [
                c.public_bytes(serialization.Encoding.DER) for c in (bundle or [ca.root, ca.mid])
            ],
            "public_key": public_key if public_key is not None else self.spki(),
            "user_data": None,
            "nonce": None,
        }
        body.update(payload or {})
        return sign1(cbor2.dumps(body), leaf_key or ca.leaf_key, tagged=tagged)

    def open(self, envelope: bytes) -> bytes:
        """The secret in a CiphertextForRecipient, opened by hand (and its form checked)."""
        info = cms.ContentInfo.load(envelope)
        assert info["content_type"].native == "enveloped_data"
        env = info["content"]
        assert env["version"].native == "v2"
        (ri,) = env["recipient_infos"]
        ktri = ri.chosen
        assert ri.name == "ktri" and ktri["version"].native == "v2"
        assert ktri["rid"].name == "subject_key_identifier"
        kea = ktri["key_encryption_algorithm"]
        assert kea["algorithm"].native == "rsaes_oaep"
        assert kea["parameters"]["hash_algorithm"]["algorithm"].native == "sha256"
        assert kea["parameters"]["mask_gen_algorithm"]["parameters"]["algorithm"].native == (
            "sha256"
        )
        eci = env["encrypted_content_info"]
        assert eci["content_encryption_algorithm"]["algorithm"].native == "aes256_cbc"
        iv = eci["content_encryption_algorithm"]["parameters"].native
        assert len(iv) == 16
        cek = self.key.decrypt(
            ktri["encrypted_key"].native,
            asym_padding.OAEP(asym_padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
        )
        decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
        padded = decryptor.update(eci["encrypted_content"].native) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()

    def openssl(self, envelope: bytes, workdir: Path) -> bytes:
        """The secret as ``openssl cms -decrypt`` opens it."""
        key = workdir / "enclave.pem"
        key.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        blob = workdir / "envelope.der"
        blob.write_bytes(envelope)
        done = subprocess.run(
            [
                "openssl",
                "cms",
                "-decrypt",
                "-inform",
                "DER",
                "-in",
                str(blob),
                "-inkey",
                str(key),
                "-binary",
            ],  # fmt: skip
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout


def sign1(payload: bytes, key: ec.EllipticCurvePrivateKey, *, tagged: bool = True) -> bytes:
    protected = cbor2.dumps({1: -35})
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA384())))
    signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    structure = [protected, {}, payload, signature]
    return cbor2.dumps(cbor2.CBORTag(18, structure) if tagged else structure)
