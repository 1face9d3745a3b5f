"""Imported key material (BYOK, issue 16) over both faces: the client wraps with cryptography
as AWS's OpenSSL instructions do, hsmkms unwraps into the token; what a user checks (the
blob decrypts, the MAC and the signature match the material they hold, the errors are
AWS's) is checked against the material the test generated."""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
from helpers import offline_verify, policy, raises, statement

from hsmkms.service import imports
from hsmkms.store import ImportParametersRecord

pytestmark = pytest.mark.slow
OAEP_HASH = {"SHA_1": hashes.SHA1, "SHA_256": hashes.SHA256}
NEVER = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}


def wrap(parameters: dict, algorithm: str, material: bytes) -> bytes:
    """What a client sends: RSA-OAEP of the material, or of an AES key + its KWP of it."""
    public = serialization.load_der_public_key(parameters["PublicKey"])
    h = OAEP_HASH[algorithm.rsplit("_", 2)[-2] + "_" + algorithm.rsplit("_", 1)[-1]]()
    pad = padding.OAEP(padding.MGF1(h), h, None)
    if algorithm.startswith("RSAES_OAEP"):
        return public.encrypt(material, pad)
    aes = os.urandom(32)
    return public.encrypt(aes, pad) + aes_key_wrap_with_padding(aes, material)


def import_material(kms, key_id, material, algorithm="RSAES_OAEP_SHA_256", spec="RSA_2048",
                    **extra):  # fmt: skip
    parameters = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=spec
    )
    extra = extra or NEVER
    return kms.import_key_material(
        KeyId=key_id,
        ImportToken=parameters["ImportToken"],
        EncryptedKeyMaterial=wrap(parameters, algorithm, material),
        **extra,
    )


def external(kms, **kwargs) -> str:
    meta = kms.create_key(Origin="EXTERNAL", **kwargs)["KeyMetadata"]
    assert meta["KeyState"] == "PendingImport" and meta["Origin"] == "EXTERNAL"
    assert not meta["Enabled"] and "CurrentKeyMaterialId" not in meta
    return meta["KeyId"]


def pkcs8(private) -> bytes:
    return private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


ALGORITHMS = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "RSA_AES_KEY_WRAP_SHA_1",
              "RSA_AES_KEY_WRAP_SHA_256"]  # fmt: skip


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_symmetric_material_imports_through_each_wrapping_algorithm(kms, algorithm):
    key_id = external(kms)
    material = os.urandom(32)
    parameters = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec="RSA_3072"
    )
    assert parameters["KeyId"].endswith(key_id)
    assert parameters["ParametersValidTo"] - datetime.now(UTC) > timedelta(hours=23)
    assert serialization.load_der_public_key(parameters["PublicKey"]).key_size == 3072
    answer = kms.import_key_material(
        KeyId=key_id,
        ImportToken=parameters["ImportToken"],
        EncryptedKeyMaterial=wrap(parameters, algorithm, material),
        **NEVER,
    )
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled"
    assert meta["CurrentKeyMaterialId"] == answer["KeyMaterialId"]
    assert meta["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE" and "ValidTo" not in meta
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"imported")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"imported"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_hmac_material_gives_the_mac_of_the_standard_library(kms, algorithm):
    key_id = external(kms, KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")
    material = os.urandom(48)
    import_material(kms, key_id, material, algorithm)
    mac = kms.generate_mac(KeyId=key_id, Message=b"m", MacAlgorithm="HMAC_SHA_384")["Mac"]
    assert mac == hmac.new(material, b"m", hashlib.sha384).digest()


def test_rsa_signing_key_imports_and_its_signatures_verify_offline(kms):
    key_id = external(kms, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    private = rsa.generate_private_key(65537, 2048)
    import_material(kms, key_id, pkcs8(private), "RSA_AES_KEY_WRAP_SHA_256", "RSA_4096")
    got = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    assert got.public_numbers() == private.public_key().public_numbers()
    signature = kms.sign(KeyId=key_id, Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
    offline_verify(private.public_key(), "RSASSA_PSS_SHA_256", b"m", signature["Signature"])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_ec_signing_key_imports_with_its_public_key(kms, algorithm):
    key_id = external(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    private = ec.generate_private_key(ec.SECP256R1())
    import_material(kms, key_id, pkcs8(private), algorithm)
    got = serialization.load_der_public_key(kms.get_public_key(KeyId=key_id)["PublicKey"])
    assert got.public_numbers() == private.public_key().public_numbers()
    signature = kms.sign(KeyId=key_id, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")
    offline_verify(private.public_key(), "ECDSA_SHA_256", b"m", signature["Signature"])


def test_delete_and_reimport_restores_decrypt(kms):
    key_id = external(kms)
    material = os.urandom(32)
    first = import_material(kms, key_id, material)["KeyMaterialId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"kept")["CiphertextBlob"]
    deleted = kms.delete_imported_key_material(KeyId=key_id)
    assert deleted["KeyMaterialId"] == first
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    with raises("KMSInvalidStateException"):
        kms.decrypt(CiphertextBlob=blob)
    with raises("IncorrectKeyMaterialException"):
        import_material(kms, key_id, os.urandom(32))  # not the material it had
    again = import_material(kms, key_id, material, "RSA_AES_KEY_WRAP_SHA_1")
    assert again["KeyMaterialId"] == first  # deterministic in key and material
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"


def test_the_same_material_in_two_keys_has_two_material_ids(kms):
    material = os.urandom(32)
    a, b = external(kms), external(kms)
    assert (
        import_material(kms, a, material)["KeyMaterialId"]
        != import_material(kms, b, material)["KeyMaterialId"]
    )


def test_import_tokens_are_bound_to_their_key_and_not_forgeable(kms):
    a, b = external(kms), external(kms)
    parameters = kms.get_parameters_for_import(
        KeyId=a, WrappingAlgorithm="RSAES_OAEP_SHA_1", WrappingKeySpec="RSA_2048"
    )
    encrypted = wrap(parameters, "RSAES_OAEP_SHA_1", os.urandom(32))
    with raises("InvalidImportTokenException"):
        kms.import_key_material(KeyId=b, ImportToken=parameters["ImportToken"],
                                EncryptedKeyMaterial=encrypted, **NEVER)  # fmt: skip
    forged = parameters["ImportToken"][:-1] + bytes([parameters["ImportToken"][-1] ^ 1])
    for token in (forged, b"\x01" + os.urandom(33), b"not a token"):
        with raises("InvalidImportTokenException"):
            kms.import_key_material(KeyId=a, ImportToken=token, EncryptedKeyMaterial=encrypted,
                                    **NEVER)  # fmt: skip
    with raises("InvalidCiphertextException"):
        kms.import_key_material(KeyId=a, ImportToken=parameters["ImportToken"],
                                EncryptedKeyMaterial=os.urandom(256), **NEVER)  # fmt: skip


def test_an_expired_import_token_is_refused(service, library):
    """Parameters 24 hours old, made as GetParametersForImport makes them."""
    key_id = external(library)
    old = datetime.now(UTC) - timedelta(hours=25)
    wrapping_id, public = service.masters.create_wrapping_key(key_id, old, 2048)
    service.store.add_import_parameters(
        ImportParametersRecord(
            wrapping_id,
            key_id,
            "RSAES_OAEP_SHA_1",
            "RSA_2048",
            public,
            old,
            old + imports.PARAMETERS_VALID,
        )  # fmt: skip
    )
    encrypted = wrap({"PublicKey": public}, "RSAES_OAEP_SHA_1", os.urandom(32))
    with raises("ExpiredImportTokenException"):
        library.import_key_material(KeyId=key_id, ImportToken=imports.import_token(wrapping_id),
                                    EncryptedKeyMaterial=encrypted, **NEVER)  # fmt: skip
    # The sweep destroys the expired wrapping key on the token.
    imports.sweep(service)
    with pytest.raises(Exception, match="not on the token"):
        service.masters.destroy_wrapping_key(wrapping_id)


def test_expiry_deletes_the_material_from_the_token(service, library, token):
    key_id = external(library)
    valid_to = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    answer = import_material(library, key_id, os.urandom(32), "RSAES_OAEP_SHA_1",
                             ValidTo=valid_to)  # fmt: skip
    mid = bytes.fromhex(answer["KeyMaterialId"])
    meta = library.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["ExpirationModel"] == "KEY_MATERIAL_EXPIRES" and meta["ValidTo"] == valid_to
    assert token.has_master_key(mid)
    assert imports.sweep(service, valid_to - timedelta(seconds=1)) == []
    assert imports.sweep(service, valid_to + timedelta(seconds=1)) == [answer["KeyMaterialId"]]
    assert not token.has_master_key(mid)  # crypto-shredded
    assert imports.sweep(service, valid_to + timedelta(seconds=2)) == []  # exactly once
    assert library.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    rotations = library.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")[
        "Rotations"
    ]
    assert rotations[0]["ImportState"] == "PENDING_IMPORT"


def test_new_material_waits_for_rotate_key_on_demand(kms):
    key_id = external(kms)
    first = import_material(kms, key_id, os.urandom(32))["KeyMaterialId"]
    old_blob = kms.encrypt(KeyId=key_id, Plaintext=b"old")["CiphertextBlob"]
    second = import_material(
        kms, key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL",
        KeyMaterialDescription="ceremony 2", **NEVER,
    )["KeyMaterialId"]  # fmt: skip
    listed = kms.list_key_rotations(KeyId=key_id, IncludeKeyMaterial="ALL_KEY_MATERIAL")
    states = {r["KeyMaterialId"]: r for r in listed["Rotations"]}
    assert states[first]["KeyMaterialState"] == "CURRENT"
    assert states[second]["KeyMaterialState"] == "PENDING_ROTATION"
    assert states[second]["ImportState"] == "IMPORTED"
    assert states[second]["KeyMaterialDescription"] == "ceremony 2"
    assert states[second]["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    with raises("KMSInvalidStateException"):  # one waits at a time
        import_material(kms, key_id, os.urandom(32), ImportType="NEW_KEY_MATERIAL", **NEVER)
    kms.rotate_key_on_demand(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"] == second
    assert kms.decrypt(CiphertextBlob=old_blob)["Plaintext"] == b"old"
    rotations = kms.list_key_rotations(KeyId=key_id)["Rotations"]
    assert [(r["KeyMaterialId"], r["RotationType"]) for r in rotations] == [(second, "ON_DEMAND")]
    with raises("KMSInvalidStateException"):
        kms.rotate_key_on_demand(KeyId=key_id)  # nothing new to rotate to
    with raises("UnsupportedOperationException"):
        kms.enable_key_rotation(KeyId=key_id)  # imported keys never rotate automatically


def test_aws_rules_on_parameters_and_expiry(kms):
    key_id = external(kms)
    rsa_key = external(kms, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    with raises("ValidationException", "RSA_AES_KEY_WRAP"):
        kms.get_parameters_for_import(KeyId=rsa_key, WrappingAlgorithm="RSAES_OAEP_SHA_256",
                                      WrappingKeySpec="RSA_4096")  # fmt: skip
    with raises("ValidationException", "no longer supported"):
        kms.get_parameters_for_import(KeyId=key_id, WrappingAlgorithm="RSAES_PKCS1_V1_5",
                                      WrappingKeySpec="RSA_2048")  # fmt: skip
    generated = kms.create_key()["KeyMetadata"]["KeyId"]
    with raises("UnsupportedOperationException", "origin is AWS_KMS"):
        kms.get_parameters_for_import(KeyId=generated, WrappingAlgorithm="RSAES_OAEP_SHA_1",
                                      WrappingKeySpec="RSA_2048")  # fmt: skip
    with raises("UnsupportedOperationException", "Ed25519"):
        kms.create_key(Origin="EXTERNAL", KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")
    material = os.urandom(32)
    with raises("ValidationException", "ValidTo is required"):
        import_material(kms, key_id, material, ExpirationModel="KEY_MATERIAL_EXPIRES")
    with raises("ValidationException", "365 days"):
        import_material(kms, key_id, material,
                        ValidTo=datetime.now(UTC) + timedelta(days=366))  # fmt: skip
    with raises("ValidationException", "omitted"):
        import_material(kms, key_id, material, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
                        ValidTo=datetime.now(UTC) + timedelta(days=1))  # fmt: skip
    with raises("KMSInvalidStateException"):
        kms.encrypt(KeyId=key_id, Plaintext=b"x")  # PendingImport
    hmac_key = external(kms, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    with raises("ValidationException", "only for symmetric"):
        import_material(kms, hmac_key, os.urandom(32), ImportType="NEW_KEY_MATERIAL", **NEVER)
    with raises("IncorrectKeyMaterialException", "32 bytes"):
        import_material(kms, key_id, os.urandom(16))


def test_key_policies_see_the_import_condition_keys(kms):
    account = kms.describe_key(KeyId=kms.create_key()["KeyMetadata"]["KeyId"])["KeyMetadata"][
        "AWSAccountId"
    ]
    root = f"arn:aws:iam::{account}:root"
    document = policy(
        statement("Allow", root, "kms:*"),
        statement("Deny", "*", "kms:GetParametersForImport",
                  {"StringNotEquals": {"kms:WrappingAlgorithm": "RSA_AES_KEY_WRAP_SHA_256",
                                       "kms:WrappingKeySpec": "RSA_4096"}}),
        statement("Deny", "*", "kms:ImportKeyMaterial",
                  {"StringEquals": {"kms:ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}}),
        statement("Deny", "*", "kms:ImportKeyMaterial",
                  {"NumericGreaterThan": {"kms:ValidTo": str(int(datetime.now(UTC).timestamp())
                                                             + 7 * 86400)}}),
    )  # fmt: skip
    key_id = external(kms, Policy=document)
    material = os.urandom(32)
    with raises("AccessDeniedException"):
        import_material(kms, key_id, material, "RSAES_OAEP_SHA_256", "RSA_4096")
    with raises("AccessDeniedException"):
        import_material(kms, key_id, material, "RSA_AES_KEY_WRAP_SHA_256", "RSA_2048")
    with raises("AccessDeniedException"):
        import_material(kms, key_id, material, "RSA_AES_KEY_WRAP_SHA_256", "RSA_4096", **NEVER)
    with raises("AccessDeniedException"):
        import_material(kms, key_id, material, "RSA_AES_KEY_WRAP_SHA_256", "RSA_4096",
                        ValidTo=datetime.now(UTC) + timedelta(days=30))  # fmt: skip
    import_material(kms, key_id, material, "RSA_AES_KEY_WRAP_SHA_256", "RSA_4096",
                    ValidTo=datetime.now(UTC) + timedelta(days=1))  # fmt: skip
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_the_key_state_table_of_a_key_without_material(kms):
    key_id = external(kms)
    for call in (kms.enable_key, kms.disable_key):
        with raises("KMSInvalidStateException", "pending import"):
            call(KeyId=key_id)
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    kms.cancel_key_deletion(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
    import_material(kms, key_id, os.urandom(32))
    kms.disable_key(KeyId=key_id)
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    # Deleting the material of a key pending deletion leaves its state alone (AWS).
    kms.delete_imported_key_material(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    with raises("KMSInvalidStateException"):
        import_material(kms, key_id, os.urandom(32))
    kms.cancel_key_deletion(KeyId=key_id)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingImport"
