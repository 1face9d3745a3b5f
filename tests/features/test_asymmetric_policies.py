"""Key policies and grants on asymmetric and HMAC keys, on both faces (issue 14).

A key policy sees kms:SigningAlgorithm and kms:MessageType of a Sign or Verify,
kms:MacAlgorithm of a GenerateMac or VerifyMac, kms:KeyAgreementAlgorithm of a
DeriveSharedSecret, kms:EncryptionAlgorithm of an RSA Encrypt or Decrypt and the key's own
kms:KeySpec and kms:KeyUsage; a grant allows the operations AWS allows for the key's type and
no other ("Grant operations" in the AWS KMS Developer Guide), without encryption context
constraints, which these keys' operations do not take.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import policy, raises, statement

PSS = "RSASSA_PSS_SHA_256"
PKCS1 = "RSASSA_PKCS1_V1_5_SHA_256"


def key_with(p: Any, spec: str, usage: str, *statements: dict[str, Any]) -> str:
    """A key of ``spec`` and ``usage`` in account A (admin keeps kms:*), its policy adding
    ``statements``."""
    meta = p["admin"].create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]
    text = policy(statement("Allow", p.root("admin"), "kms:*"), *statements)
    p["admin"].put_key_policy(KeyId=meta["KeyId"], PolicyName="default", Policy=text)
    return str(meta["Arn"])


def refusal(call: Any) -> str:
    """ "ok", "explicit" (a Deny applied) or "implicit" (nothing allowed)."""
    try:
        call()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDeniedException", exc.response["Error"]
        return "explicit" if "explicit deny" in exc.response["Error"]["Message"] else "implicit"
    return "ok"


def peer_public_key(curve: ec.EllipticCurve) -> bytes:
    public = ec.generate_private_key(curve).public_key()
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- condition keys ---------------------------------------------------------------------------
def test_a_deny_on_the_signing_algorithm_refuses_that_algorithm_only(principals):
    p = principals
    arn = key_with(
        p,
        "RSA_2048",
        "SIGN_VERIFY",
        statement("Deny", "*", "kms:Sign", {"StringEquals": {"kms:SigningAlgorithm": PKCS1}}),
    )
    admin = p["admin"]
    assert refusal(lambda: admin.sign(KeyId=arn, Message=b"m", SigningAlgorithm=PKCS1)) == (
        "explicit"
    )
    out = admin.sign(KeyId=arn, Message=b"m", SigningAlgorithm=PSS)
    assert out["SigningAlgorithm"] == PSS
    verified = admin.verify(
        KeyId=arn, Message=b"m", Signature=out["Signature"], SigningAlgorithm=PSS
    )
    assert verified["SignatureValid"] is True


def test_a_policy_may_allow_signing_digests_only(principals):
    p = principals
    arn = key_with(
        p,
        "ECC_NIST_P256",
        "SIGN_VERIFY",
        statement(
            "Allow", p.root("bob"), ["kms:Sign"], {"StringEquals": {"kms:MessageType": "DIGEST"}}
        ),
    )
    bob = p["bob"]
    digest = hashlib.sha256(b"m").digest()
    out = bob.sign(
        KeyId=arn, Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256"
    )
    assert out["KeyId"] == arn
    # MessageType absent is RAW (AWS's default), which the Allow does not cover.
    assert refusal(lambda: bob.sign(KeyId=arn, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")) == (
        "implicit"
    )


def test_a_mac_algorithm_condition_allows_that_algorithm_only(principals):
    p = principals
    only_512 = statement(
        "Allow",
        p.root("bob"),
        ["kms:GenerateMac", "kms:VerifyMac"],
        {"StringEquals": {"kms:MacAlgorithm": "HMAC_SHA_512"}},
    )
    hmac512 = key_with(p, "HMAC_512", "GENERATE_VERIFY_MAC", only_512)
    hmac256 = key_with(p, "HMAC_256", "GENERATE_VERIFY_MAC", only_512)
    bob = p["bob"]
    mac = bob.generate_mac(KeyId=hmac512, Message=b"m", MacAlgorithm="HMAC_SHA_512")["Mac"]
    assert bob.verify_mac(KeyId=hmac512, Message=b"m", Mac=mac, MacAlgorithm="HMAC_SHA_512")[
        "MacValid"
    ]
    assert (
        refusal(lambda: bob.generate_mac(KeyId=hmac256, Message=b"m", MacAlgorithm="HMAC_SHA_256"))
        == "implicit"
    )


def test_a_deny_on_the_key_agreement_algorithm_refuses_derive_shared_secret(principals):
    p = principals
    arn = key_with(
        p,
        "ECC_NIST_P256",
        "KEY_AGREEMENT",
        statement(
            "Deny",
            "*",
            "kms:DeriveSharedSecret",
            {"StringEquals": {"kms:KeyAgreementAlgorithm": "ECDH"}},
        ),
    )
    peer = peer_public_key(ec.SECP256R1())
    assert (
        refusal(
            lambda: p["admin"].derive_shared_secret(
                KeyId=arn, KeyAgreementAlgorithm="ECDH", PublicKey=peer
            )
        )
        == "explicit"
    )


def test_an_rsa_encrypt_carries_its_encryption_algorithm(principals):
    p = principals
    arn = key_with(
        p,
        "RSA_2048",
        "ENCRYPT_DECRYPT",
        statement(
            "Deny",
            "*",
            ["kms:Encrypt", "kms:Decrypt"],
            {"StringNotEquals": {"kms:EncryptionAlgorithm": "RSAES_OAEP_SHA_256"}},
        ),
    )
    admin = p["admin"]
    assert (
        refusal(
            lambda: admin.encrypt(KeyId=arn, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_1")
        )
        == "explicit"
    )
    blob = admin.encrypt(KeyId=arn, Plaintext=b"x", EncryptionAlgorithm="RSAES_OAEP_SHA_256")[
        "CiphertextBlob"
    ]
    out = admin.decrypt(KeyId=arn, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert out["Plaintext"] == b"x"


def test_key_spec_and_key_usage_conditions_pick_the_key_type(principals):
    p = principals
    ecc_only = statement(
        "Allow",
        p.root("bob"),
        "kms:Sign",
        {"StringLike": {"kms:KeySpec": "ECC_*"}, "StringEquals": {"kms:KeyUsage": "SIGN_VERIFY"}},
    )
    ecc = key_with(p, "ECC_NIST_P384", "SIGN_VERIFY", ecc_only)
    rsa = key_with(p, "RSA_2048", "SIGN_VERIFY", ecc_only)
    bob = p["bob"]
    bob.sign(KeyId=ecc, Message=b"m", SigningAlgorithm="ECDSA_SHA_384")
    assert refusal(lambda: bob.sign(KeyId=rsa, Message=b"m", SigningAlgorithm=PSS)) == "implicit"


def test_a_re_encrypt_from_an_rsa_key_to_itself_is_told_the_same_key(principals):
    # The RSA ciphertext names no key; SourceKeyId does. Before, the key was missing and the
    # Deny (on both keys) failed open.
    p = principals
    same = statement("Deny", "*", "kms:ReEncryptTo", {"Bool": {"kms:ReEncryptOnSameKey": "true"}})
    arn = key_with(p, "RSA_2048", "ENCRYPT_DECRYPT", same)
    admin = p["admin"]
    oaep = "RSAES_OAEP_SHA_256"
    blob = admin.encrypt(KeyId=arn, Plaintext=b"x", EncryptionAlgorithm=oaep)["CiphertextBlob"]

    def re_encrypt(destination: str) -> Any:
        return admin.re_encrypt(
            CiphertextBlob=blob,
            SourceKeyId=arn,
            SourceEncryptionAlgorithm=oaep,
            DestinationKeyId=destination,
            DestinationEncryptionAlgorithm=oaep,
        )

    assert refusal(lambda: re_encrypt(arn)) == "explicit"
    other = key_with(p, "RSA_2048", "ENCRYPT_DECRYPT", same)
    moved = re_encrypt(other)["CiphertextBlob"]
    out = admin.decrypt(KeyId=other, CiphertextBlob=moved, EncryptionAlgorithm=oaep)
    assert out["Plaintext"] == b"x"


# -- grants -----------------------------------------------------------------------------------
def grant(p: Any, arn: str, operations: list[str], grantee: str = "bob") -> str:
    out = p["admin"].create_grant(KeyId=arn, GranteePrincipal=p.arn(grantee), Operations=operations)
    return str(out["GrantToken"])


def test_a_sign_grant_lets_its_grantee_sign_and_a_verify_grant_does_not(principals):
    p = principals
    arn = key_with(p, "RSA_2048", "SIGN_VERIFY")
    sign_token = grant(p, arn, ["Sign"])
    verify_token = grant(p, arn, ["Verify"], grantee="carol")
    out = p["bob"].sign(KeyId=arn, Message=b"m", SigningAlgorithm=PSS, GrantTokens=[sign_token])
    carol = p["carol"]
    with raises("AccessDeniedException", "kms:Sign"):
        carol.sign(KeyId=arn, Message=b"m", SigningAlgorithm=PSS, GrantTokens=[verify_token])
    valid = carol.verify(
        KeyId=arn,
        Message=b"m",
        Signature=out["Signature"],
        SigningAlgorithm=PSS,
        GrantTokens=[verify_token],
    )
    assert valid["SignatureValid"] is True
    with raises("AccessDeniedException", "kms:GetPublicKey"):
        p["bob"].get_public_key(KeyId=arn, GrantTokens=[sign_token])


def test_a_mac_grant_and_a_key_agreement_grant_serve_their_grantee(principals):
    p = principals
    hmac = key_with(p, "HMAC_256", "GENERATE_VERIFY_MAC")
    token = grant(p, hmac, ["GenerateMac"])
    bob = p["bob"]
    mac = bob.generate_mac(
        KeyId=hmac, Message=b"m", MacAlgorithm="HMAC_SHA_256", GrantTokens=[token]
    )
    with raises("AccessDeniedException", "kms:VerifyMac"):
        bob.verify_mac(
            KeyId=hmac,
            Message=b"m",
            Mac=mac["Mac"],
            MacAlgorithm="HMAC_SHA_256",
            GrantTokens=[token],
        )
    agreement = key_with(p, "ECC_NIST_P256", "KEY_AGREEMENT")
    token = grant(p, agreement, ["DeriveSharedSecret", "GetPublicKey"])
    public = bob.get_public_key(KeyId=agreement, GrantTokens=[token])["PublicKey"]
    assert public
    out = bob.derive_shared_secret(
        KeyId=agreement,
        KeyAgreementAlgorithm="ECDH",
        PublicKey=peer_public_key(ec.SECP256R1()),
        GrantTokens=[token],
    )
    assert len(out["SharedSecret"]) == 32


@pytest.mark.parametrize(
    ("spec", "usage", "operation"),
    [
        ("RSA_2048", "ENCRYPT_DECRYPT", "GenerateMac"),
        ("RSA_2048", "SIGN_VERIFY", "Decrypt"),
        ("HMAC_256", "GENERATE_VERIFY_MAC", "Sign"),
        ("ECC_NIST_P256", "KEY_AGREEMENT", "Verify"),
    ],
)
def test_a_grant_of_an_operation_the_key_type_lacks_is_a_validation_error(
    principals, spec, usage, operation
):
    p = principals
    arn = key_with(p, spec, usage)
    with raises("ValidationException", f"Grant operation {operation} is not valid"):
        grant(p, arn, [operation])


def test_an_encryption_context_constraint_is_refused_on_an_asymmetric_key(principals):
    p = principals
    arn = key_with(p, "RSA_2048", "ENCRYPT_DECRYPT")
    with raises("ValidationException", "not valid for grant operation Decrypt"):
        p["admin"].create_grant(
            KeyId=arn,
            GranteePrincipal=p.arn("bob"),
            Operations=["Decrypt"],
            Constraints={"EncryptionContextSubset": {"dept": "x"}},
        )
    assert p["admin"].list_grants(KeyId=arn)["Grants"] == []


def test_an_rsa_encrypt_grant_serves_its_grantee(principals):
    p = principals
    arn = key_with(p, "RSA_2048", "ENCRYPT_DECRYPT")
    token = grant(p, arn, ["Encrypt", "Decrypt"])
    bob = p["bob"]
    oaep = "RSAES_OAEP_SHA_256"
    blob = bob.encrypt(KeyId=arn, Plaintext=b"x", EncryptionAlgorithm=oaep, GrantTokens=[token])
    out = bob.decrypt(
        KeyId=arn,
        CiphertextBlob=blob["CiphertextBlob"],
        EncryptionAlgorithm=oaep,
        GrantTokens=[token],
    )
    assert out["Plaintext"] == b"x"
