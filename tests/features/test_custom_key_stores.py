"""Custom key stores of type AWS_CLOUDHSM (issue 21): a second SoftHSM2 token beside the
session's (tests/conftest.py makes it) as the store's "cluster", with AWS's states and rules:
create, connect (a wrong password fails with INVALID_CREDENTIALS), keys whose material is made
on that token, disconnect (the keys answer KMSInvalidStateException and read Unavailable),
update only while disconnected (but the name), delete only disconnected and empty."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from conftest import CLUSTER_TOKEN
from helpers import raises

CLUSTER = "cluster-234abcdefgh"


@pytest.fixture(scope="module")
def anchor() -> str:
    """A PEM certificate (any: hsmkms checks its form; a CloudHSM cluster's anchor is its
    own business)."""
    from datetime import UTC, datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test cluster anchor")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def kms(settings, token, service):
    """The library face with the second token configured as cluster CLUSTER."""
    from hsmkms.compose import build_service
    from hsmkms.kms import KMS

    svc = build_service(
        settings.replace(cloudhsm_clusters=f"{CLUSTER}={CLUSTER_TOKEN}"), token, service.store
    )
    yield KMS.from_service(svc)
    svc.pool.close()


@pytest.fixture(scope="module")
def pin(settings) -> str:
    return (settings.home / "cluster.pin").read_text()


def _state(kms, store_id: str) -> dict:
    (entry,) = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"]
    return entry


def _on(masters, material_id: str) -> bool:
    """Whether a token (its master keys: the home's, or a connected store's) holds the
    material, asked of the token itself."""
    return bool(masters.token.has_master(bytes.fromhex(material_id)))


def test_a_cloudhsm_key_store_lives_its_aws_life(kms, anchor, pin, settings):
    with raises("ValidationException"):
        kms.create_custom_key_store(CustomKeyStoreName="incomplete", CloudHsmClusterId=CLUSTER)
    with raises("CloudHsmClusterNotFoundException"):
        kms.create_custom_key_store(
            CustomKeyStoreName="unknown", CloudHsmClusterId="cluster-zzzzzzzzzzz",
            TrustAnchorCertificate=anchor, KeyStorePassword=pin,
        )  # fmt: skip
    with raises("IncorrectTrustAnchorException"):
        kms.create_custom_key_store(
            CustomKeyStoreName="bad anchor", CloudHsmClusterId=CLUSTER,
            TrustAnchorCertificate="not a certificate", KeyStorePassword=pin,
        )  # fmt: skip
    store_id = kms.create_custom_key_store(
        CustomKeyStoreName="lab cluster", CloudHsmClusterId=CLUSTER,
        TrustAnchorCertificate=anchor, KeyStorePassword="wrong-password",
    )["CustomKeyStoreId"]  # fmt: skip
    assert re.fullmatch(r"cks-[0-9a-f]{17}", store_id)
    assert _state(kms, store_id)["ConnectionState"] == "DISCONNECTED"
    assert pin not in str(kms.describe_custom_key_stores())  # the PIN is never answered
    with raises("CustomKeyStoreNameInUseException"):
        kms.create_custom_key_store(
            CustomKeyStoreName="lab cluster", CloudHsmClusterId=CLUSTER,
            TrustAnchorCertificate=anchor, KeyStorePassword=pin,
        )  # fmt: skip
    with raises("CustomKeyStoreInvalidStateException"):
        kms.create_key(CustomKeyStoreId=store_id, Origin="AWS_CLOUDHSM")

    kms.connect_custom_key_store(CustomKeyStoreId=store_id)  # the wrong password
    entry = _state(kms, store_id)
    assert (entry["ConnectionState"], entry["ConnectionErrorCode"]) == (
        "FAILED",
        "INVALID_CREDENTIALS",
    )
    with raises("CustomKeyStoreInvalidStateException"):
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)  # disconnect a FAILED first
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    kms.update_custom_key_store(CustomKeyStoreId=store_id, KeyStorePassword=pin)
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert _state(kms, store_id)["ConnectionState"] == "CONNECTED"

    meta = kms.create_key(CustomKeyStoreId=store_id, Origin="AWS_CLOUDHSM")["KeyMetadata"]
    assert (meta["Origin"], meta["CustomKeyStoreId"], meta["CloudHsmClusterId"]) == (
        "AWS_CLOUDHSM",
        store_id,
        CLUSTER,
    )
    material = meta["CurrentKeyMaterialId"]
    router = kms.service.router
    assert _on(router.stores()[store_id], material)  # on the cluster's token
    assert not _on(router.home, material)  # not on the home's
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"in the cluster")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"in the cluster"
    with raises("UnsupportedOperationException"):
        kms.create_key(CustomKeyStoreId=store_id, Origin="AWS_CLOUDHSM", KeySpec="RSA_2048",
                       KeyUsage="SIGN_VERIFY")  # fmt: skip
    with raises("ValidationException"):
        kms.create_key(CustomKeyStoreId=store_id)  # Origin must say the store's type

    assert len(kms.generate_random(NumberOfBytes=24, CustomKeyStoreId=store_id)["Plaintext"]) == 24
    kms.update_custom_key_store(CustomKeyStoreId=store_id, NewCustomKeyStoreName="lab")
    with raises("CustomKeyStoreInvalidStateException"):
        kms.update_custom_key_store(CustomKeyStoreId=store_id, KeyStorePassword=pin)
    with raises("CustomKeyStoreInvalidStateException"):
        kms.delete_custom_key_store(CustomKeyStoreId=store_id)

    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Unavailable" and described["Enabled"] is False
    with raises("KMSInvalidStateException", "not connected"):
        kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"x")
    with raises("KMSInvalidStateException"):
        kms.decrypt(CiphertextBlob=blob)
    with raises("CustomKeyStoreHasCMKsException"):
        kms.delete_custom_key_store(CustomKeyStoreId=store_id)
    with raises("CustomKeyStoreInvalidStateException"):
        kms.generate_random(NumberOfBytes=8, CustomKeyStoreId=store_id)

    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"in the cluster"
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    from hsmkms.service.keys import sweep

    due = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["DeletionDate"]
    cluster = router.stores()[store_id]
    assert meta["KeyId"] in sweep(kms.service, at=due + timedelta(seconds=1))
    assert not _on(cluster, material)  # destroyed on its token
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    kms.delete_custom_key_store(CustomKeyStoreId=store_id)
    with raises("CustomKeyStoreNotFoundException"):
        kms.describe_custom_key_stores(CustomKeyStoreId=store_id)
    assert not (settings.home / "keystores" / f"{store_id}.secret").exists()
