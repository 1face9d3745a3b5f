"""Standard DER for key pairs read out of a token: pure functions, no token calls.

What a PKCS#11 token gives back is components (CKA_MODULUS, CKA_EC_POINT, CKA_VALUE, ...),
and what SoftHSM2 puts in a wrap is its own PKCS#8 (zero-padded, EC keys without the public
key). We never pass either on: every key leaves this layer rebuilt by cryptography as

* SubjectPublicKeyInfo (RFC 5280 section 4.1): ``rsaEncryption`` with NULL parameters
  (RFC 3279 section 2.3.1) or ``id-ecPublicKey`` with a named curve and an uncompressed point
  (RFC 5480 section 2);
* PKCS#8 PrivateKeyInfo, i.e. RFC 5958 OneAsymmetricKey version 1 (v1 = 0): RSAPrivateKey of
  RFC 8017 appendix A.1.2, or ECPrivateKey of RFC 5915 carrying its public key.
"""

from __future__ import annotations

from asn1crypto import core
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from hsmkms.specs import Curve, DataKeyPairSpec

_PKCS8 = (
    serialization.Encoding.DER,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# The cryptography curve of each specs.Curve a token pair may be on, by its name.
_CURVES: dict[str, ec.EllipticCurve] = {
    "secp256r1": ec.SECP256R1(),
    "secp384r1": ec.SECP384R1(),
    "secp521r1": ec.SECP521R1(),
    "secp256k1": ec.SECP256K1(),
}


class DerError(ValueError):
    """Components that do not make a valid key (a token bug or a tampered wrap)."""


def _int(value: bytes) -> int:
    return int.from_bytes(value, "big")


def _curve_of(spec: DataKeyPairSpec) -> Curve:
    if spec.curve is None:
        raise DerError(f"{spec} is not on an elliptic curve")
    return spec.curve


def curve(spec: DataKeyPairSpec) -> ec.EllipticCurve:
    """The cryptography curve of an EC ``spec``."""
    return _CURVES[_curve_of(spec).name]


def rsa_public_spki(modulus: bytes, public_exponent: bytes) -> bytes:
    """SubjectPublicKeyInfo for rsaEncryption (RFC 3279 2.3.1) from CKA_MODULUS/EXPONENT.

    python-pkcs11's ``encode_rsa_public_key`` stops at PKCS#1 RSAPublicKey; KMS and every
    client expect it inside SubjectPublicKeyInfo.
    """
    try:
        public = rsa.RSAPublicNumbers(_int(public_exponent), _int(modulus)).public_key()
    except ValueError as exc:
        raise DerError(f"invalid RSA public key: {exc}") from None
    return public.public_bytes(*_SPKI)


def rsa_private_pkcs8(
    *,
    modulus: bytes,
    public_exponent: bytes,
    private_exponent: bytes,
    prime_1: bytes,
    prime_2: bytes,
    exponent_1: bytes,
    exponent_2: bytes,
    coefficient: bytes,
) -> tuple[bytes, bytes]:
    """(SPKI, PKCS#8) from the CRT attributes of a PKCS#11 RSA private key (RFC 8017 A.1.2)."""
    n, e, d = _int(modulus), _int(public_exponent), _int(private_exponent)
    p, q = _int(prime_1), _int(prime_2)
    dmp1, dmq1, iqmp = _int(exponent_1), _int(exponent_2), _int(coefficient)
    # The arithmetic that ties the CRT values together (RFC 8017 3.2). OpenSSL's own check
    # also proves p and q prime, which costs 0.26 s for RSA-4096; the token made these
    # primes (or KWP authenticated them), so the cheap consistency check is what we need.
    if not (
        p > 1
        and q > 1
        and p * q == n
        and dmp1 == d % (p - 1)
        and dmq1 == d % (q - 1)
        and (iqmp * q) % p == 1
        and (e * dmp1) % (p - 1) == 1
        and (e * dmq1) % (q - 1) == 1
    ):
        raise DerError("the RSA CRT values are inconsistent")
    try:
        numbers = rsa.RSAPrivateNumbers(
            p=p,
            q=q,
            d=d,
            dmp1=dmp1,
            dmq1=dmq1,
            iqmp=iqmp,
            public_numbers=rsa.RSAPublicNumbers(e, n),
        )
        private = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    except ValueError as exc:
        raise DerError(f"invalid RSA private key: {exc}") from None
    return private.public_key().public_bytes(*_SPKI), private.private_bytes(*_PKCS8)


def ec_point(spec: DataKeyPairSpec, ec_point_attribute: bytes) -> bytes:
    """The uncompressed X9.62 point in CKA_EC_POINT, which PKCS#11 v2.40 wraps in a DER OCTET
    STRING and a few tokens return bare; the curve's point length tells which."""
    size = _curve_of(spec).point_len
    try:
        inner = bytes(core.OctetString.load(ec_point_attribute, strict=True).native)
    except (ValueError, TypeError):
        inner = b""
    if len(inner) == size and inner[:1] == b"\x04":
        return inner
    if len(ec_point_attribute) == size and ec_point_attribute[:1] == b"\x04":
        return bytes(ec_point_attribute)
    raise DerError(f"CKA_EC_POINT is not an uncompressed {spec} point")


def ec_public_spki(spec: DataKeyPairSpec, ec_point_attribute: bytes) -> bytes:
    """SubjectPublicKeyInfo for id-ecPublicKey with a named curve (RFC 5480 section 2)."""
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(
            curve(spec), ec_point(spec, ec_point_attribute)
        )
    except ValueError as exc:
        raise DerError(f"invalid {spec} public point: {exc}") from None
    return public.public_bytes(*_SPKI)


def ec_private_pkcs8(spec: DataKeyPairSpec, value: bytes) -> tuple[bytes, bytes]:
    """(SPKI, PKCS#8) from the private scalar CKA_VALUE of a PKCS#11 EC private key.

    The ECPrivateKey (RFC 5915) that cryptography writes carries the public key, which the
    PKCS#8 inside a SoftHSM2 wrap leaves out; the curve goes in the AlgorithmIdentifier.
    """
    try:
        private = ec.derive_private_key(_int(value), curve(spec))
    except ValueError as exc:
        raise DerError(f"invalid {spec} private scalar: {exc}") from None
    return private.public_key().public_bytes(*_SPKI), private.private_bytes(*_PKCS8)


def ed25519_public_spki(ec_point_attribute: bytes) -> bytes:
    """SubjectPublicKeyInfo for id-Ed25519 (RFC 8410) from CKA_EC_POINT: the 32-byte point,
    in a DER OCTET STRING (PKCS#11 v3.0) or bare."""
    try:
        inner = bytes(core.OctetString.load(ec_point_attribute, strict=True).native)
    except (ValueError, TypeError):
        inner = bytes(ec_point_attribute)
    if len(inner) != 32:
        raise DerError("CKA_EC_POINT is not a 32-byte Ed25519 point")
    try:
        public = ed25519.Ed25519PublicKey.from_public_bytes(inner)
    except ValueError as exc:
        raise DerError(f"invalid Ed25519 public key: {exc}") from None
    return public.public_bytes(*_SPKI)


def ecdsa_signature(raw: bytes) -> bytes:
    """The DER ECDSA-Sig-Value (RFC 3279 section 2.2.3) of PKCS#11's r || s."""
    if not raw or len(raw) % 2:
        raise DerError("an ECDSA signature from the token is r || s of equal lengths")
    half = len(raw) // 2
    return bytes(encode_dss_signature(_int(raw[:half]), _int(raw[half:])))
