"""Attestation documents (the ``Recipient`` parameter): verified before anything is released.

An AWS Nitro Enclaves attestation document is a COSE_Sign1 structure (RFC 9052; CBOR, tagged
18 or untagged as the Nitro Secure Module emits it) signed with ES384 by a leaf certificate
that chains, through the document's ``cabundle``, to a trust anchor: by default the AWS Nitro
Enclaves root certificate (G1) below, whose SHA-256 fingerprint AWS publishes as
``64:1A:03:21:A3:E2:44:EF:E4:56:46:31:95:D6:06:31:7E:D7:CD:CC:3C:17:56:E0:98:93:F3:C6:8F:79:BB:5B``
(https://docs.aws.amazon.com/enclaves/latest/user/verify-root.html); the
``attestation_trust_anchors`` setting (a PEM file of one or more certificates) replaces it, for
an on-prem attestation root an operator trusts. The payload (a CBOR map) carries the enclave's
PCRs and, in ``public_key``, the RSA public key that the released secret is encrypted to.

Checked, in order, each failure a ValidationException that says which: the COSE structure
and its ES384 algorithm; the payload's fields and types; the chain (the bundle's first
certificate is an anchor, each next one is issued by the one before and is a CA, the leaf by
the last; every certificate valid now); the signature over the COSE Sig_structure; the
document's age (its timestamp at most ``max_age`` seconds old, at most a minute ahead); the
public key (RSA, 2048 bits or more).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hsmkms import errors

AWS_NITRO_ROOT_G1 = b"""-----BEGIN CERTIFICATE-----
MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTEL
MAkGA1UEBhMCVVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYD
VQQDDBJhd3Mubml0cm8tZW5jbGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4
MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGQW1hem9uMQwwCgYDVQQL
DANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2MBAGByqGSM49AgEG
BSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSksfbb
48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZE
h8l5YoQwTcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkF
R+eWw5b6cp3PmanfS5YwDgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYC
MQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5W2OpYow9OYCVRaEevL8uO1XYru5xtMPW
rfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/nNr12UO8Yfwr6wPLb+6N
IwLz3/Y=
-----END CERTIFICATE-----
"""
AWS_NITRO_ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
_ES384 = -35  # COSE algorithm identifier (RFC 9053)
_COSE_SIGN1_TAG = 18
_FUTURE_SKEW = timedelta(seconds=60)
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class Attestation:
    """What a verified document says: its PCRs (index -> bytes) and the enclave's key."""

    module_id: str
    timestamp: datetime
    pcrs: dict[int, bytes]
    public_key: rsa.RSAPublicKey
    digest: str

    def condition_keys(self) -> dict[str, str]:
        """The key policy's kms:RecipientAttestation:* condition keys, lowercase hex values."""
        out = {f"kms:RecipientAttestation:PCR{n}": v.hex() for n, v in sorted(self.pcrs.items())}
        if 0 in self.pcrs:
            out["kms:RecipientAttestation:ImageSha384"] = self.pcrs[0].hex()
        return out


class Verifier:
    """Verifies attestation documents against trust anchors."""

    def __init__(self, anchors: list[x509.Certificate], max_age: float = 300.0) -> None:
        if not anchors:
            raise ValueError("no trust anchor")
        self.anchors = {a.public_bytes(serialization.Encoding.DER): a for a in anchors}
        self.max_age = timedelta(seconds=max_age)

    @classmethod
    def from_file(cls, path: str | None, max_age: float = 300.0) -> Verifier:
        pem = AWS_NITRO_ROOT_G1 if not path else Path(path).read_bytes()
        return cls(x509.load_pem_x509_certificates(pem), max_age)

    def verify(self, document: bytes, now: datetime | None = None) -> Attestation:
        when = now or datetime.now(UTC)
        protected, payload_bytes, signature = _cose_sign1(document)
        payload = _payload(payload_bytes)
        leaf, bundle = payload["certificate"], payload["cabundle"]
        self._check_chain(bundle, leaf, when)
        _check_signature(leaf, protected, payload_bytes, signature)
        stamp = datetime.fromtimestamp(payload["timestamp"] / 1000, UTC)
        if stamp > when + _FUTURE_SKEW:
            raise _invalid("its timestamp is in the future")
        if when - stamp > self.max_age:
            raise _invalid(
                f"it is {int((when - stamp).total_seconds())} s old, more than the "
                f"{int(self.max_age.total_seconds())} s allowed"
            )
        return Attestation(
            module_id=payload["module_id"],
            timestamp=stamp,
            pcrs=payload["pcrs"],
            public_key=_enclave_key(payload.get("public_key")),
            digest=payload["digest"],
        )

    def _check_chain(
        self, bundle: list[x509.Certificate], leaf: x509.Certificate, when: datetime
    ) -> None:
        if not bundle:
            raise _invalid("its cabundle is empty")
        root_der = bundle[0].public_bytes(serialization.Encoding.DER)
        if root_der not in self.anchors:
            raise _invalid(
                "its certificate chain does not start at a trusted root "
                f"(SHA-256 {hashlib.sha256(root_der).hexdigest()}; see attestation_trust_anchors)"
            )
        chain = [*bundle, leaf]
        for cert in chain:
            if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
                raise _invalid(f"the certificate {cert.subject.rfc4514_string()} is not valid now")
        for issuer, cert in zip(chain, chain[1:], strict=False):
            if not _is_ca(issuer):
                raise _invalid(f"{issuer.subject.rfc4514_string()} is not a CA certificate")
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                raise _invalid(
                    f"{cert.subject.rfc4514_string()} is not signed by "
                    f"{issuer.subject.rfc4514_string()}"
                ) from None


def _invalid(why: str) -> errors.KMSError:
    return errors.ValidationException(f"The attestation document is not valid: {why}.")


def _cose_sign1(document: bytes) -> tuple[bytes, bytes, bytes]:
    try:
        decoded = cbor2.loads(document)
    except Exception:  # cbor2 raises several kinds, RecursionError included
        raise _invalid("it is not CBOR") from None
    if isinstance(decoded, cbor2.CBORTag):
        if decoded.tag != _COSE_SIGN1_TAG:
            raise _invalid(f"it is CBOR tag {decoded.tag}, not a COSE_Sign1 (tag 18)")
        decoded = decoded.value
    if not (isinstance(decoded, list | tuple) and len(decoded) == 4):
        raise _invalid("it is not a COSE_Sign1 array of four")
    protected, _unprotected, payload, signature = decoded
    if not all(isinstance(x, bytes) for x in (protected, payload, signature)):
        raise _invalid("its COSE_Sign1 fields have the wrong types")
    try:
        header = cbor2.loads(protected) if protected else {}
    except Exception:
        raise _invalid("its protected header is not CBOR") from None
    if not isinstance(header, dict) or header.get(1) != _ES384:
        raise _invalid("it is not signed with ES384")
    return protected, payload, signature


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "module_id": str,
    "digest": str,
    "timestamp": int,
    "pcrs": dict,
    "certificate": bytes,
    "cabundle": (list, tuple),
}


def _payload(payload_bytes: bytes) -> dict[str, Any]:
    try:
        payload = cbor2.loads(payload_bytes)
    except Exception:
        raise _invalid("its payload is not CBOR") from None
    if not isinstance(payload, dict):
        raise _invalid("its payload is not a map")
    for name, kind in _FIELDS.items():
        if not isinstance(payload.get(name), kind):
            raise _invalid(f"its payload lacks {name}, or has it of the wrong type")
    if payload["digest"] != "SHA384":
        raise _invalid(f"its digest is {payload['digest']!r}, not SHA384")
    pcrs = payload["pcrs"]
    if not pcrs or not all(
        isinstance(k, int) and 0 <= k < 32 and isinstance(v, bytes) and len(v) in (32, 48, 64)
        for k, v in pcrs.items()
    ):
        raise _invalid("its pcrs are not a map of index to digest")
    try:
        payload["certificate"] = x509.load_der_x509_certificate(payload["certificate"])
        payload["cabundle"] = [x509.load_der_x509_certificate(c) for c in payload["cabundle"]]
    except (ValueError, TypeError):
        raise _invalid("a certificate in it is not DER X.509") from None
    return dict(payload)


def _check_signature(
    leaf: x509.Certificate, protected: bytes, payload: bytes, signature: bytes
) -> None:
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise _invalid("its signing certificate's key is not a P-384 key")
    if len(signature) != 96:
        raise _invalid("its signature is not an ES384 signature")
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    try:
        key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise _invalid("its signature does not verify") from None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _enclave_key(raw: object) -> rsa.RSAPublicKey:
    if not isinstance(raw, bytes) or not raw:
        raise _invalid("it carries no public_key to encrypt to")
    try:
        key = serialization.load_der_public_key(raw)
    except (ValueError, TypeError):
        raise _invalid("its public_key is not a DER SubjectPublicKeyInfo") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise _invalid("its public_key is not an RSA key (RSAES_OAEP_SHA_256 needs one)")
    if key.key_size < MIN_RSA_BITS:
        raise _invalid(f"its public_key has {key.key_size} bits, fewer than {MIN_RSA_BITS}")
    return key
