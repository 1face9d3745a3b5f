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

    def nitro_sdk(self, envelope: bytes) -> bytes:
        """The secret as the AWS Nitro Enclaves SDK opens it (its parser's steps, then
        RSA-OAEP-SHA-256 and AES-256-CBC as its kms.c and cms.c do)."""
        encrypted_key, iv, ciphertext = nitro_sdk_parse(envelope)
        cek = self.key.decrypt(
            encrypted_key,
            asym_padding.OAEP(asym_padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
        )
        decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
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


class _CBS:
    """The few BoringSSL CBS calls aws_cms_parse_enveloped_data makes (aws-nitro-enclaves-sdk-c,
    source/cms.c), with their semantics: a BER element of indefinite length is its header alone;
    a definite one is read whole."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _header(self) -> tuple[int, int | None, int]:
        tag, first = self.data[self.pos], self.data[self.pos + 1]
        if first == 0x80:
            return tag, None, 2
        if first < 0x80:
            return tag, first, 2
        n = first & 0x7F
        return tag, int.from_bytes(self.data[self.pos + 2 : self.pos + 2 + n], "big"), 2 + n

    def any_ber_element(self) -> tuple[int, bytes, int]:
        tag, length, header = self._header()
        if length is None:
            element = self.data[self.pos : self.pos + header]
        else:
            element = self.data[self.pos : self.pos + header + length]
        self.pos += len(element)
        return tag, element, header

    def asn1(self, want: int) -> bytes:
        tag, length, header = self._header()
        assert tag == want and length is not None, f"wanted tag {want:#x}, found {tag:#x}"
        start = self.pos + header
        self.pos = start + length
        return self.data[start : self.pos]

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1


def nitro_sdk_parse(envelope: bytes) -> tuple[bytes, bytes, bytes]:
    """(encrypted key, IV, ciphertext) as the AWS Nitro Enclaves SDK's parser finds them, step
    by step as source/cms.c takes them; an AssertionError where that parser would fail."""
    cms_ = _CBS(envelope)
    tag, _, _ = cms_.any_ber_element()  # ASN1_SEQ
    assert tag == 0x30
    assert cms_.asn1(0x06) == bytes.fromhex("2a864886f70d010703")  # NID_pkcs7_enveloped
    cms_.any_ber_element()  # [0]
    tag, _, _ = cms_.any_ber_element()  # ASN1_SEQ
    assert tag == 0x30
    assert cms_.asn1(0x02) == b"\x02", "EnvelopedData version 2"
    tag, element, _ = cms_.any_ber_element()
    assert tag == 0x31, "the recipient infos, a SET"
    env = _CBS(element)
    recipient_infos = _CBS(env.asn1(0x31))
    info = _CBS(recipient_infos.asn1(0x30))
    assert info.asn1(0x02) == b"\x02", "KeyTransRecipientInfo version 2"
    info.any_ber_element()  # the rid
    info.asn1(0x30)  # RSA-OAEP
    encrypted_key = info.asn1(0x04)
    tag, _, _ = cms_.any_ber_element()
    assert tag == 0x30
    assert cms_.asn1(0x06) == bytes.fromhex("2a864886f70d010701")  # NID_pkcs7_data
    tag, element, header = cms_.any_ber_element()
    assert tag == 0x30
    algo = _CBS(element[header:])
    assert algo.asn1(0x06) == bytes.fromhex("6086480165030401" + "2a"), "AES-256-CBC"
    iv = algo.asn1(0x04)
    assert cms_.peek() == 0x80, "the content as [0] IMPLICIT OCTET STRING"
    ciphertext = b""
    while cms_.peek() == 0x80:
        ciphertext += cms_.asn1(0x80)
    return encrypted_key, iv, ciphertext
