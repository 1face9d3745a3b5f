"""Key policies and grants for asymmetric and HMAC keys (issue 14), below the operations.

What a key policy sees of a Sign, Verify, GenerateMac, VerifyMac, DeriveSharedSecret and an RSA
Encrypt, Decrypt or ReEncrypt (AWS's kms:SigningAlgorithm, kms:MessageType, kms:MacAlgorithm,
kms:KeyAgreementAlgorithm, kms:EncryptionAlgorithm, kms:KeySpec, kms:KeyUsage), the grant
operations AWS allows by key type (AWS KMS Developer Guide, "Grant operations"), and grants
deciding such requests through :func:`hsmkms.service.policy.authorize`.

A service of its own: the session's token and a SQLite store in a temporary directory, whose
key records are written as CreateKey would write them (their material is never used: nothing
here signs), so the session home's store keeps only keys the token holds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from helpers import raises

from hsmkms import errors
from hsmkms.kms import KMS, Caller
from hsmkms.service import Service, policy
from hsmkms.service.core import Request
from hsmkms.service.grants import (
    SYMMETRIC_OPERATIONS,
    context_operations,
    grant_operations,
)
from hsmkms.service.policy_eval import condition_keys
from hsmkms.specs import GrantOperation, KeySpec
from hsmkms.store import KeyRecord, MaterialRecord, open_store

A = "111122223333"
ADMIN = Caller(A, f"arn:aws:iam::{A}:user/admin")
BOB = Caller("444455556666", "arn:aws:iam::444455556666:user/bob")


@pytest.fixture(scope="module")
def svc(settings: Any, token: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from hsmkms.compose import build_service

    store = open_store(str(tmp_path_factory.mktemp("asym-authz") / "store.sqlite3"))
    service = build_service(settings, token, store)
    yield service
    service.pool.close()
    service.store.close()


def admin_policy(*statements: dict[str, Any]) -> str:
    admin = {
        "Effect": "Allow",
        "Principal": {"AWS": ADMIN.principal_arn},
        "Action": "kms:*",
        "Resource": "*",
    }
    return json.dumps({"Version": "2012-10-17", "Statement": [admin, *statements]})


def new_key(svc: Service, spec: str, usage: str, policy_text: str | None = None) -> KeyRecord:
    """A key record of ``spec`` and ``usage`` as CreateKey writes one (material unused)."""
    now = datetime.now(UTC)
    key_id, material_id = str(uuid.uuid4()), uuid.uuid4().hex * 2
    key = KeyRecord(
        key_id=key_id,
        account_id=A,
        region=svc.region,
        key_usage=usage,
        key_spec=spec,
        origin="AWS_KMS",
        key_manager="CUSTOMER",
        state="Enabled",
        created_at=now,
        policy=policy_text or admin_policy(),
        current_material_id=material_id,
    )
    svc.store.inner.create_key(key, MaterialRecord(material_id, key_id, now), {})
    return key


def context(
    svc: Service, key: KeyRecord, operation: str, caller: Caller = ADMIN, **params: Any
) -> Any:
    req = Request(operation, {"KeyId": key.arn, **params}, caller)
    return policy.request_context(svc, req, key, operation, key.arn)


def value(ctx: Any, condition_key: str) -> str | None:
    values = ctx.values(condition_key)
    return None if values is None else values[0]


# -- condition keys filled from the request ------------------------------------------------
@pytest.mark.parametrize("operation", ["Sign", "Verify"])
def test_sign_and_verify_carry_the_signing_algorithm_and_the_message_type(svc, operation):
    key = new_key(svc, "RSA_2048", "SIGN_VERIFY")
    ctx = context(svc, key, operation, SigningAlgorithm="RSASSA_PSS_SHA_256", Message=b"m")
    assert value(ctx, "kms:SigningAlgorithm") == "RSASSA_PSS_SHA_256"
    assert value(ctx, "kms:MessageType") == "RAW"  # AWS's default when the request has none
    ctx = context(
        svc, key, operation, SigningAlgorithm="RSASSA_PKCS1_V1_5_SHA_256", MessageType="DIGEST"
    )
    assert value(ctx, "kms:SigningAlgorithm") == "RSASSA_PKCS1_V1_5_SHA_256"
    assert value(ctx, "kms:MessageType") == "DIGEST"
    assert value(ctx, "kms:MacAlgorithm") is None
    assert value(ctx, "kms:EncryptionAlgorithm") is None


@pytest.mark.parametrize("operation", ["GenerateMac", "VerifyMac"])
def test_mac_operations_carry_the_mac_algorithm(svc, operation):
    key = new_key(svc, "HMAC_384", "GENERATE_VERIFY_MAC")
    ctx = context(svc, key, operation, MacAlgorithm="HMAC_SHA_384", Message=b"m")
    assert value(ctx, "kms:MacAlgorithm") == "HMAC_SHA_384"
    assert value(ctx, "kms:SigningAlgorithm") is None
    assert value(ctx, "kms:MessageType") is None


def test_derive_shared_secret_carries_the_key_agreement_algorithm(svc):
    key = new_key(svc, "ECC_NIST_P256", "KEY_AGREEMENT")
    ctx = context(svc, key, "DeriveSharedSecret", KeyAgreementAlgorithm="ECDH", PublicKey=b"k")
    assert value(ctx, "kms:KeyAgreementAlgorithm") == "ECDH"


def test_the_new_keys_are_absent_from_other_operations(svc):
    key = new_key(svc, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
    ctx = context(svc, key, "Encrypt", Plaintext=b"x")
    for name in (
        "kms:SigningAlgorithm",
        "kms:MessageType",
        "kms:MacAlgorithm",
        "kms:KeyAgreementAlgorithm",
    ):
        assert ctx.values(name) is None, name


@pytest.mark.parametrize(
    ("operation", "member", "algorithm"),
    [
        ("Encrypt", "EncryptionAlgorithm", "RSAES_OAEP_SHA_256"),
        ("Decrypt", "EncryptionAlgorithm", "RSAES_OAEP_SHA_1"),
        ("ReEncryptFrom", "SourceEncryptionAlgorithm", "RSAES_OAEP_SHA_256"),
        ("ReEncryptTo", "DestinationEncryptionAlgorithm", "RSAES_OAEP_SHA_1"),
    ],
)
def test_rsa_encryption_carries_the_requested_encryption_algorithm(
    svc, operation, member, algorithm
):
    key = new_key(svc, "RSA_3072", "ENCRYPT_DECRYPT")
    ctx = context(svc, key, operation, CiphertextBlob=b"\x00" * 384, **{member: algorithm})
    assert value(ctx, "kms:EncryptionAlgorithm") == algorithm


@pytest.mark.parametrize(
    ("spec", "usage"),
    [
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"),
        ("RSA_2048", "ENCRYPT_DECRYPT"),
        ("RSA_4096", "SIGN_VERIFY"),
        ("ECC_NIST_P384", "SIGN_VERIFY"),
        ("ECC_NIST_P521", "KEY_AGREEMENT"),
        ("ECC_SECG_P256K1", "SIGN_VERIFY"),
        ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY"),
        ("HMAC_224", "GENERATE_VERIFY_MAC"),
        ("HMAC_512", "GENERATE_VERIFY_MAC"),
    ],
)
def test_key_spec_and_key_usage_are_the_keys_own_for_every_key_type(svc, spec, usage):
    key = new_key(svc, spec, usage)
    for operation in ("DescribeKey", "GetPublicKey", "Sign", "GenerateMac", "CreateGrant"):
        ctx = context(svc, key, operation)
        assert value(ctx, "kms:KeySpec") == spec
        assert value(ctx, "kms:KeyUsage") == usage
        assert value(ctx, "kms:CustomerMasterKeySpec") == spec
        assert value(ctx, "kms:CustomerMasterKeyUsage") == usage


def test_re_encrypt_to_from_an_rsa_source_tells_the_same_key_by_source_key_id(svc):
    # An RSA ciphertext names no key (it is no hsmkms blob): SourceKeyId, which ReEncrypt then
    # requires, does; a Deny on kms:ReEncryptOnSameKey no longer fails open for it.
    rsa = new_key(svc, "RSA_2048", "ENCRYPT_DECRYPT")
    other = new_key(svc, "RSA_2048", "ENCRYPT_DECRYPT")
    rsa_ciphertext = b"\x5a" * 256
    same = context(svc, rsa, "ReEncryptTo", CiphertextBlob=rsa_ciphertext, SourceKeyId=rsa.arn)
    assert value(same, "kms:ReEncryptOnSameKey") == "true"
    moved = context(svc, rsa, "ReEncryptTo", CiphertextBlob=rsa_ciphertext, SourceKeyId=other.arn)
    assert value(moved, "kms:ReEncryptOnSameKey") == "false"
    unnamed = context(svc, rsa, "ReEncryptTo", CiphertextBlob=rsa_ciphertext)
    assert unnamed.values("kms:ReEncryptOnSameKey") is None


@pytest.mark.parametrize(
    "name",
    ["kms:SigningAlgorithm", "kms:MessageType", "kms:MacAlgorithm", "kms:KeyAgreementAlgorithm"],
)
def test_the_new_condition_keys_are_filled_not_absent_and_a_new_policy_may_use_them(name):
    assert name.lower() in condition_keys.FILLED
    assert name.lower() not in condition_keys.ABSENT
    assert not condition_keys.unknowable(name)
    policy.parse_policy(
        admin_policy(
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "kms:*",
                "Resource": "*",
                "Condition": {"StringEquals": {name: "x"}},
            }
        )
    )


def test_the_other_absent_keys_stay_absent():
    assert "kms:viaservice" in condition_keys.ABSENT
    for name in ("kms:MultiRegionKeyType", "kms:ReplicaRegion", "kms:PrimaryRegion"):
        assert name.lower() in condition_keys.FILLED  # multi-Region keys exist now


# -- grant operations by key type --------------------------------------------------------------
_MANAGEMENT = {"CreateGrant", "RetireGrant", "DescribeKey"}


@pytest.mark.parametrize(
    ("spec", "usage", "expected"),
    [
        (
            "SYMMETRIC_DEFAULT",
            "ENCRYPT_DECRYPT",
            {
                "Decrypt",
                "Encrypt",
                "GenerateDataKey",
                "GenerateDataKeyWithoutPlaintext",
                "GenerateDataKeyPair",
                "GenerateDataKeyPairWithoutPlaintext",
                "ReEncryptFrom",
                "ReEncryptTo",
            },
        ),
        (
            "RSA_2048",
            "ENCRYPT_DECRYPT",
            {"Decrypt", "Encrypt", "ReEncryptFrom", "ReEncryptTo", "GetPublicKey"},
        ),
        ("RSA_3072", "SIGN_VERIFY", {"Sign", "Verify", "GetPublicKey"}),
        ("ECC_NIST_P256", "SIGN_VERIFY", {"Sign", "Verify", "GetPublicKey"}),
        ("ECC_NIST_EDWARDS25519", "SIGN_VERIFY", {"Sign", "Verify", "GetPublicKey"}),
        ("HMAC_256", "GENERATE_VERIFY_MAC", {"GenerateMac", "VerifyMac"}),
        ("ECC_NIST_P384", "KEY_AGREEMENT", {"DeriveSharedSecret", "GetPublicKey"}),
    ],
)
def test_the_grant_operations_of_each_key_type_are_awss(svc, spec, usage, expected):
    key = new_key(svc, spec, usage)
    assert set(grant_operations(key)) == expected | _MANAGEMENT
    assert set(GrantOperation) >= set(grant_operations(key))


def test_only_a_symmetric_keys_operations_take_an_encryption_context(svc):
    symmetric = new_key(svc, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
    assert context_operations(symmetric) == SYMMETRIC_OPERATIONS - _MANAGEMENT
    for spec, usage in [("RSA_2048", "ENCRYPT_DECRYPT"), ("HMAC_256", "GENERATE_VERIFY_MAC")]:
        assert context_operations(new_key(svc, spec, usage)) == frozenset()


@pytest.mark.parametrize(
    ("spec", "usage", "operation"),
    [
        ("RSA_2048", "ENCRYPT_DECRYPT", "GenerateMac"),
        ("RSA_2048", "ENCRYPT_DECRYPT", "Sign"),
        ("RSA_2048", "ENCRYPT_DECRYPT", "GenerateDataKey"),
        ("RSA_2048", "SIGN_VERIFY", "Encrypt"),
        ("ECC_NIST_P256", "SIGN_VERIFY", "DeriveSharedSecret"),
        ("ECC_NIST_P256", "KEY_AGREEMENT", "Sign"),
        ("HMAC_256", "GENERATE_VERIFY_MAC", "GetPublicKey"),
        ("HMAC_256", "GENERATE_VERIFY_MAC", "Decrypt"),
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "Sign"),
        ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", "GetPublicKey"),
    ],
)
def test_create_grant_refuses_an_operation_the_key_type_does_not_offer(svc, spec, usage, operation):
    key = new_key(svc, spec, usage)
    kms = KMS.from_service(svc).as_caller(ADMIN)
    with raises("ValidationException", f"Grant operation {operation} is not valid for {key.arn}"):
        kms.create_grant(KeyId=key.arn, GranteePrincipal=BOB.principal_arn, Operations=[operation])


@pytest.mark.parametrize(
    ("spec", "usage", "operations"),
    [
        ("RSA_2048", "SIGN_VERIFY", ["Sign", "Verify", "GetPublicKey", "DescribeKey"]),
        ("RSA_2048", "ENCRYPT_DECRYPT", ["Encrypt", "Decrypt", "ReEncryptFrom", "ReEncryptTo"]),
        ("HMAC_256", "GENERATE_VERIFY_MAC", ["GenerateMac", "VerifyMac", "RetireGrant"]),
        ("ECC_NIST_P256", "KEY_AGREEMENT", ["DeriveSharedSecret", "GetPublicKey", "CreateGrant"]),
    ],
)
def test_create_grant_allows_the_operations_of_the_key_type(svc, spec, usage, operations):
    key = new_key(svc, spec, usage)
    kms = KMS.from_service(svc).as_caller(ADMIN)
    kms.create_grant(KeyId=key.arn, GranteePrincipal=BOB.principal_arn, Operations=operations)
    (listed,) = kms.list_grants(KeyId=key.arn)["Grants"]
    assert listed["Operations"] == operations


@pytest.mark.parametrize(
    ("spec", "usage", "operation"),
    [
        ("RSA_2048", "SIGN_VERIFY", "Sign"),
        ("RSA_2048", "ENCRYPT_DECRYPT", "Decrypt"),  # an RSA Decrypt takes no context
        ("HMAC_256", "GENERATE_VERIFY_MAC", "GenerateMac"),
    ],
)
@pytest.mark.parametrize("constraint", ["EncryptionContextEquals", "EncryptionContextSubset"])
def test_an_encryption_context_constraint_is_refused_for_an_operation_without_context(
    svc, spec, usage, operation, constraint
):
    key = new_key(svc, spec, usage)
    kms = KMS.from_service(svc).as_caller(ADMIN)
    with raises("ValidationException", f"not valid for grant operation {operation}"):
        kms.create_grant(
            KeyId=key.arn,
            GranteePrincipal=BOB.principal_arn,
            Operations=["DescribeKey", operation],
            Constraints={constraint: {"dept": "x"}},
        )
    assert kms.list_grants(KeyId=key.arn)["Grants"] == []


def test_constraints_stay_allowed_where_they_apply_or_are_ignored(svc):
    kms = KMS.from_service(svc).as_caller(ADMIN)
    rsa = new_key(svc, "RSA_2048", "SIGN_VERIFY")
    kms.create_grant(  # DescribeKey, RetireGrant, CreateGrant: constraints do not apply (AWS)
        KeyId=rsa.arn,
        GranteePrincipal=BOB.principal_arn,
        Operations=["DescribeKey", "RetireGrant", "CreateGrant"],
        Constraints={"EncryptionContextSubset": {"dept": "x"}},
    )
    symmetric = new_key(svc, "SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
    kms.create_grant(
        KeyId=symmetric.arn,
        GranteePrincipal=BOB.principal_arn,
        Operations=["Encrypt", "GenerateDataKeyPair", "DescribeKey"],
        Constraints={"EncryptionContextEquals": {"dept": "x"}},
    )


# -- grants in authorization --------------------------------------------------------------------
def authorize(svc: Service, key: KeyRecord, operation: str, caller: Caller, **params: Any) -> None:
    req = Request(operation, {"KeyId": key.arn, **params}, caller)
    policy.authorize(svc, req, key, operation, requested=key.arn)


def grant(svc: Service, key: KeyRecord, operations: list[str]) -> str:
    kms = KMS.from_service(svc).as_caller(ADMIN)
    out = kms.create_grant(KeyId=key.arn, GranteePrincipal=BOB.principal_arn, Operations=operations)
    return str(out["GrantToken"])


SIGN = {"SigningAlgorithm": "RSASSA_PSS_SHA_256", "Message": b"m"}


def test_a_sign_grant_lets_its_grantee_sign_and_a_verify_grant_does_not(svc):
    key = new_key(svc, "RSA_2048", "SIGN_VERIFY")
    with pytest.raises(errors.AccessDeniedException, match="kms:Sign"):
        authorize(svc, key, "Sign", BOB, **SIGN)
    verify_only = grant(svc, key, ["Verify"])
    with pytest.raises(errors.AccessDeniedException, match="kms:Sign"):
        authorize(svc, key, "Sign", BOB, GrantTokens=[verify_only], **SIGN)
    authorize(svc, key, "Verify", BOB, GrantTokens=[verify_only], Signature=b"s", **SIGN)
    sign = grant(svc, key, ["Sign"])
    authorize(svc, key, "Sign", BOB, GrantTokens=[sign], **SIGN)
    with pytest.raises(errors.AccessDeniedException, match="kms:GetPublicKey"):
        authorize(svc, key, "GetPublicKey", BOB, GrantTokens=[sign])


@pytest.mark.parametrize(
    ("spec", "usage", "operation", "params"),
    [
        ("HMAC_256", "GENERATE_VERIFY_MAC", "GenerateMac", {"MacAlgorithm": "HMAC_SHA_256"}),
        ("HMAC_256", "GENERATE_VERIFY_MAC", "VerifyMac", {"MacAlgorithm": "HMAC_SHA_256"}),
        ("ECC_NIST_P256", "KEY_AGREEMENT", "DeriveSharedSecret", {"KeyAgreementAlgorithm": "ECDH"}),
        ("ECC_NIST_P256", "KEY_AGREEMENT", "GetPublicKey", {}),
        ("RSA_2048", "ENCRYPT_DECRYPT", "Encrypt", {"EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}),
        ("RSA_2048", "ENCRYPT_DECRYPT", "Decrypt", {"EncryptionAlgorithm": "RSAES_OAEP_SHA_1"}),
    ],
)
def test_a_grant_allows_each_operation_of_its_key_type(svc, spec, usage, operation, params):
    key = new_key(svc, spec, usage)
    with pytest.raises(errors.AccessDeniedException):
        authorize(svc, key, operation, BOB, **params)
    token = grant(svc, key, [operation])
    authorize(svc, key, operation, BOB, GrantTokens=[token], **params)


def test_a_key_policy_deny_on_the_signing_algorithm_beats_a_grant(svc):
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:Sign",
        "Resource": "*",
        "Condition": {"StringEquals": {"kms:SigningAlgorithm": "RSASSA_PKCS1_V1_5_SHA_256"}},
    }
    key = new_key(svc, "RSA_2048", "SIGN_VERIFY", admin_policy(deny))
    token = grant(svc, key, ["Sign"])
    pkcs1 = {"SigningAlgorithm": "RSASSA_PKCS1_V1_5_SHA_256", "Message": b"m"}
    with pytest.raises(errors.AccessDeniedException, match="explicit deny"):
        authorize(svc, key, "Sign", BOB, GrantTokens=[token], **pkcs1)
    with pytest.raises(errors.AccessDeniedException, match="explicit deny"):
        authorize(svc, key, "Sign", ADMIN, **pkcs1)
    authorize(svc, key, "Sign", BOB, GrantTokens=[token], **SIGN)
    authorize(svc, key, "Sign", ADMIN, **SIGN)


def test_a_key_policy_may_allow_only_digests_and_one_mac_algorithm(svc):
    allow_digest = {
        "Effect": "Allow",
        "Principal": {"AWS": BOB.principal_arn},
        "Action": ["kms:Sign", "kms:GenerateMac"],
        "Resource": "*",
        "Condition": {
            "StringEquals": {"kms:MessageType": "DIGEST"},
        },
    }
    allow_mac = dict(allow_digest, Condition={"StringEquals": {"kms:MacAlgorithm": "HMAC_SHA_512"}})
    rsa = new_key(svc, "RSA_2048", "SIGN_VERIFY", admin_policy(allow_digest))
    authorize(svc, rsa, "Sign", BOB, MessageType="DIGEST", **SIGN)
    with pytest.raises(errors.AccessDeniedException, match="no resource-based policy allows"):
        authorize(svc, rsa, "Sign", BOB, **SIGN)  # RAW, the default
    hmac = new_key(svc, "HMAC_512", "GENERATE_VERIFY_MAC", admin_policy(allow_mac))
    authorize(svc, hmac, "GenerateMac", BOB, MacAlgorithm="HMAC_SHA_512", Message=b"m")
    hmac256 = new_key(svc, "HMAC_256", "GENERATE_VERIFY_MAC", admin_policy(allow_mac))
    with pytest.raises(errors.AccessDeniedException):
        authorize(svc, hmac256, "GenerateMac", BOB, MacAlgorithm="HMAC_SHA_256", Message=b"m")


def test_key_spec_conditions_select_key_types(svc):
    allow_ecc = {
        "Effect": "Allow",
        "Principal": {"AWS": BOB.principal_arn},
        "Action": "kms:Sign",
        "Resource": "*",
        "Condition": {
            "StringLike": {"kms:KeySpec": "ECC_*"},
            "StringEquals": {"kms:KeyUsage": "SIGN_VERIFY"},
        },
    }
    ecc = new_key(svc, "ECC_NIST_P256", "SIGN_VERIFY", admin_policy(allow_ecc))
    authorize(svc, ecc, "Sign", BOB, SigningAlgorithm="ECDSA_SHA_256", Message=b"m")
    rsa = new_key(svc, "RSA_2048", "SIGN_VERIFY", admin_policy(allow_ecc))
    with pytest.raises(errors.AccessDeniedException):
        authorize(svc, rsa, "Sign", BOB, **SIGN)


def test_every_key_spec_usage_pair_has_grant_operations_beyond_management(svc):
    # A usage the table missed would leave a grant only CreateGrant, RetireGrant and
    # DescribeKey: every usage of every KeySpec has operations of its own.
    for spec in KeySpec:
        for usage in spec.usages:
            record = new_key(svc, spec.value, usage.value)
            assert grant_operations(record) - set(_MANAGEMENT), (spec, usage)
