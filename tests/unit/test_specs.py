"""hsmkms/specs.py against botocore's KMS model: every enum has exactly AWS's values, and every
spec has its row of facts, consistent with what AWS documents."""

from __future__ import annotations

import botocore.session
import pytest

from hsmkms import specs
from hsmkms.specs import DataKeyPairSpec, Family, KeySpec, KeyUsage

MODEL = botocore.session.get_session().get_service_model("kms")


@pytest.mark.parametrize(
    "enum, shape",
    [
        (specs.KeyState, "KeyState"),
        (specs.KeyUsage, "KeyUsageType"),
        (specs.KeySpec, "KeySpec"),
        (specs.DataKeyPairSpec, "DataKeyPairSpec"),
        (specs.EncryptionAlgorithm, "EncryptionAlgorithmSpec"),
        (specs.SigningAlgorithm, "SigningAlgorithmSpec"),
        (specs.MacAlgorithm, "MacAlgorithmSpec"),
        (specs.KeyAgreementAlgorithm, "KeyAgreementAlgorithmSpec"),
        (specs.DataKeySpec, "DataKeySpec"),
        (specs.Origin, "OriginType"),
        (specs.KeyManager, "KeyManagerType"),
        (specs.RotationType, "RotationType"),
        (specs.DryRunModifier, "DryRunModifierType"),
        (specs.GrantOperation, "GrantOperation"),
        (specs.KeyMaterialState, "KeyMaterialState"),
        (specs.IncludeKeyMaterial, "IncludeKeyMaterial"),
    ],
)
def test_each_enum_has_exactly_the_values_of_botocores_model(enum, shape):
    assert sorted(m.value for m in enum) == sorted(MODEL.shape_for(shape).enum)


def test_the_deprecated_customer_master_key_specs_are_the_models():
    expected = set(MODEL.shape_for("CustomerMasterKeySpec").enum)
    assert {s.value for s in specs.CUSTOMER_MASTER_KEY_SPECS} == expected


@pytest.mark.parametrize("spec", list(KeySpec))
def test_every_key_spec_has_facts_with_a_usage_and_algorithms_for_it(spec):
    assert spec.usages, spec
    usage_algorithms = {
        KeyUsage.ENCRYPT_DECRYPT: spec.encryption_algorithms,
        KeyUsage.SIGN_VERIFY: spec.signing_algorithms,
        KeyUsage.GENERATE_VERIFY_MAC: spec.mac_algorithms,
        KeyUsage.KEY_AGREEMENT: spec.key_agreement_algorithms,
    }
    for usage in spec.usages:
        if usage in usage_algorithms:
            assert usage_algorithms[usage], (spec, usage)
    assert spec.bits > 0
    assert (spec.curve is not None) == (spec.family in (Family.EC, Family.EDWARDS, Family.SM2))


@pytest.mark.parametrize("spec", list(DataKeyPairSpec))
def test_a_data_key_pair_spec_shares_its_family_and_curve_with_the_key_spec_of_its_name(spec):
    assert spec.family is KeySpec(spec.value).family
    assert spec.curve == KeySpec(spec.value).curve
    assert spec.bits == KeySpec(spec.value).bits


def test_blob_codes_are_distinct_and_name_their_spec():
    codes = [s.blob_code for s in DataKeyPairSpec if s.blob_code]
    assert len(codes) == len(set(codes))
    coded = [s for s in DataKeyPairSpec if s.blob_code]
    assert all(DataKeyPairSpec.by_blob_code(s.blob_code) is s for s in coded)
    # The codes written into blobs since the format's first version (docs/ciphertext-format.md).
    assert {s.value: s.blob_code for s in specs.SUPPORTED_PAIR_SPECS if s.blob_code} == {
        "RSA_2048": 0x01, "RSA_3072": 0x02, "RSA_4096": 0x03, "ECC_NIST_P256": 0x11,
        "ECC_NIST_P384": 0x12, "ECC_NIST_P521": 0x13, "ECC_SECG_P256K1": 0x14,
        "ECC_NIST_EDWARDS25519": 0x21,
    }  # fmt: skip


def test_a_curves_oid_is_the_one_cryptography_writes_into_a_public_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from hsmkms.keypairs import CURVES

    for spec in (s for s in DataKeyPairSpec if s.family is Family.EC):
        assert spec.curve is not None
        public = ec.generate_private_key(CURVES[spec.curve.name]()).public_key()
        spki = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert spec.curve.oid_der in spki
        assert len(public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )) == spec.curve.point_len  # fmt: skip


def test_a_member_is_its_aws_string():
    assert KeySpec.SYMMETRIC_DEFAULT == "SYMMETRIC_DEFAULT"
    assert f"{specs.KeyState.PENDING_DELETION}" == "PendingDeletion"
    assert DataKeyPairSpec("RSA_2048") is DataKeyPairSpec.RSA_2048
