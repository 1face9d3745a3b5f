"""The nouns of KMS as enums: key specs, data key pair specs, states, usages, algorithms.

This is the one place a spec is described (DESIGN decision 12). Each :class:`KeySpec` and
:class:`DataKeyPairSpec` member carries what every layer needs of it (its row of :data:`KEY_SPECS`
or :data:`DATA_KEY_PAIR_SPECS`, read through properties): its family, its size or curve, the
usages and algorithms AWS allows it, the code the ciphertext blob stores for it
(docs/ciphertext-format.md) and the name of the PKCS#11 mechanism that generates it (a
python-pkcs11 ``Mechanism`` member name: only ``hsm/`` turns it into a CK_* value). Every enum
is a ``StrEnum`` whose values are AWS's strings, checked against botocore's KMS model by
``tests/unit/test_specs.py``; a member compares equal to its string, so the store and the wire
keep AWS's strings. Nothing here imports the rest of hsmkms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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


class MessageType(StrEnum):
    """Sign and Verify's MessageType: the message itself, or its digest."""

    RAW = "RAW"
    DIGEST = "DIGEST"
    EXTERNAL_MU = "EXTERNAL_MU"  # ML-DSA's mu (FIPS 204)


class MacAlgorithm(StrEnum):
    HMAC_SHA_224 = "HMAC_SHA_224"
    HMAC_SHA_256 = "HMAC_SHA_256"
    HMAC_SHA_384 = "HMAC_SHA_384"
    HMAC_SHA_512 = "HMAC_SHA_512"


class KeyAgreementAlgorithm(StrEnum):
    ECDH = "ECDH"


class EncapsulationAlgorithm(StrEnum):
    ML_KEM = "ML_KEM"  # FIPS 203


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


class KeyMaterialState(StrEnum):  # a key material as ListKeyRotations names it
    NON_CURRENT = "NON_CURRENT"
    CURRENT = "CURRENT"
    PENDING_ROTATION = "PENDING_ROTATION"
    PENDING_MULTI_REGION_IMPORT_AND_ROTATION = "PENDING_MULTI_REGION_IMPORT_AND_ROTATION"


class ImportState(StrEnum):  # whether an imported material is on the token
    IMPORTED = "IMPORTED"
    PENDING_IMPORT = "PENDING_IMPORT"


class ExpirationModel(StrEnum):
    KEY_MATERIAL_EXPIRES = "KEY_MATERIAL_EXPIRES"
    KEY_MATERIAL_DOES_NOT_EXPIRE = "KEY_MATERIAL_DOES_NOT_EXPIRE"


class ImportType(StrEnum):
    NEW_KEY_MATERIAL = "NEW_KEY_MATERIAL"
    EXISTING_KEY_MATERIAL = "EXISTING_KEY_MATERIAL"


class WrappingAlgorithm(StrEnum):  # GetParametersForImport's (the model's AlgorithmSpec)
    RSAES_PKCS1_V1_5 = "RSAES_PKCS1_V1_5"
    RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
    RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"
    RSA_AES_KEY_WRAP_SHA_1 = "RSA_AES_KEY_WRAP_SHA_1"
    RSA_AES_KEY_WRAP_SHA_256 = "RSA_AES_KEY_WRAP_SHA_256"
    SM2PKE = "SM2PKE"


class WrappingKeySpec(StrEnum):
    RSA_2048, RSA_3072, RSA_4096, SM2 = "RSA_2048", "RSA_3072", "RSA_4096", "SM2"


class IncludeKeyMaterial(StrEnum):  # ListKeyRotations': every material, or rotations only
    ALL_KEY_MATERIAL = "ALL_KEY_MATERIAL"
    ROTATIONS_ONLY = "ROTATIONS_ONLY"


class GrantOperation(StrEnum):
    """An operation a grant may allow (CreateGrant's Operations)."""

    DECRYPT = "Decrypt"
    ENCRYPT = "Encrypt"
    GENERATE_DATA_KEY = "GenerateDataKey"
    GENERATE_DATA_KEY_WITHOUT_PLAINTEXT = "GenerateDataKeyWithoutPlaintext"
    RE_ENCRYPT_FROM = "ReEncryptFrom"
    RE_ENCRYPT_TO = "ReEncryptTo"
    SIGN = "Sign"
    VERIFY = "Verify"
    GET_PUBLIC_KEY = "GetPublicKey"
    CREATE_GRANT = "CreateGrant"
    RETIRE_GRANT = "RetireGrant"
    DESCRIBE_KEY = "DescribeKey"
    GENERATE_DATA_KEY_PAIR = "GenerateDataKeyPair"
    GENERATE_DATA_KEY_PAIR_WITHOUT_PLAINTEXT = "GenerateDataKeyPairWithoutPlaintext"
    GENERATE_MAC = "GenerateMac"
    VERIFY_MAC = "VerifyMac"
    DERIVE_SHARED_SECRET = "DeriveSharedSecret"
    ENCAPSULATE = "Encapsulate"
    DECAPSULATE = "Decapsulate"


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
_E = EncryptionAlgorithm
_M = MacAlgorithm
_U = KeyUsage
_ECDH = (KeyAgreementAlgorithm.ECDH,)
_RSA_SIGNING = (
    _S.RSASSA_PSS_SHA_256,
    _S.RSASSA_PSS_SHA_384,
    _S.RSASSA_PSS_SHA_512,
    _S.RSASSA_PKCS1_V1_5_SHA_256,
    _S.RSASSA_PKCS1_V1_5_SHA_384,
    _S.RSASSA_PKCS1_V1_5_SHA_512,
)
_RSA_ENCRYPTION = (_E.RSAES_OAEP_SHA_1, _E.RSAES_OAEP_SHA_256)


@dataclass(frozen=True)
class Facts:
    """What a spec is: the rows of the tables below."""

    family: Family
    bits: int  # key or modulus bits; the curve's field size; ML-DSA/ML-KEM's parameter set
    curve: Curve | None = None
    usages: tuple[KeyUsage, ...] = ()
    encryption: tuple[EncryptionAlgorithm, ...] = ()
    signing: tuple[SigningAlgorithm, ...] = ()
    mac: tuple[MacAlgorithm, ...] = ()
    agreement: tuple[KeyAgreementAlgorithm, ...] = ()
    encapsulation: tuple[EncapsulationAlgorithm, ...] = ()
    blob_code: int = 0  # data key pair specs: the byte naming it in a wrapped blob; 0: none


class _Described(StrEnum):
    """A spec: an AWS string whose facts are one row of its table."""

    @property
    def facts(self) -> Facts:
        raise NotImplementedError

    @property
    def family(self) -> Family:
        return self.facts.family

    @property
    def bits(self) -> int:
        return self.facts.bits

    @property
    def curve(self) -> Curve | None:
        return self.facts.curve

    @property
    def mechanism(self) -> str:
        """The python-pkcs11 ``Mechanism`` name that generates a key of this spec."""
        return _KEYGEN[self.facts.family]

    @property
    def china_only(self) -> bool:
        """SM2 is offered only in AWS's China Regions."""
        return self.facts.family is Family.SM2

    @property
    def asymmetric(self) -> bool:
        return self.facts.family not in (Family.AES, Family.HMAC)


class KeySpec(_Described):
    """CreateKey's KeySpec, with the usages and algorithms AWS allows each (AWS KMS Developer
    Guide, "Key spec reference"); the facts are :data:`KEY_SPECS`."""

    RSA_2048 = "RSA_2048"
    RSA_3072 = "RSA_3072"
    RSA_4096 = "RSA_4096"
    ECC_NIST_P256 = "ECC_NIST_P256"
    ECC_NIST_P384 = "ECC_NIST_P384"
    ECC_NIST_P521 = "ECC_NIST_P521"
    ECC_SECG_P256K1 = "ECC_SECG_P256K1"
    SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
    HMAC_224 = "HMAC_224"
    HMAC_256 = "HMAC_256"
    HMAC_384 = "HMAC_384"
    HMAC_512 = "HMAC_512"
    SM2 = "SM2"
    ML_DSA_44 = "ML_DSA_44"
    ML_DSA_65 = "ML_DSA_65"
    ML_DSA_87 = "ML_DSA_87"
    ECC_NIST_EDWARDS25519 = "ECC_NIST_EDWARDS25519"
    ML_KEM_512 = "ML_KEM_512"
    ML_KEM_768 = "ML_KEM_768"
    ML_KEM_1024 = "ML_KEM_1024"

    @property
    def facts(self) -> Facts:
        return KEY_SPECS[self]

    @property
    def usages(self) -> tuple[KeyUsage, ...]:
        return self.facts.usages

    @property
    def encryption_algorithms(self) -> tuple[EncryptionAlgorithm, ...]:
        return self.facts.encryption

    @property
    def signing_algorithms(self) -> tuple[SigningAlgorithm, ...]:
        return self.facts.signing

    @property
    def mac_algorithms(self) -> tuple[MacAlgorithm, ...]:
        return self.facts.mac

    @property
    def key_agreement_algorithms(self) -> tuple[KeyAgreementAlgorithm, ...]:
        return self.facts.agreement

    @property
    def encapsulation_algorithms(self) -> tuple[EncapsulationAlgorithm, ...]:
        return self.facts.encapsulation

    @property
    def default_usage(self) -> KeyUsage:
        """The KeyUsage CreateKey takes when none is given: ENCRYPT_DECRYPT where allowed."""
        return self.facts.usages[0]


_RSA = Facts(
    Family.RSA, 0, None, (_U.ENCRYPT_DECRYPT, _U.SIGN_VERIFY), _RSA_ENCRYPTION, _RSA_SIGNING
)
_EC = (_U.SIGN_VERIFY, _U.KEY_AGREEMENT)
_MLDSA = Facts(Family.ML_DSA, 0, None, (_U.SIGN_VERIFY,), signing=(_S.ML_DSA_SHAKE_256,))
_MLKEM = Facts(
    Family.ML_KEM,
    0,
    None,
    (_U.ENCAPSULATE_DECAPSULATE,),
    encapsulation=(EncapsulationAlgorithm.ML_KEM,),
)
_HMAC = Facts(Family.HMAC, 0, None, (_U.GENERATE_VERIFY_MAC,))

KEY_SPECS: dict[KeySpec, Facts] = {
    KeySpec.RSA_2048: replace(_RSA, bits=2048),
    KeySpec.RSA_3072: replace(_RSA, bits=3072),
    KeySpec.RSA_4096: replace(_RSA, bits=4096),
    KeySpec.ECC_NIST_P256: Facts(
        Family.EC, 256, P256, _EC, signing=(_S.ECDSA_SHA_256,), agreement=_ECDH
    ),
    KeySpec.ECC_NIST_P384: Facts(
        Family.EC, 384, P384, _EC, signing=(_S.ECDSA_SHA_384,), agreement=_ECDH
    ),
    KeySpec.ECC_NIST_P521: Facts(
        Family.EC, 521, P521, _EC, signing=(_S.ECDSA_SHA_512,), agreement=_ECDH
    ),
    KeySpec.ECC_SECG_P256K1: Facts(
        Family.EC, 256, SECP256K1, (_U.SIGN_VERIFY,), signing=(_S.ECDSA_SHA_256,)
    ),
    KeySpec.SYMMETRIC_DEFAULT: Facts(
        Family.AES, 256, None, (_U.ENCRYPT_DECRYPT,), (_E.SYMMETRIC_DEFAULT,)
    ),
    KeySpec.HMAC_224: replace(_HMAC, bits=224, mac=(_M.HMAC_SHA_224,)),
    KeySpec.HMAC_256: replace(_HMAC, bits=256, mac=(_M.HMAC_SHA_256,)),
    KeySpec.HMAC_384: replace(_HMAC, bits=384, mac=(_M.HMAC_SHA_384,)),
    KeySpec.HMAC_512: replace(_HMAC, bits=512, mac=(_M.HMAC_SHA_512,)),
    KeySpec.SM2: Facts(
        Family.SM2,
        256,
        SM2P256,
        (_U.ENCRYPT_DECRYPT, _U.SIGN_VERIFY, _U.KEY_AGREEMENT),
        (_E.SM2PKE,),
        (_S.SM2DSA,),
        agreement=_ECDH,
    ),
    KeySpec.ML_DSA_44: replace(_MLDSA, bits=44),
    KeySpec.ML_DSA_65: replace(_MLDSA, bits=65),
    KeySpec.ML_DSA_87: replace(_MLDSA, bits=87),
    KeySpec.ECC_NIST_EDWARDS25519: Facts(
        Family.EDWARDS,
        255,
        ED25519,
        (_U.SIGN_VERIFY,),
        signing=(_S.ED25519_SHA_512, _S.ED25519_PH_SHA_512),
    ),
    KeySpec.ML_KEM_512: replace(_MLKEM, bits=512),
    KeySpec.ML_KEM_768: replace(_MLKEM, bits=768),
    KeySpec.ML_KEM_1024: replace(_MLKEM, bits=1024),
}

# How each algorithm runs: its scheme and its hash (hashlib's and python-pkcs11's names minus
# the underscore: "SHA256"). Schemes: PSS and PKCS1 (RSASSA, RFC 8017), ECDSA (X9.62, DER
# signatures), EDDSA (RFC 8032 pure Ed25519) and EDDSA_PH (Ed25519ph), OAEP (RSAES-OAEP, MGF1
# with the same hash), HMAC (RFC 2104).
ALGORITHMS: dict[str, tuple[str, str]] = {
    **{f"RSASSA_PSS_SHA_{n}": ("PSS", f"SHA{n}") for n in (256, 384, 512)},
    **{f"RSASSA_PKCS1_V1_5_SHA_{n}": ("PKCS1", f"SHA{n}") for n in (256, 384, 512)},
    **{f"ECDSA_SHA_{n}": ("ECDSA", f"SHA{n}") for n in (256, 384, 512)},
    "ED25519_SHA_512": ("EDDSA", "SHA512"),
    "ED25519_PH_SHA_512": ("EDDSA_PH", "SHA512"),
    "ML_DSA_SHAKE_256": ("ML_DSA", "SHAKE256"),
    "RSAES_OAEP_SHA_1": ("OAEP", "SHA1"),
    "RSAES_OAEP_SHA_256": ("OAEP", "SHA256"),
    **{f"HMAC_SHA_{n}": ("HMAC", f"SHA{n}") for n in (224, 256, 384, 512)},
}
HASH_BYTES = {
    "SHA1": 20, "SHA224": 28, "SHA256": 32, "SHA384": 48, "SHA512": 64,
    "SHAKE256": 64,  # ML-DSA's mu (FIPS 204 section 6.2, EXTERNAL_MU)
}  # fmt: skip


# RSAES-OAEP's largest plaintext (RFC 8017 section 7.1.1): k - 2 * hLen - 2 bytes.
def oaep_max_plaintext(modulus_bits: int, hash_name: str) -> int:
    return modulus_bits // 8 - 2 * HASH_BYTES[hash_name] - 2


# CreateKey's deprecated CustomerMasterKeySpec: the KeySpecs that existed before 2022.
CUSTOMER_MASTER_KEY_SPECS: frozenset[KeySpec] = frozenset(
    s for s in KeySpec if s.family not in (Family.EDWARDS, Family.ML_DSA, Family.ML_KEM)
)


class DataKeyPairSpec(_Described):
    """GenerateDataKeyPair's KeyPairSpec; the facts are :data:`DATA_KEY_PAIR_SPECS`."""

    RSA_2048 = "RSA_2048"
    RSA_3072 = "RSA_3072"
    RSA_4096 = "RSA_4096"
    ECC_NIST_P256 = "ECC_NIST_P256"
    ECC_NIST_P384 = "ECC_NIST_P384"
    ECC_NIST_P521 = "ECC_NIST_P521"
    ECC_SECG_P256K1 = "ECC_SECG_P256K1"
    SM2 = "SM2"
    ECC_NIST_EDWARDS25519 = "ECC_NIST_EDWARDS25519"
    ML_KEM_512 = "ML_KEM_512"
    ML_KEM_768 = "ML_KEM_768"
    ML_KEM_1024 = "ML_KEM_1024"

    @property
    def facts(self) -> Facts:
        return DATA_KEY_PAIR_SPECS[self]

    @property
    def blob_code(self) -> int:
        """The byte that names the spec in a token-wrapped private key blob (0: none yet)."""
        return self.facts.blob_code

    @classmethod
    def by_blob_code(cls, code: int) -> DataKeyPairSpec | None:
        return _PAIR_BY_CODE.get(code)


DATA_KEY_PAIR_SPECS: dict[DataKeyPairSpec, Facts] = {
    DataKeyPairSpec.RSA_2048: Facts(Family.RSA, 2048, blob_code=0x01),
    DataKeyPairSpec.RSA_3072: Facts(Family.RSA, 3072, blob_code=0x02),
    DataKeyPairSpec.RSA_4096: Facts(Family.RSA, 4096, blob_code=0x03),
    DataKeyPairSpec.ECC_NIST_P256: Facts(Family.EC, 256, P256, blob_code=0x11),
    DataKeyPairSpec.ECC_NIST_P384: Facts(Family.EC, 384, P384, blob_code=0x12),
    DataKeyPairSpec.ECC_NIST_P521: Facts(Family.EC, 521, P521, blob_code=0x13),
    DataKeyPairSpec.ECC_SECG_P256K1: Facts(Family.EC, 256, SECP256K1, blob_code=0x14),
    DataKeyPairSpec.SM2: Facts(Family.SM2, 256, SM2P256),
    DataKeyPairSpec.ECC_NIST_EDWARDS25519: Facts(Family.EDWARDS, 255, ED25519, blob_code=0x21),
    DataKeyPairSpec.ML_KEM_512: Facts(Family.ML_KEM, 512),
    DataKeyPairSpec.ML_KEM_768: Facts(Family.ML_KEM, 768),
    DataKeyPairSpec.ML_KEM_1024: Facts(Family.ML_KEM, 1024),
}
_PAIR_BY_CODE = {f.blob_code: s for s, f in DATA_KEY_PAIR_SPECS.items() if f.blob_code}

# The specs whose pairs hsmkms makes today (host or token): RSA, the EC curves, Ed25519,
# ML-KEM but ML-KEM-512 (no constant-time implementation here: hsmkms/pq.py says why).
PAIR_FAMILIES = frozenset({Family.RSA, Family.EC, Family.EDWARDS, Family.ML_KEM})
SUPPORTED_PAIR_SPECS: tuple[DataKeyPairSpec, ...] = tuple(
    s for s in DataKeyPairSpec if s.family in PAIR_FAMILIES and s != DataKeyPairSpec.ML_KEM_512
)
