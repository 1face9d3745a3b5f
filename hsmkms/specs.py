"""The nouns of KMS as enums: key specs, data key pair specs, states, usages, algorithms.

This is the one place a spec is described (DESIGN decision 12). Each :class:`KeySpec` and
:class:`DataKeyPairSpec` member carries what every layer needs of it: its family, its size or
curve, the usages and algorithms AWS allows it, the code the ciphertext blob stores for it
(docs/ciphertext-format.md) and the name of the PKCS#11 mechanism that generates it (a
python-pkcs11 ``Mechanism`` member name: only ``hsm/`` turns it into a CK_* value). Every enum
is a ``StrEnum`` whose values are AWS's strings, checked against botocore's KMS model by
``tests/unit/test_specs.py``; a member compares equal to its string, so the store and the wire
keep AWS's strings. Nothing here imports the rest of hsmkms.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class KeyState(StrEnum):
    CREATING = "Creating"
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING_DELETION = "PendingDeletion"
    PENDING_IMPORT = "PendingImport"
    PENDING_REPLICA_DELETION = "PendingReplicaDeletion"
    UNAVAILABLE = "Unavailable"
    UPDATING = "Updating"


class KeyUsage(StrEnum):
    SIGN_VERIFY = "SIGN_VERIFY"
    ENCRYPT_DECRYPT = "ENCRYPT_DECRYPT"
    GENERATE_VERIFY_MAC = "GENERATE_VERIFY_MAC"
    KEY_AGREEMENT = "KEY_AGREEMENT"
    ENCAPSULATE_DECAPSULATE = "ENCAPSULATE_DECAPSULATE"


class EncryptionAlgorithm(StrEnum):
    SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
    RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
    RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"
    SM2PKE = "SM2PKE"


class SigningAlgorithm(StrEnum):
    RSASSA_PSS_SHA_256 = "RSASSA_PSS_SHA_256"
    RSASSA_PSS_SHA_384 = "RSASSA_PSS_SHA_384"
    RSASSA_PSS_SHA_512 = "RSASSA_PSS_SHA_512"
    RSASSA_PKCS1_V1_5_SHA_256 = "RSASSA_PKCS1_V1_5_SHA_256"
    RSASSA_PKCS1_V1_5_SHA_384 = "RSASSA_PKCS1_V1_5_SHA_384"
    RSASSA_PKCS1_V1_5_SHA_512 = "RSASSA_PKCS1_V1_5_SHA_512"
    ECDSA_SHA_256 = "ECDSA_SHA_256"
    ECDSA_SHA_384 = "ECDSA_SHA_384"
    ECDSA_SHA_512 = "ECDSA_SHA_512"
    SM2DSA = "SM2DSA"
    ML_DSA_SHAKE_256 = "ML_DSA_SHAKE_256"
    ED25519_SHA_512 = "ED25519_SHA_512"
    ED25519_PH_SHA_512 = "ED25519_PH_SHA_512"


class MacAlgorithm(StrEnum):
    HMAC_SHA_224 = "HMAC_SHA_224"
    HMAC_SHA_256 = "HMAC_SHA_256"
    HMAC_SHA_384 = "HMAC_SHA_384"
    HMAC_SHA_512 = "HMAC_SHA_512"


class KeyAgreementAlgorithm(StrEnum):
    ECDH = "ECDH"


class DataKeySpec(StrEnum):
    """GenerateDataKey's KeySpec; ``size`` is the data key's length in bytes."""

    AES_256 = "AES_256"
    AES_128 = "AES_128"

    @property
    def size(self) -> int:
        return 32 if self is DataKeySpec.AES_256 else 16


class Origin(StrEnum):
    AWS_KMS = "AWS_KMS"
    EXTERNAL = "EXTERNAL"
    AWS_CLOUDHSM = "AWS_CLOUDHSM"
    EXTERNAL_KEY_STORE = "EXTERNAL_KEY_STORE"


class KeyManager(StrEnum):
    AWS = "AWS"
    CUSTOMER = "CUSTOMER"


class RotationType(StrEnum):
    AUTOMATIC = "AUTOMATIC"
    ON_DEMAND = "ON_DEMAND"


class DryRunModifier(StrEnum):
    IGNORE_CIPHERTEXT = "IGNORE_CIPHERTEXT"


class Family(StrEnum):
    """How a key's material is made and used: what the token layer dispatches on."""

    AES = "AES"
    RSA = "RSA"
    EC = "EC"
    EDWARDS = "EDWARDS"  # Ed25519 (RFC 8032)
    HMAC = "HMAC"
    SM2 = "SM2"
    ML_DSA = "ML_DSA"  # FIPS 204
    ML_KEM = "ML_KEM"  # FIPS 203


@dataclass(frozen=True)
class Curve:
    """An elliptic curve: its OpenSSL/asn1crypto name, its size in bits and the DER of its
    namedCurve OID (RFC 5480 section 2.1.1.1; RFC 8410 for Ed25519), PKCS#11's CKA_EC_PARAMS."""

    name: str
    bits: int
    oid_der: bytes

    @property
    def point_len(self) -> int:
        """Bytes of an uncompressed X9.62 point (0x04 || x || y)."""
        return 1 + 2 * ((self.bits + 7) // 8)


P256 = Curve("secp256r1", 256, bytes.fromhex("06082a8648ce3d030107"))
P384 = Curve("secp384r1", 384, bytes.fromhex("06052b81040022"))
P521 = Curve("secp521r1", 521, bytes.fromhex("06052b81040023"))
SECP256K1 = Curve("secp256k1", 256, bytes.fromhex("06052b8104000a"))
ED25519 = Curve("ed25519", 255, bytes.fromhex("06032b6570"))
SM2P256 = Curve("sm2p256v1", 256, bytes.fromhex("06082a811ccf5501822d"))

# The key-pair generation mechanism of each family, by python-pkcs11's Mechanism name.
_KEYGEN = {
    Family.AES: "AES_KEY_GEN",
    Family.RSA: "RSA_PKCS_KEY_PAIR_GEN",
    Family.EC: "EC_KEY_PAIR_GEN",
    Family.EDWARDS: "EC_EDWARDS_KEY_PAIR_GEN",
    Family.HMAC: "GENERIC_SECRET_KEY_GEN",
    Family.SM2: "EC_KEY_PAIR_GEN",
    Family.ML_DSA: "ML_DSA_KEY_PAIR_GEN",
    Family.ML_KEM: "ML_KEM_KEY_PAIR_GEN",
}

_S = SigningAlgorithm
_RSA_SIGNING = (
    _S.RSASSA_PSS_SHA_256,
    _S.RSASSA_PSS_SHA_384,
    _S.RSASSA_PSS_SHA_512,
    _S.RSASSA_PKCS1_V1_5_SHA_256,
    _S.RSASSA_PKCS1_V1_5_SHA_384,
    _S.RSASSA_PKCS1_V1_5_SHA_512,
)
_RSA_ENCRYPTION = (EncryptionAlgorithm.RSAES_OAEP_SHA_1, EncryptionAlgorithm.RSAES_OAEP_SHA_256)
_U = KeyUsage


class _Described(StrEnum):
    """A spec: an AWS string that carries its family, size and curve."""

    family: Family
    bits: int
    curve: Curve | None

    @property
    def mechanism(self) -> str:
        """The python-pkcs11 ``Mechanism`` name that generates a key of this spec."""
        return _KEYGEN[self.family]

    @property
    def china_only(self) -> bool:
        """SM2 is offered only in AWS's China Regions."""
        return self.family is Family.SM2

    @property
    def asymmetric(self) -> bool:
        return self.family not in (Family.AES, Family.HMAC)


class KeySpec(_Described):
    """CreateKey's KeySpec, with the usages and algorithms AWS allows each (AWS KMS Developer
    Guide, "Key spec reference")."""

    usages: tuple[KeyUsage, ...]
    encryption_algorithms: tuple[EncryptionAlgorithm, ...]
    signing_algorithms: tuple[SigningAlgorithm, ...]
    mac_algorithms: tuple[MacAlgorithm, ...]
    key_agreement_algorithms: tuple[KeyAgreementAlgorithm, ...]

    def __new__(
        cls,
        value: str,
        family: Family,
        bits: int,
        curve: Curve | None = None,
        usages: tuple[KeyUsage, ...] = (),
        encryption: tuple[EncryptionAlgorithm, ...] = (),
        signing: tuple[SigningAlgorithm, ...] = (),
        mac: tuple[MacAlgorithm, ...] = (),
        agreement: tuple[KeyAgreementAlgorithm, ...] = (),
    ) -> KeySpec:
        member = str.__new__(cls, value)
        member._value_ = value
        member.family, member.bits, member.curve = family, bits, curve
        member.usages = usages
        member.encryption_algorithms = encryption
        member.signing_algorithms = signing
        member.mac_algorithms = mac
        member.key_agreement_algorithms = agreement
        return member

    RSA_2048 = (
        "RSA_2048", Family.RSA, 2048, None,
        (_U.ENCRYPT_DECRYPT, _U.SIGN_VERIFY), _RSA_ENCRYPTION, _RSA_SIGNING,
    )  # fmt: skip
    RSA_3072 = (
        "RSA_3072", Family.RSA, 3072, None,
        (_U.ENCRYPT_DECRYPT, _U.SIGN_VERIFY), _RSA_ENCRYPTION, _RSA_SIGNING,
    )  # fmt: skip
    RSA_4096 = (
        "RSA_4096", Family.RSA, 4096, None,
        (_U.ENCRYPT_DECRYPT, _U.SIGN_VERIFY), _RSA_ENCRYPTION, _RSA_SIGNING,
    )  # fmt: skip
    ECC_NIST_P256 = (
        "ECC_NIST_P256", Family.EC, 256, P256, (_U.SIGN_VERIFY, _U.KEY_AGREEMENT),
        (), (_S.ECDSA_SHA_256,), (), (KeyAgreementAlgorithm.ECDH,),
    )  # fmt: skip
    ECC_NIST_P384 = (
        "ECC_NIST_P384", Family.EC, 384, P384, (_U.SIGN_VERIFY, _U.KEY_AGREEMENT),
        (), (_S.ECDSA_SHA_384,), (), (KeyAgreementAlgorithm.ECDH,),
    )  # fmt: skip
    ECC_NIST_P521 = (
        "ECC_NIST_P521", Family.EC, 521, P521, (_U.SIGN_VERIFY, _U.KEY_AGREEMENT),
        (), (_S.ECDSA_SHA_512,), (), (KeyAgreementAlgorithm.ECDH,),
    )  # fmt: skip
    ECC_SECG_P256K1 = (
        "ECC_SECG_P256K1", Family.EC, 256, SECP256K1, (_U.SIGN_VERIFY,), (), (_S.ECDSA_SHA_256,),
    )  # fmt: skip
    SYMMETRIC_DEFAULT = (
        "SYMMETRIC_DEFAULT", Family.AES, 256, None, (_U.ENCRYPT_DECRYPT,),
        (EncryptionAlgorithm.SYMMETRIC_DEFAULT,),
    )  # fmt: skip
    HMAC_224 = (
        "HMAC_224", Family.HMAC, 224, None, (_U.GENERATE_VERIFY_MAC,), (), (),
        (MacAlgorithm.HMAC_SHA_224,),
    )  # fmt: skip
    HMAC_256 = (
        "HMAC_256", Family.HMAC, 256, None, (_U.GENERATE_VERIFY_MAC,), (), (),
        (MacAlgorithm.HMAC_SHA_256,),
    )  # fmt: skip
    HMAC_384 = (
        "HMAC_384", Family.HMAC, 384, None, (_U.GENERATE_VERIFY_MAC,), (), (),
        (MacAlgorithm.HMAC_SHA_384,),
    )  # fmt: skip
    HMAC_512 = (
        "HMAC_512", Family.HMAC, 512, None, (_U.GENERATE_VERIFY_MAC,), (), (),
        (MacAlgorithm.HMAC_SHA_512,),
    )  # fmt: skip
    SM2 = (
        "SM2", Family.SM2, 256, SM2P256, (_U.ENCRYPT_DECRYPT, _U.SIGN_VERIFY, _U.KEY_AGREEMENT),
        (EncryptionAlgorithm.SM2PKE,), (_S.SM2DSA,), (), (KeyAgreementAlgorithm.ECDH,),
    )  # fmt: skip
    ML_DSA_44 = (
        "ML_DSA_44", Family.ML_DSA, 44, None, (_U.SIGN_VERIFY,), (), (_S.ML_DSA_SHAKE_256,),
    )  # fmt: skip
    ML_DSA_65 = (
        "ML_DSA_65", Family.ML_DSA, 65, None, (_U.SIGN_VERIFY,), (), (_S.ML_DSA_SHAKE_256,),
    )  # fmt: skip
    ML_DSA_87 = (
        "ML_DSA_87", Family.ML_DSA, 87, None, (_U.SIGN_VERIFY,), (), (_S.ML_DSA_SHAKE_256,),
    )  # fmt: skip
    ECC_NIST_EDWARDS25519 = (
        "ECC_NIST_EDWARDS25519", Family.EDWARDS, 255, ED25519, (_U.SIGN_VERIFY,), (),
        (_S.ED25519_SHA_512, _S.ED25519_PH_SHA_512),
    )  # fmt: skip
    ML_KEM_512 = ("ML_KEM_512", Family.ML_KEM, 512, None, (_U.ENCAPSULATE_DECAPSULATE,))
    ML_KEM_768 = ("ML_KEM_768", Family.ML_KEM, 768, None, (_U.ENCAPSULATE_DECAPSULATE,))
    ML_KEM_1024 = ("ML_KEM_1024", Family.ML_KEM, 1024, None, (_U.ENCAPSULATE_DECAPSULATE,))

    @property
    def default_usage(self) -> KeyUsage:
        """The KeyUsage CreateKey takes when none is given: ENCRYPT_DECRYPT where allowed."""
        return self.usages[0]


# CreateKey's deprecated CustomerMasterKeySpec: the KeySpecs that existed before 2022.
CUSTOMER_MASTER_KEY_SPECS: frozenset[KeySpec] = frozenset(
    s for s in KeySpec if s.family not in (Family.EDWARDS, Family.ML_DSA, Family.ML_KEM)
)


class DataKeyPairSpec(_Described):
    """GenerateDataKeyPair's KeyPairSpec. ``blob_code`` is the byte that names the spec in a
    token-wrapped private key blob (0: none is assigned yet)."""

    blob_code: int

    def __new__(
        cls, value: str, family: Family, bits: int, curve: Curve | None, blob_code: int
    ) -> DataKeyPairSpec:
        member = str.__new__(cls, value)
        member._value_ = value
        member.family, member.bits, member.curve = family, bits, curve
        member.blob_code = blob_code
        return member

    RSA_2048 = ("RSA_2048", Family.RSA, 2048, None, 0x01)
    RSA_3072 = ("RSA_3072", Family.RSA, 3072, None, 0x02)
    RSA_4096 = ("RSA_4096", Family.RSA, 4096, None, 0x03)
    ECC_NIST_P256 = ("ECC_NIST_P256", Family.EC, 256, P256, 0x11)
    ECC_NIST_P384 = ("ECC_NIST_P384", Family.EC, 384, P384, 0x12)
    ECC_NIST_P521 = ("ECC_NIST_P521", Family.EC, 521, P521, 0x13)
    ECC_SECG_P256K1 = ("ECC_SECG_P256K1", Family.EC, 256, SECP256K1, 0x14)
    SM2 = ("SM2", Family.SM2, 256, SM2P256, 0)
    ECC_NIST_EDWARDS25519 = ("ECC_NIST_EDWARDS25519", Family.EDWARDS, 255, ED25519, 0x21)
    ML_KEM_512 = ("ML_KEM_512", Family.ML_KEM, 512, None, 0)
    ML_KEM_768 = ("ML_KEM_768", Family.ML_KEM, 768, None, 0)
    ML_KEM_1024 = ("ML_KEM_1024", Family.ML_KEM, 1024, None, 0)

    @classmethod
    def by_blob_code(cls, code: int) -> DataKeyPairSpec | None:
        return _PAIR_BY_CODE.get(code)


_PAIR_BY_CODE = {s.blob_code: s for s in DataKeyPairSpec if s.blob_code}

# The specs whose pairs hsmkms makes today (host or token): RSA, the EC curves, Ed25519.
PAIR_FAMILIES = frozenset({Family.RSA, Family.EC, Family.EDWARDS})
SUPPORTED_PAIR_SPECS: tuple[DataKeyPairSpec, ...] = tuple(
    s for s in DataKeyPairSpec if s.family in PAIR_FAMILIES
)
