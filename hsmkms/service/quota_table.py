"""AWS KMS's default request quotas, as data: the ``quotas = "aws"`` profile.

From the AWS KMS Developer Guide, "Request quotas"
(https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html): requests per
second, per account and Region. Lines marked INFERRED are not on that page: hsmkms serves the
operation or key spec, and the figure is the nearest one AWS gives.

Bucket names (docs/quotas.md): an operation's own quota is named by the operation; a shared
quota of cryptographic operations by its key type (``symmetric``, ``rsa``, ``ecc``,
``ml-dsa``, ``ml-kem``); GenerateDataKeyPair's per-spec quota, which
GenerateDataKeyPairWithoutPlaintext shares, ``GenerateDataKeyPair:<KeyPairSpec>``.
"""

from __future__ import annotations

from hsmkms.config import PAIR_QUOTA

# -- an operation's own quota ------------------------------------------------------------------
OPERATIONS: dict[str, float] = {
    "CancelKeyDeletion": 5,
    "ConnectCustomKeyStore": 5,
    "CreateAlias": 5,
    "CreateCustomKeyStore": 5,
    "CreateGrant": 50,
    "CreateKey": 5,
    "DeleteAlias": 15,
    "DeleteCustomKeyStore": 5,
    "DeleteImportedKeyMaterial": 15,
    "DescribeCustomKeyStores": 5,
    "DescribeKey": 2000,
    "DisableKey": 5,
    "DisableKeyRotation": 5,
    "DisconnectCustomKeyStore": 5,
    "EnableKey": 5,
    "EnableKeyRotation": 15,
    "GetKeyLastUsage": 5,
    "GetKeyPolicy": 1000,
    "GetKeyRotationStatus": 1000,
    "GetParametersForImport": 1,
    "GetPublicKey": 2000,
    "ImportKeyMaterial": 15,
    "ListAliases": 500,
    "ListGrants": 100,
    "ListKeyPolicies": 100,
    "ListKeyRotations": 100,
    "ListKeys": 500,
    "ListResourceTags": 2000,
    "ListRetirableGrants": 100,
    "PutKeyPolicy": 15,
    "ReplicateKey": 5,  # and two CreateKey in the replica's Region (ELSEWHERE)
    "RetireGrant": 50,
    "RevokeGrant": 50,
    "RotateKeyOnDemand": 5,
    "ScheduleKeyDeletion": 15,
    "TagResource": 10,
    "UntagResource": 5,
    "UpdateAlias": 5,
    "UpdateCustomKeyStore": 5,
    "UpdateKeyDescription": 5,
    "UpdatePrimaryRegion": 5,  # in each of the two Regions (ELSEWHERE)
}

# Operations AWS also counts in another Region: the member that names the Region, the quota
# charged there, how many times. ReplicateKey: "one ReplicateKey request in the primary key's
# Region and two CreateKey requests in the replica's Region" (one of them a dry run);
# UpdatePrimaryRegion: "two UpdatePrimaryRegion requests; one request in each of the two
# affected Regions".
ELSEWHERE: dict[str, tuple[str, str, int]] = {
    "ReplicateKey": ("ReplicaRegion", "CreateKey", 2),
    "UpdatePrimaryRegion": ("PrimaryRegion", "UpdatePrimaryRegion", 1),
}

# -- the shared quotas of cryptographic operations, by key type ---------------------------------
SHARED: dict[str, float] = {
    "symmetric": 10_000,  # SYMMETRIC_DEFAULT and HMAC keys; more in some Regions (below)
    "rsa": 1_000,
    "ecc": 1_000,  # ECC and SM2 keys
    "ml-dsa": 1_000,
    "ml-kem": 1_000,  # INFERRED: AWS's page names no ML-KEM quota; the other key types' figure
}

# The operations each shared quota counts, with a key of its type. GenerateDataKeyPair and
# GenerateDataKeyPairWithoutPlaintext count in their per-spec quota instead (AWS: "which
# share a separate quota"); GenerateRandom counts in the symmetric quota with no key at all.
SHARED_OPERATIONS: dict[str, frozenset[str]] = {
    "symmetric": frozenset(
        {
            "Decrypt",
            "Encrypt",
            "GenerateDataKey",
            "GenerateDataKeyWithoutPlaintext",
            "GenerateMac",
            "GenerateRandom",
            "ReEncrypt",
            "VerifyMac",
        }
    ),
    "rsa": frozenset({"Decrypt", "Encrypt", "ReEncrypt", "Sign", "Verify"}),
    # Decrypt, Encrypt and ReEncrypt with SM2 keys (China Regions only).
    "ecc": frozenset({"Decrypt", "DeriveSharedSecret", "Encrypt", "ReEncrypt", "Sign", "Verify"}),
    "ml-dsa": frozenset({"Sign", "Verify"}),
    "ml-kem": frozenset({"Decapsulate", "Encapsulate"}),  # INFERRED (no ML-KEM line on the page)
}

# -- GenerateDataKeyPair(WithoutPlaintext), by KeyPairSpec ---------------------------------------
PAIRS: dict[str, float] = {
    "ECC_NIST_P256": 100,
    "ECC_NIST_P384": 100,
    "ECC_NIST_P521": 100,
    "ECC_SECG_P256K1": 100,
    "ECC_NIST_EDWARDS25519": 100,
    "RSA_2048": 20,
    "RSA_3072": 4,
    "RSA_4096": 1,
    "SM2": 25,  # China Regions only
    # INFERRED: AWS's page has no line for ML-KEM data key pairs; an ECC spec's figure.
    "ML_KEM_512": 100,
    "ML_KEM_768": 100,
    "ML_KEM_1024": 100,
}

_CHINA = ("cn-north-1", "cn-northwest-1")
_TWENTY_THOUSAND = (
    "us-east-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "eu-central-1",
    "eu-west-2",
)
_HUNDRED_THOUSAND = ("us-east-1", "us-west-2", "eu-west-1")

# Where a Region's figure differs from the default above.
REGIONAL: dict[str, dict[str, float]] = {
    "symmetric": {
        **{r: 20_000 for r in _TWENTY_THOUSAND},
        **{r: 100_000 for r in _HUNDRED_THOUSAND},
    },
    PAIR_QUOTA + "RSA_2048": {r: 1 for r in _CHINA},
    PAIR_QUOTA + "RSA_3072": {r: 0.5 for r in _CHINA},
    PAIR_QUOTA + "RSA_4096": {r: 0.1 for r in _CHINA},
}

# Every bucket of the profile at its default figure.
AWS: dict[str, float] = {
    **OPERATIONS,
    **SHARED,
    **{PAIR_QUOTA + spec: rate for spec, rate in PAIRS.items()},
}


def shared_quota(key_spec: str) -> str | None:
    """The shared quota a key of ``key_spec`` counts in (None: a spec hsmkms does not know)."""
    if key_spec == "SYMMETRIC_DEFAULT" or key_spec.startswith("HMAC_"):
        return "symmetric"
    if key_spec.startswith("RSA_"):
        return "rsa"
    # ECC_NIST_EDWARDS25519 too: INFERRED (an elliptic curve key; the page predates it).
    if key_spec.startswith("ECC_") or key_spec == "SM2":
        return "ecc"
    if key_spec.startswith("ML_DSA_"):
        return "ml-dsa"
    if key_spec.startswith("ML_KEM_"):
        return "ml-kem"
    return None


def aws_rate(region: str, name: str) -> float | None:
    """AWS's default quota of bucket ``name`` in ``region`` (None: AWS has no such quota)."""
    regional = REGIONAL.get(name)
    if regional is not None and region in regional:
        return regional[region]
    return AWS.get(name)
