"""hsm/der.py: token components in, standard SPKI and PKCS#8 out (no token needed)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hsmkms.hsm import der
from hsmkms.specs import DataKeyPairSpec

SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
PKCS8 = (
    serialization.Encoding.DER,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)


def b(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def components(key: rsa.RSAPrivateKey) -> dict[str, bytes]:
    n = key.private_numbers()
    return {
        "modulus": b(n.public_numbers.n),
        "public_exponent": b(n.public_numbers.e),
        "private_exponent": b(n.d),
        "prime_1": b(n.p),
        "prime_2": b(n.q),
        "exponent_1": b(n.dmp1),
        "exponent_2": b(n.dmq1),
        "coefficient": b(n.iqmp),
    }


def test_rsa_components_rebuild_the_same_standard_der(rsa_key: rsa.RSAPrivateKey) -> None:
    spki, pkcs8 = der.rsa_private_pkcs8(**components(rsa_key))
    assert spki == rsa_key.public_key().public_bytes(*SPKI)
    assert pkcs8 == rsa_key.private_bytes(*PKCS8)
    c = components(rsa_key)
    assert der.rsa_public_spki(c["modulus"], c["public_exponent"]) == spki


@pytest.mark.parametrize("field", ["prime_1", "exponent_2", "coefficient", "private_exponent"])
def test_inconsistent_rsa_components_are_refused(rsa_key: rsa.RSAPrivateKey, field: str) -> None:
    c = components(rsa_key)
    c[field] = b(int.from_bytes(c[field], "big") ^ 2)
    with pytest.raises(der.DerError):
        der.rsa_private_pkcs8(**c)


@pytest.mark.parametrize(
    "spec", ["ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1"]
)
def test_ec_scalar_and_point_rebuild_standard_der(spec: str) -> None:
    pair = DataKeyPairSpec(spec)
    key = ec.generate_private_key(der.curve(pair))
    # CKA_VALUE is the bare scalar, as short as the token likes; CKA_EC_POINT an OCTET STRING.
    scalar = b(key.private_numbers().private_value)
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    spki, pkcs8 = der.ec_private_pkcs8(pair, scalar)
    assert spki == key.public_key().public_bytes(*SPKI)
    assert pkcs8 == key.private_bytes(*PKCS8)
    octet_string = (
        bytes([0x04, 0x81, len(point)]) + point
        if len(point) > 127
        else (bytes([0x04, len(point)]) + point)
    )
    assert der.ec_public_spki(pair, octet_string) == spki
    assert der.ec_public_spki(pair, point) == spki  # tokens that return the bare point


def test_a_point_off_the_curve_is_refused() -> None:
    pair = DataKeyPairSpec.ECC_NIST_P256
    with pytest.raises(der.DerError):
        der.ec_public_spki(pair, b"\x04" + bytes(64))
    with pytest.raises(der.DerError):
        der.ec_private_pkcs8(pair, bytes(32))  # zero is no private key
