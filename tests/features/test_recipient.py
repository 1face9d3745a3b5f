"""Recipient (issue 19): a secret released to an attested enclave as CiphertextForRecipient, a
CMS envelope only the enclave's private key opens, after its attestation document is verified
against the configured trust anchor. The tests make their own documents (tests/attestation_docs
.py: a test root CA, an ES384 leaf, a COSE_Sign1 over a CBOR payload)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import cbor2
import pytest
from attestation_docs import IMAGE_A, IMAGE_B, Authority, Enclave, certificate, sign1
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import raises
from server import ServerProcess

from hsmkms.service.attestation import AWS_NITRO_ROOT_G1, AWS_NITRO_ROOT_G1_SHA256


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority()


@pytest.fixture(scope="module")
def enclave() -> Enclave:
    return Enclave()


@pytest.fixture(scope="module", params=["library", pytest.param("http", marks=pytest.mark.slow)])
def kms(request, ca, settings, token, service, tmp_path_factory):
    anchors = ca.pem(tmp_path_factory.mktemp("anchors") / "roots.pem")
    if request.param == "library":
        from hsmkms.compose import build_service
        from hsmkms.kms import KMS

        svc = build_service(
            settings.replace(attestation_trust_anchors=str(anchors)), token, service.store
        )
        yield KMS.from_service(svc)
        svc.pool.close()
        return
    env = {"HSMKMS_ATTESTATION_TRUST_ANCHORS": str(anchors)}
    with ServerProcess(tmp_path_factory.mktemp("recipient-server"), env=env) as srv:
        yield srv.client()


def _recipient(document: bytes) -> dict:
    return {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document}


def test_the_aws_nitro_root_is_the_default_anchor_by_its_published_fingerprint():
    from cryptography import x509

    root = x509.load_pem_x509_certificate(AWS_NITRO_ROOT_G1)
    der = root.public_bytes(serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == AWS_NITRO_ROOT_G1_SHA256
    assert root.subject.rfc4514_string() == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"


def test_decrypt_releases_the_plaintext_only_to_the_enclave(kms, ca, enclave, tmp_path):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"for the enclave only")["CiphertextBlob"]
    out = kms.decrypt(CiphertextBlob=blob, Recipient=_recipient(enclave.document(ca)))
    assert "Plaintext" not in out or not out["Plaintext"]
    envelope = out["CiphertextForRecipient"]
    assert enclave.open(envelope) == b"for the enclave only"
    assert enclave.openssl(envelope, tmp_path) == b"for the enclave only"
    assert enclave.nitro_sdk(envelope) == b"for the enclave only"
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"for the enclave only"
    untagged = enclave.document(ca, tagged=False)  # the NSM emits either form
    again = kms.decrypt(CiphertextBlob=blob, Recipient=_recipient(untagged))
    assert enclave.open(again["CiphertextForRecipient"]) == b"for the enclave only"


def test_data_keys_pairs_random_and_shared_secrets_go_to_the_enclave(kms, ca, enclave):
    doc = _recipient(enclave.document(ca))
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    dk = kms.generate_data_key(KeyId=key, KeySpec="AES_256", Recipient=doc)
    assert not dk.get("Plaintext")
    data_key = enclave.open(dk["CiphertextForRecipient"])
    assert len(data_key) == 32
    assert kms.decrypt(CiphertextBlob=dk["CiphertextBlob"])["Plaintext"] == data_key

    pair = kms.generate_data_key_pair(KeyId=key, KeyPairSpec="ECC_NIST_P256", Recipient=doc)
    assert not pair.get("PrivateKeyPlaintext")
    private = serialization.load_der_private_key(enclave.open(pair["CiphertextForRecipient"]), None)
    assert (
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        == pair["PublicKey"]
    )

    random = kms.generate_random(NumberOfBytes=48, Recipient=doc)
    assert not random.get("Plaintext") and len(enclave.open(random["CiphertextForRecipient"])) == 48

    agree = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
    kms_public = serialization.load_der_public_key(
        kms.get_public_key(KeyId=agree["KeyId"])["PublicKey"]
    )
    peer = ec.generate_private_key(ec.SECP256R1())
    peer_spki = peer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    shared = kms.derive_shared_secret(
        KeyId=agree["KeyId"], KeyAgreementAlgorithm="ECDH", PublicKey=peer_spki, Recipient=doc
    )
    assert not shared.get("SharedSecret")
    expected = peer.exchange(ec.ECDH(), kms_public)
    assert enclave.open(shared["CiphertextForRecipient"]) == expected


def test_a_key_policy_on_pcr0_releases_to_one_image_only(kms, ca, enclave):
    account = kms.describe_key(KeyId=kms.create_key()["KeyMetadata"]["KeyId"])["KeyMetadata"][
        "AWSAccountId"
    ]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringNotEqualsIgnoreCase": {"kms:RecipientAttestation:PCR0": IMAGE_A.hex()}
                },
            },
        ],
    }
    key = kms.create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"image A only")["CiphertextBlob"]
    out = kms.decrypt(CiphertextBlob=blob, Recipient=_recipient(enclave.document(ca)))
    assert enclave.open(out["CiphertextForRecipient"]) == b"image A only"
    with raises("AccessDeniedException"):
        kms.decrypt(CiphertextBlob=blob, Recipient=_recipient(enclave.document(ca, image=IMAGE_B)))
    with raises("AccessDeniedException"):  # no Recipient: the key is absent, the Deny applies
        kms.decrypt(CiphertextBlob=blob)
    image_policy = json.loads(json.dumps(policy))
    condition = image_policy["Statement"][1]["Condition"]["StringNotEqualsIgnoreCase"]
    condition["kms:RecipientAttestation:ImageSha384"] = condition.pop(
        "kms:RecipientAttestation:PCR0"
    )
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(image_policy))
    with raises("AccessDeniedException"):
        kms.decrypt(CiphertextBlob=blob, Recipient=_recipient(enclave.document(ca, image=IMAGE_B)))


def _tampered(ca: Authority, enclave: Enclave) -> dict[str, bytes]:
    good = enclave.document(ca)
    tag = cbor2.loads(good)
    protected, unprotected, payload, signature = tag.value

    def flip(data: bytes) -> bytes:  # a real change, never a no-op
        changed = bytearray(data)
        changed[len(changed) // 2] ^= 1
        return bytes(changed)

    other = Authority()  # a chain that is sound but not trusted
    now = datetime.now(UTC)
    expired_leaf = certificate("old host", ca.leaf_key, ("test zone", ca.mid_key), ca=False,
                               not_before=now - timedelta(days=2),
                               not_after=now - timedelta(days=1))  # fmt: skip
    rogue_key = ec.generate_private_key(ec.SECP384R1())
    rogue_mid = certificate("test zone", rogue_key, ("rogue", rogue_key))  # not by the root
    return {
        "a payload byte": cbor2.dumps(
            cbor2.CBORTag(18, [protected, unprotected, flip(payload), signature])
        ),  # fmt: skip
        "the signature": cbor2.dumps(
            cbor2.CBORTag(18, [protected, unprotected, payload, flip(signature)])
        ),
        "the root": enclave.document(other, leaf=other.leaf, leaf_key=other.leaf_key),
        "the chain": enclave.document(ca, bundle=[ca.root, rogue_mid]),
        "an expired leaf": enclave.document(ca, leaf=expired_leaf),
        "the age": enclave.document(ca, timestamp_ms=int((now.timestamp() - 3600) * 1000)),
        "the format": b"\xa1\x01" + b"not cbor at all",
        "the algorithm": cbor2.dumps(
            cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {}, payload, signature])
        ),
        "the enclave key": enclave.document(
            ca,
            public_key=ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
        "the payload": sign1(cbor2.dumps({"module_id": "x"}), ca.leaf_key),
    }


def test_every_tampering_is_refused_and_releases_nothing(kms, ca, enclave):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"never released")["CiphertextBlob"]
    for what, document in _tampered(ca, enclave).items():
        for call in (
            lambda d=document: kms.decrypt(CiphertextBlob=blob, Recipient=_recipient(d)),
            lambda d=document: kms.generate_random(NumberOfBytes=16, Recipient=_recipient(d)),
        ):
            with raises("ValidationException", "attestation document") as info:
                call()
            assert b"never released" not in json.dumps(info.value.response, default=str).encode()
            assert what  # the case named in a failure's traceback


def test_the_default_anchor_refuses_a_document_of_another_root(library, ca, enclave):
    """The session's own service trusts the AWS Nitro root only."""
    key = library.create_key()["KeyMetadata"]["KeyId"]
    blob = library.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    with raises("ValidationException", "trusted root"):
        library.decrypt(CiphertextBlob=blob, Recipient=_recipient(enclave.document(ca)))
