"""The KMS service model is the contract: AWS's validation wording, and JSON 1.1 in and out."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime

import pytest

from hsmkms import errors, model

PAIR_SPECS = (
    "RSA_2048, RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, "
    "ECC_SECG_P256K1, SM2, ECC_NIST_EDWARDS25519, ML_KEM_512, ML_KEM_768, ML_KEM_1024"
)


def failure(operation: str, **params: object) -> errors.KMSError:
    with pytest.raises(errors.KMSError) as caught:
        model.validate_input(operation, params)
    return caught.value


def validation_message(operation: str, **params: object) -> str:
    exc = failure(operation, **params)
    assert exc.code == "ValidationException", exc.message
    assert exc.status == 400
    return exc.message


# -- operations ---------------------------------------------------------------------------------
def test_operations_are_the_kms_models():
    ops = model.operations()
    assert {"GenerateDataKeyPair", "Decrypt", "CreateKey", "ListKeys"} <= ops
    assert len(ops) > 50


def test_boto3_method_names_map_to_operations():
    assert model.operation_for_method("generate_data_key_pair") == "GenerateDataKeyPair"
    assert (
        model.operation_for_method("generate_data_key_pair_without_plaintext")
        == "GenerateDataKeyPairWithoutPlaintext"
    )
    assert model.operation_for_method("list_keys") == "ListKeys"
    assert model.operation_for_method("not_an_operation") is None


def test_an_unknown_operation_is_unknown_operation_exception():
    assert failure("Nope").code == "UnknownOperationException"


# -- validation wording ------------------------------------------------------------------------
def test_an_invalid_enum_lists_the_value_set():
    assert validation_message("GenerateDataKeyPair", KeyId="k", KeyPairSpec="RSA_9") == (
        "1 validation error detected: Value 'RSA_9' at 'keyPairSpec' failed to satisfy "
        f"constraint: Member must satisfy enum value set: [{PAIR_SPECS}]"
    )


def test_a_too_long_string_names_the_limit():
    key_id = "k" * 2049
    assert validation_message("DescribeKey", KeyId=key_id) == (
        f"1 validation error detected: Value '{key_id}' at 'keyId' failed to satisfy "
        "constraint: Member must have length less than or equal to 2048"
    )


def test_an_empty_string_names_the_minimum():
    assert validation_message("DescribeKey", KeyId="") == (
        "1 validation error detected: Value '' at 'keyId' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )


def test_a_missing_member_is_null():
    assert validation_message("DescribeKey") == (
        "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_none_is_a_missing_member():
    assert "Value null at 'keyId'" in validation_message("DescribeKey", KeyId=None)


def test_a_value_out_of_range_names_the_bound():
    assert validation_message("GenerateRandom", NumberOfBytes=2000) == (
        "1 validation error detected: Value '2000' at 'numberOfBytes' failed to satisfy "
        "constraint: Member must have value less than or equal to 1024"
    )
    assert validation_message("GenerateRandom", NumberOfBytes=0).endswith(
        "Member must have value greater than or equal to 1"
    )


def test_several_failures_are_counted_and_joined():
    assert validation_message("GenerateDataKeyPair", KeyPairSpec="X") == (
        "2 validation errors detected: "
        "Value null at 'keyId' failed to satisfy constraint: Member must not be null; "
        "Value 'X' at 'keyPairSpec' failed to satisfy constraint: "
        f"Member must satisfy enum value set: [{PAIR_SPECS}]"
    )


def test_a_blob_is_never_echoed():
    message = validation_message("Encrypt", KeyId="k", Plaintext=b"s" * 4097)
    assert message == (
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096"
    )
    assert "sss" not in message


def test_an_empty_ciphertext_is_too_short():
    assert validation_message("Decrypt", CiphertextBlob=b"") == (
        "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )


def test_a_pattern_is_reported_before_a_length():
    message = validation_message("CreateAlias", AliasName="", TargetKeyId="k")
    assert message == (
        "2 validation errors detected: "
        "Value '' at 'aliasName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$; "
        "Value '' at 'aliasName' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )


def test_a_list_too_long_and_its_elements_are_reported_at_the_list():
    message = validation_message("DescribeKey", KeyId="k", GrantTokens=["a"] * 10 + [""])
    listed = "[" + ", ".join(["a"] * 10 + [""]) + "]"
    assert message == (
        "2 validation errors detected: "
        f"Value '{listed}' at 'grantTokens' failed to satisfy constraint: "
        "Member must have length less than or equal to 10; "
        f"Value '{listed}' at 'grantTokens' failed to satisfy constraint: "
        "Member must satisfy constraint: [Member must have length less than or equal to 8192, "
        "Member must have length greater than or equal to 1]"
    )


def test_members_of_list_elements_are_reported_by_index():
    message = validation_message(
        "CreateKey", Tags=[{"TagKey": "ok", "TagValue": "v"}, {"TagValue": "v"}]
    )
    assert message == (
        "1 validation error detected: Value null at 'tags.2.member.tagKey' failed to satisfy "
        "constraint: Member must not be null"
    )


def test_unknown_members_are_ignored_and_dropped():
    params = {"KeyId": "k", "NotAMember": 1}
    model.validate_input("DescribeKey", params)
    assert params == {"KeyId": "k"}


# -- types -----------------------------------------------------------------------------------
LIST = "Start of list found where not expected"
MAP = "Start of structure or map found where not expected."
ENC = {"KeyId": "k", "Plaintext": b"x"}
TO_INT = "can not be converted to an Integer"


@pytest.mark.parametrize(
    ("operation", "params", "message"),
    [
        ("DescribeKey", {"KeyId": 1}, "NUMBER_VALUE can not be converted to a String"),
        ("DescribeKey", {"KeyId": True}, "TRUE_VALUE can not be converted to a String"),
        ("DescribeKey", {"KeyId": ["k"]}, LIST),
        ("DescribeKey", {"KeyId": {"k": 1}}, MAP),
        ("GenerateRandom", {"NumberOfBytes": "8"}, f"STRING_VALUE {TO_INT}"),
        ("GenerateRandom", {"NumberOfBytes": False}, f"FALSE_VALUE {TO_INT}"),
        ("GenerateRandom", {"NumberOfBytes": 2**31}, f"NUMBER_VALUE {TO_INT}"),
        ("DescribeKey", {"KeyId": "k", "GrantTokens": "t"}, "Expected list or null"),
        ("Encrypt", {**ENC, "EncryptionContext": "c"}, "Expected map or null"),
        ("Encrypt", {**ENC, "Plaintext": 5}, "NUMBER_VALUE can not be converted to a Blob"),
        ("Encrypt", {**ENC, "DryRun": "y"}, "STRING_VALUE can not be converted to a Boolean"),
        ("CreateKey", {"Tags": ["t"]}, "Expected null"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_is_a_serialization_exception(operation, params, message):
    exc = failure(operation, **params)
    assert exc.code == "SerializationException"
    assert exc.status == 400
    assert exc.message.startswith(message)


def test_a_type_error_wins_over_validation_errors():
    # AWS deserialises before it validates: a wrong type hides the constraint failures.
    exc = failure("GenerateDataKeyPair", KeyPairSpec="X", KeyId=5)
    assert exc.code == "SerializationException"


def test_python_values_are_normalised_as_boto3_and_aws_read_them():
    when = datetime(2030, 1, 2, 3, 4, 5)
    params = {
        "KeyId": "k",
        "ImportToken": "token",  # boto3 sends a str blob as UTF-8
        "EncryptedKeyMaterial": io.BytesIO(b"material"),  # and a file's contents
        "ValidTo": when,  # naive datetimes are UTC, as botocore reads them
        "ExpirationModel": None,
    }
    model.validate_input("ImportKeyMaterial", params)
    assert params == {
        "KeyId": "k",
        "ImportToken": b"token",
        "EncryptedKeyMaterial": b"material",
        "ValidTo": when.replace(tzinfo=UTC),
    }


def test_a_fraction_for_an_integer_is_truncated_as_aws_does():
    params = {"NumberOfBytes": 16.9}
    model.validate_input("GenerateRandom", params)
    assert params == {"NumberOfBytes": 16}


def test_the_callers_nested_objects_are_not_mutated():
    context = {"purpose": "test", "dropped": None}
    params = {"KeyId": "k", "Plaintext": b"x", "EncryptionContext": context}
    model.validate_input("Encrypt", params)
    assert params["EncryptionContext"] == {"purpose": "test"}
    assert context == {"purpose": "test", "dropped": None}


# -- the wire ----------------------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_from_wire_decodes_blobs_and_timestamps_and_drops_nulls_and_unknowns():
    obj = {
        "KeyId": "k",
        "ImportToken": b64(b"\x00token"),
        "EncryptedKeyMaterial": b64(b"m"),
        "ValidTo": 1893456000,
        "ExpirationModel": None,
        "Unknown": {"x": 1},
    }
    assert model.from_wire("ImportKeyMaterial", obj) == {
        "KeyId": "k",
        "ImportToken": b"\x00token",
        "EncryptedKeyMaterial": b"m",
        "ValidTo": datetime(2030, 1, 1, tzinfo=UTC),
    }


def test_from_wire_decodes_blobs_nested_in_structures():
    doc = b"\x01attestation"
    params = model.from_wire(
        "Decrypt",
        {
            "CiphertextBlob": b64(b"c"),
            "Recipient": {
                "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                "AttestationDocument": b64(doc),
            },
        },
    )
    assert params["Recipient"]["AttestationDocument"] == doc
    assert params["CiphertextBlob"] == b"c"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "Base64 encoded length is expected a multiple of 4 bytes but found: 3"),
        ("ab!d", "Invalid Base64 character: '!'"),
        ("a===", "Invalid Base64 character: '='"),
        ("YWJj\n", "Base64 encoded length is expected a multiple of 4 bytes but found: 5"),
    ],
)
def test_invalid_base64_is_a_serialization_exception_that_does_not_echo_the_value(text, reason):
    with pytest.raises(errors.KMSError) as caught:
        model.from_wire("Encrypt", {"KeyId": "k", "Plaintext": text})
    assert caught.value.code == "SerializationException"
    assert caught.value.message == f"Value at 'plaintext' can not be converted to a Blob: {reason}"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "Start of list found where not expected"),
        ("x", ""),
        ({"NumberOfBytes": "8"}, "STRING_VALUE can not be converted to an Integer"),
        ({"NumberOfBytes": [8]}, "Start of list found where not expected"),
    ],
)
def test_from_wire_answers_awss_serialization_errors(obj, message):
    with pytest.raises(errors.KMSError) as caught:
        model.from_wire("GenerateRandom", obj)
    assert (caught.value.code, caught.value.message) == ("SerializationException", message)


def test_to_wire_encodes_blobs_and_dates_and_keeps_only_the_output_shape():
    created = datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    result = {
        "KeyMetadata": {
            "KeyId": "k",
            "CreationDate": created,
            "Enabled": True,
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
            "Internal": "not in the model",
            "DeletionDate": None,
        },
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }
    assert model.to_wire("DescribeKey", result) == {
        "KeyMetadata": {
            "KeyId": "k",
            "CreationDate": 1704067200.5,
            "Enabled": True,
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        }
    }


def test_to_wire_then_from_wire_round_trips_blobs():
    blob = bytes(range(256))
    wire = model.to_wire("Encrypt", {"CiphertextBlob": blob, "KeyId": "arn"})
    assert wire == {"CiphertextBlob": b64(blob), "KeyId": "arn"}
    assert model.from_wire("Decrypt", {"CiphertextBlob": wire["CiphertextBlob"]}) == {
        "CiphertextBlob": blob
    }


def test_round_trip_through_the_wire_then_validation_is_what_boto3_would_pass():
    pair = {
        "KeyId": "alias/app",
        "KeyPairSpec": "ECC_NIST_P256",
        "EncryptionContext": {"app": "x"},
        "GrantTokens": ["t1"],
        "DryRun": False,
    }
    wire = dict(pair)
    params = model.from_wire("GenerateDataKeyPair", wire)
    model.validate_input("GenerateDataKeyPair", params)
    assert params == pair


def test_enum_members_go_on_the_wire_as_their_value():
    import enum

    class KeyState(enum.Enum):
        ENABLED = "Enabled"

    wire = model.to_wire(
        "DescribeKey", {"KeyMetadata": {"KeyId": "k", "KeyState": KeyState.ENABLED}}
    )
    assert wire == {"KeyMetadata": {"KeyId": "k", "KeyState": "Enabled"}}
