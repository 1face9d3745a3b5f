"""hsmkms as the external key store of another hsmkms (issue 21): an inner server serves the XKS
proxy API over HTTPS from its token; the outer hsmkms makes an EXTERNAL_KEY_STORE custom key
store pointing at it, a KMS key whose external key is an inner key, and encrypts twice (its own
material, then the inner key through the proxy). Disabling the inner key makes the outer answer
AWS's error; a wrong credential and an unknown external key are refused as AWS refuses them."""

from __future__ import annotations

import configparser

import pytest
from helpers import raises, self_signed_certificate
from server import ServerProcess


@pytest.fixture(scope="module")
def inner(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("inner-home")
    tls = self_signed_certificate(tmp_path_factory.mktemp("inner-tls"))
    with ServerProcess(home, tls=tls) as srv:
        yield srv, tls[0]


@pytest.fixture(scope="module")
def outer(inner, settings, token, service):
    """The library face, trusting the inner server's certificate for proxy calls."""
    from hsmkms.compose import build_service
    from hsmkms.kms import KMS

    _, cert = inner
    svc = build_service(
        settings.replace(
            xks_proxy_ca_file=str(cert), xks_proxy_timeout=5.0, xks_proxy_port=inner[0].port
        ),
        token,
        service.store,
    )
    yield KMS.from_service(svc)
    svc.pool.close()


def _xks_credential(srv: ServerProcess) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(srv.credentials)
    section = parser["xks"]
    return {
        "AccessKeyId": section["aws_access_key_id"],
        "RawSecretAccessKey": section["aws_secret_access_key"],
    }


def _store(outer, srv: ServerProcess, name: str, credential: dict[str, str]) -> str:
    return outer.create_custom_key_store(
        CustomKeyStoreName=name,
        CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint="https://127.0.0.1",  # the port: the xks_proxy_port setting
        XksProxyUriPath="/xks/kms/xks/v1",
        XksProxyAuthenticationCredential=credential,
        XksProxyConnectivity="PUBLIC_ENDPOINT",
    )["CustomKeyStoreId"]


def test_an_hsmkms_key_in_another_hsmkms_behind_its_xks_proxy(inner, outer):
    srv, _ = inner
    inner_kms = srv.client()
    external = inner_kms.create_key(Description="the external key")["KeyMetadata"]["KeyId"]
    credential = _xks_credential(srv)

    with raises("XksProxyIncorrectAuthenticationCredentialException"):
        _store(outer, srv, "wrong secret", {**credential, "RawSecretAccessKey": "x" * 44})
    store_id = _store(outer, srv, "inner hsmkms", credential)
    (entry,) = outer.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"]
    assert entry["XksProxyConfiguration"]["UriPath"] == "/xks/kms/xks/v1"
    assert credential["RawSecretAccessKey"] not in str(entry)
    outer.connect_custom_key_store(CustomKeyStoreId=store_id)
    (entry,) = outer.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"]
    assert entry["ConnectionState"] == "CONNECTED", entry

    with raises("XksKeyNotFoundException"):
        outer.create_key(
            CustomKeyStoreId=store_id, Origin="EXTERNAL_KEY_STORE",
            XksKeyId="00000000-0000-4000-8000-000000000000",
        )  # fmt: skip
    meta = outer.create_key(
        CustomKeyStoreId=store_id, Origin="EXTERNAL_KEY_STORE", XksKeyId=external
    )["KeyMetadata"]
    assert meta["Origin"] == "EXTERNAL_KEY_STORE"
    assert meta["XksKeyConfiguration"] == {"Id": external}
    with raises("XksKeyAlreadyInUseException"):
        outer.create_key(CustomKeyStoreId=store_id, Origin="EXTERNAL_KEY_STORE", XksKeyId=external)

    key_id = meta["KeyId"]
    context = {"tenant": "acme"}
    blob = outer.encrypt(KeyId=key_id, Plaintext=b"twice sealed", EncryptionContext=context)[
        "CiphertextBlob"
    ]
    assert blob[2] & 0x7F == 0x03  # the external layer's blob kind
    assert outer.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == (
        b"twice sealed"
    )
    # Another context fails the proxy's tag check: AWS's table answers KMSInvalidStateException.
    with raises("KMSInvalidStateException", "corrupted"):
        outer.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "other"})
    data_key = outer.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert (
        outer.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"]
        == (data_key["Plaintext"])
    )

    # The inner key disabled in the inner hsmkms: the outer answers AWS's error.
    inner_kms.disable_key(KeyId=external)
    with raises("KMSInvalidStateException", "not enabled in the external key manager"):
        outer.encrypt(KeyId=key_id, Plaintext=b"x")
    with raises("KMSInvalidStateException"):
        outer.decrypt(CiphertextBlob=blob, EncryptionContext=context)
    inner_kms.enable_key(KeyId=external)
    assert outer.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == (
        b"twice sealed"
    )

    # Disconnected: the key is Unavailable; the store goes once it holds no key.
    outer.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    assert outer.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Unavailable"
    with raises("KMSInvalidStateException"):
        outer.encrypt(KeyId=key_id, Plaintext=b"x")
    with raises("CustomKeyStoreHasCMKsException"):
        outer.delete_custom_key_store(CustomKeyStoreId=store_id)
