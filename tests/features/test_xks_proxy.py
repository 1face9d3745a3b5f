"""hsmkms as an XKS proxy: the XKS proxy API v1 driven in-process through the ASGI app, by a
client written from the spec (tests/xks_client.py: JSON by hand, botocore's SigV4Auth), over
the session's real token and store. The same client drives a real server in
tests/clients/test_client_xks.py."""

from __future__ import annotations

import asyncio
import base64
import configparser
import json
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from xks_client import Reply, XksClient, b64, integrity, request_metadata

from hsmkms.api import create_app
from hsmkms.api.xks import Credentials
from hsmkms.config import ConfigError, Settings
from hsmkms.home import (
    ensure_xks_profile,
    new_identity,
    new_xks_identity,
    read_credentials,
    read_xks_credentials,
    write_credentials,
)
from hsmkms.service.xks import integrity_value

HOST = "xks.test"


def asgi(app: Any) -> Any:
    """A transport into the ASGI app, without a network."""

    def transport(method: str, path: str, body: bytes, headers: Any) -> Reply:
        sent: list[dict[str, Any]] = []
        parts = [body]

        async def receive() -> dict[str, Any]:
            if parts:
                return {"type": "http.request", "body": parts.pop(), "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in dict(headers).items()],
            "client": ("192.0.2.9", 40000),
        }
        asyncio.run(app(scope, receive, send))
        head = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
        return Reply(sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), head)

    return transport


class Proxy:
    """The app, its credentials file, and clients of the two XKS credentials."""

    def __init__(self, app: Any, path: Path, xks: Any, second: Any, admin: Any) -> None:
        self.app, self.path, self.admin = app, path, admin
        self.transport = asgi(app)
        self.client = self.client_of(xks)
        self.second = self.client_of(second)
        self.clock = 0.0
        app.xks.credentials = Credentials(
            path, app.xks.credentials.regions, monotonic=lambda: self.clock
        )

    def client_of(self, identity: Any) -> XksClient:
        return XksClient(self.transport, HOST, identity.access_key_id, identity.secret_access_key)

    def reread(self) -> None:
        self.clock += 2.0  # past the once-a-second look at the credentials file


@pytest.fixture(scope="module")
def proxy(service, library, tmp_path_factory: pytest.TempPathFactory):
    account = library.caller.account_id
    path = tmp_path_factory.mktemp("xks") / "credentials"
    admin = new_identity(account)
    write_credentials(path, {"hsmkms": admin}, "us-east-1")
    ensure_xks_profile(path, "us-east-1")
    xks = next(iter(read_xks_credentials(path).values()))[0]
    second = new_xks_identity(account)
    with open(path, "a") as fh:
        fh.write(
            f"[xks-2]\naws_access_key_id = {second.access_key_id}\n"
            f"aws_secret_access_key = {second.secret_access_key}\n"
            f"hsmkms_account_id = {account}\n"
        )
    settings = service.settings.replace(credentials_file=str(path))
    app = create_app(library, read_credentials(path), settings, threads=2)
    yield Proxy(app, path, xks, second, admin)
    app.pool.shutdown()


@pytest.fixture(scope="module")
def key(library) -> str:
    return library.create_key(Description="xks")["KeyMetadata"]["KeyId"]


@pytest.fixture(scope="module")
def disabled_key(library) -> str:
    key_id = library.create_key(Description="xks disabled")["KeyMetadata"]["KeyId"]
    library.disable_key(KeyId=key_id)
    return key_id


def sealed(proxy: Proxy, key: str, plaintext: bytes = b"Hello World!", **kw: Any) -> Any:
    reply = proxy.client.encrypt(key, plaintext, **kw)
    assert reply.status == 200, reply.body
    return reply.json


def flip(field: str) -> str:
    data = bytearray(base64.b64decode(field))
    data[0] ^= 1
    return b64(bytes(data))


# -- GetKeyMetadata ------------------------------------------------------------------------------
def test_the_metadata_of_an_enabled_key_is_an_enabled_aes_256_key(proxy, key):
    reply = proxy.client.metadata(key)
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json == {"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"],
                          "keyStatus": "ENABLED"}  # fmt: skip


def test_a_disabled_key_is_disabled_and_refuses_encrypt_with_invalid_state(proxy, disabled_key):
    assert proxy.client.metadata(disabled_key).json["keyStatus"] == "DISABLED"
    reply = proxy.client.encrypt(disabled_key, b"x")
    assert (reply.status, reply.error) == (400, "InvalidStateException")


def test_a_key_disabled_after_an_encrypt_refuses_its_decrypt(proxy, library):
    key_id = library.create_key()["KeyMetadata"]["KeyId"]
    made = sealed(proxy, key_id)
    library.disable_key(KeyId=key_id)
    reply = proxy.client.decrypt(key_id, made)
    assert (reply.status, reply.error) == (400, "InvalidStateException")
    library.enable_key(KeyId=key_id)
    assert proxy.client.decrypt(key_id, made).status == 200


def test_an_hmac_key_shows_its_spec_and_refuses_encrypt_as_a_wrong_key_usage(proxy, library):
    key_id = library.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"][
        "KeyId"
    ]
    assert proxy.client.metadata(key_id).json["keySpec"] == "HMAC_256"
    reply = proxy.client.encrypt(key_id, b"x")
    assert (reply.status, reply.error) == (400, "InvalidKeyUsageException")


def test_an_unknown_key_is_key_not_found(proxy):
    for op in (
        lambda c: c.metadata("1234abcd-12ab-34cd-56ef-1234567890ab"),
        lambda c: c.encrypt("no-such-key", b"x"),
    ):
        reply = op(proxy.client)
        assert (reply.status, reply.error) == (404, "KeyNotFoundException")


def test_a_key_of_another_account_is_not_found(proxy, library):
    from hsmkms.identity import Caller

    other = library.as_caller(Caller("999988887777", "arn:aws:iam::999988887777:root"))
    key_id = other.create_key()["KeyMetadata"]["KeyId"]
    reply = proxy.client.metadata(key_id)
    assert (reply.status, reply.error) == (404, "KeyNotFoundException")


# -- Encrypt and Decrypt -----------------------------------------------------------------------
def test_encrypt_answers_the_spec_fields_and_decrypt_gives_the_plaintext_back(proxy, key):
    aad = b"project=nile,department=marketing"
    made = sealed(proxy, key, b"Hello World!", aad=aad)
    fields = {k: base64.b64decode(v) for k, v in made.items()}
    assert set(made) == {"ciphertext", "ciphertextMetadata", "initializationVector",
                         "authenticationTag", "ciphertextDataIntegrityValue"}  # fmt: skip
    assert len(fields["ciphertext"]) == len(b"Hello World!")
    assert len(fields["initializationVector"]) == 12
    assert len(fields["authenticationTag"]) == 16
    assert len(fields["ciphertextMetadata"]) <= 20
    assert fields["ciphertextDataIntegrityValue"] == integrity(
        aad,
        fields["ciphertextMetadata"],
        fields["initializationVector"],
        fields["ciphertext"],
        fields["authenticationTag"],
    )
    reply = proxy.client.decrypt(key, made, aad=aad)
    assert reply.status == 200
    assert reply.json == {"plaintext": b64(b"Hello World!")}


def test_without_the_integrity_algorithm_no_integrity_value_is_answered(proxy, key):
    made = sealed(proxy, key, b"", cdiv=False)
    assert "ciphertextDataIntegrityValue" not in made
    assert proxy.client.decrypt(key, made).blob("plaintext") == b""


def test_the_integrity_value_is_appendix_c_s_example():
    hexes = {
        "aad": b"project=nile,department=marketing",
        "metadata": b"key_version=1",
        "iv": bytes.fromhex("1ccae5470f39700254779031"),
        "ciphertext": bytes.fromhex("821c642b5b71783367deaf18"),
        "tag": bytes.fromhex("bc1c4dda7707d6812447c5955e99b261"),
    }
    value = integrity_value(*hexes.values())
    assert b64(value) == "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc="


def test_each_encrypt_has_its_own_iv(proxy, key):
    first, second = sealed(proxy, key, b"same"), sealed(proxy, key, b"same")
    assert first["initializationVector"] != second["initializationVector"]
    assert first["ciphertext"] != second["ciphertext"]


@pytest.mark.parametrize("field", ["ciphertext", "authenticationTag", "ciphertextMetadata",
                                   "initializationVector"])  # fmt: skip
def test_a_changed_field_is_an_invalid_ciphertext(proxy, key, field):
    made = sealed(proxy, key, aad=b"ctx")
    reply = proxy.client.decrypt(key, {**made, field: flip(made[field])}, aad=b"ctx")
    assert (reply.status, reply.error) == (400, "InvalidCiphertextException")


@pytest.mark.parametrize("aad", [None, b"", b"ctX", b"ctx\x00"])
def test_another_aad_is_an_invalid_ciphertext(proxy, key, aad):
    made = sealed(proxy, key, aad=b"ctx")
    reply = proxy.client.decrypt(key, made, aad=aad)
    assert (reply.status, reply.error) == (400, "InvalidCiphertextException")


def test_absent_and_empty_aad_are_the_same_aad(proxy, key):
    made = sealed(proxy, key)
    assert proxy.client.decrypt(key, made, aad=b"").status == 200


def test_metadata_moved_into_the_aad_does_not_decrypt(proxy, key):
    """The spec's NOTE: without the lengths in the AAD, encrypting without AAD and decrypting
    with the metadata as AAD and no metadata would succeed."""
    made = sealed(proxy, key)
    metadata = base64.b64decode(made["ciphertextMetadata"])
    moved = {k: v for k, v in made.items() if k != "ciphertextMetadata"}
    reply = proxy.client.decrypt(key, moved, aad=metadata)
    assert (reply.status, reply.error) == (400, "InvalidCiphertextException")


def test_a_ciphertext_decrypts_under_its_key_only(proxy, key, library):
    other = library.create_key()["KeyMetadata"]["KeyId"]
    reply = proxy.client.decrypt(other, sealed(proxy, key))
    assert (reply.status, reply.error) == (400, "InvalidCiphertextException")


def test_a_rotated_key_still_decrypts_what_it_encrypted_before(proxy, library):
    key_id = library.create_key()["KeyMetadata"]["KeyId"]
    before = sealed(proxy, key_id, b"before")
    library.rotate_key_on_demand(KeyId=key_id)
    after = sealed(proxy, key_id, b"after")
    assert after["ciphertextMetadata"] != before["ciphertextMetadata"]
    assert proxy.client.decrypt(key_id, before).blob("plaintext") == b"before"
    assert proxy.client.decrypt(key_id, after).blob("plaintext") == b"after"


def test_the_largest_inputs_the_spec_requires_are_taken(proxy, key):
    plaintext, aad = bytes(range(256)) * 16 + b"\x01" * 204, b"a" * 8192  # 4300, 8192 bytes
    made = sealed(proxy, key, plaintext, aad=aad)
    assert proxy.client.decrypt(key, made, aad=aad).blob("plaintext") == plaintext


# -- GetHealthStatus ---------------------------------------------------------------------------
def test_health_reports_the_token_active(proxy):
    reply = proxy.client.health()
    assert reply.status == 200
    body = reply.json
    assert body["xksProxyFleetSize"] == 1
    assert body["xksProxyVendor"] == "hsmkms" and body["xksProxyModel"].startswith("hsmkms ")
    assert body["ekmVendor"] == "SoftHSM project"
    [entry] = body["ekmFleetDetails"]
    assert entry["healthStatus"] == "ACTIVE"
    assert entry["id"] and "SoftHSM" in entry["model"]


def test_health_takes_a_body_without_request_metadata(proxy):
    assert proxy.client.post("health", {}).status == 200


# -- authentication ------------------------------------------------------------------------------
def test_a_wrong_secret_is_authentication_failed(proxy, key):
    reply = proxy.client.metadata(key, secret="x" * 44)
    assert (reply.status, reply.error) == (401, "AuthenticationFailedException")


def test_an_unknown_access_key_is_authentication_failed(proxy):
    reply = proxy.client.health(access_key_id="ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert (reply.status, reply.error) == (401, "AuthenticationFailedException")


def test_a_kms_api_credential_is_not_an_xks_credential(proxy):
    admin = proxy.admin
    reply = proxy.client.health(access_key_id=admin.access_key_id, secret=admin.secret_access_key)
    assert (reply.status, reply.error) == (401, "AuthenticationFailedException")


def test_an_xks_credential_is_not_a_kms_api_credential(proxy):
    body = json.dumps({"NumberOfBytes": 8}).encode()
    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}/",
        data=body,
        headers={"X-Amz-Target": "TrentService.GenerateRandom", "Host": HOST,
                 "Content-Type": "application/x-amz-json-1.1"},
    )  # fmt: skip
    c = proxy.client
    SigV4Auth(BotoCredentials(c.access_key_id, c.secret), "kms", "us-east-1").add_auth(request)
    reply = proxy.transport("POST", "/", body, dict(request.headers.items()))
    assert reply.status == 400
    assert reply.json["__type"] == "UnrecognizedClientException"


def test_a_signature_for_another_service_is_authentication_failed(proxy):
    reply = proxy.client.health(service="kms")
    assert (reply.status, reply.error) == (401, "AuthenticationFailedException")


def test_a_request_signed_six_minutes_ago_is_authentication_failed(proxy):
    reply = proxy.client.health(when=datetime.now(UTC) - timedelta(minutes=6))
    assert (reply.status, reply.error) == (401, "AuthenticationFailedException")


def test_an_unsigned_request_is_authentication_failed(proxy):
    reply = proxy.transport("POST", "/xks/kms/xks/v1/health", b"{}", {"Host": HOST})
    assert (reply.status, reply.error) == (401, "AuthenticationFailedException")


def test_a_changed_body_is_authentication_failed(proxy, key):
    body = json.dumps({"requestMetadata": request_metadata("Encrypt")}).encode()
    path = f"/xks/kms/xks/v1/keys/{key}/metadata"
    headers = proxy.client.headers(path, body)
    reply = proxy.transport("POST", path, body.replace(b"Encrypt", b"Decrypt"), headers)
    assert (reply.status, reply.error) == (401, "AuthenticationFailedException")


def test_a_second_credential_works_beside_the_first_until_it_is_removed(proxy, key):
    assert proxy.second.metadata(key).status == 200
    assert proxy.client.metadata(key).status == 200
    text = proxy.path.read_text()
    try:
        proxy.path.write_text(text[: text.index("[xks-2]\naws_")])
        proxy.reread()
        reply = proxy.second.metadata(key)
        assert (reply.status, reply.error) == (401, "AuthenticationFailedException")
        assert proxy.client.metadata(key).status == 200
    finally:
        proxy.path.write_text(text)
        proxy.reread()
    assert proxy.second.metadata(key).status == 200


def test_a_credential_of_another_region_names_that_region_s_keys(proxy, key):
    text = proxy.path.read_text()
    try:
        proxy.path.write_text(text + "region = us-west-2\n")  # the [xks-2] profile's Region
        proxy.reread()
        reply = proxy.second.metadata(key)
        assert (reply.status, reply.error) == (404, "KeyNotFoundException")
    finally:
        proxy.path.write_text(text)
        proxy.reread()


# -- the path, the method and the body -------------------------------------------------------------
def test_get_is_refused_with_405(proxy, key):
    for path in ("/xks/kms/xks/v1/health", f"/xks/kms/xks/v1/keys/{key}/metadata"):
        reply = proxy.transport("GET", path, b"", proxy.client.headers(path, b"", method="GET"))
        assert reply.status == 405
        assert reply.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ["/xks", "/xks/kms/xks/v1", "/xks/kms/xks/v2/health",
                                  "/xks/kms/xks/v1/keys/k/sign",
                                  "/xks/kms/xks/v1/keys/a%2Fb/encrypt",
                                  "/xks/kms/xks/v1/keys/" + "k" * 129 + "/metadata"])  # fmt: skip
def test_a_path_that_is_no_xks_api_is_invalid_uri_path(proxy, path):
    reply = proxy.transport("POST", path, b"{}", proxy.client.headers(path, b"{}"))
    assert (reply.status, reply.error) == (404, "InvalidUriPathException")


def test_the_kms_api_is_still_served_beside(proxy):
    reply = proxy.transport("POST", "/", b"{}", {"Host": HOST})
    assert reply.status == 400 and reply.json["__type"] == "UnknownOperationException"


def body_of(key: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requestMetadata": request_metadata("Encrypt"),
        "plaintext": b64(b"x"),
        "encryptionAlgorithm": "AES_GCM",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize(
    "changes",
    [
        {"encryptionAlgorithm": "AES_CBC"},
        {"encryptionAlgorithm": ...},
        {"plaintext": ...},
        {"plaintext": "not base64!"},
        {"plaintext": 12},
        {"additionalAuthenticatedData": "a"},
        {"ciphertextDataIntegrityValueAlgorithm": "SHA_1"},
        {"requestMetadata": ...},
        {"requestMetadata": {"kmsOperation": "Encrypt"}},
        {"requestMetadata": {**request_metadata("Encrypt"), "kmsRequestId": 7}},
    ],
    ids=lambda c: re.sub(r"\W+", "-", repr(c))[:40],
)
def test_a_bad_encrypt_field_is_a_validation_exception(proxy, key, changes):
    reply = proxy.client.post(f"keys/{key}/encrypt", body_of(key, **changes))
    assert (reply.status, reply.error) == (400, "ValidationException"), reply.body


def test_a_body_that_is_not_json_is_a_validation_exception(proxy, key):
    reply = proxy.client.post(f"keys/{key}/metadata", None, raw=b"{nope")
    assert (reply.status, reply.error) == (400, "ValidationException")


def test_an_unknown_kms_operation_and_extra_members_are_taken(proxy, key):
    meta = {**request_metadata("BulkEncrypt"), "kmsRecipientAttestationImageSha384": "ab"}
    reply = proxy.client.post(f"keys/{key}/encrypt", body_of(key, requestMetadata=meta))
    assert reply.status == 200


@pytest.mark.parametrize("field, size", [("initializationVector", 11),
                                         ("authenticationTag", 15),
                                         ("ciphertextMetadata", 21)])  # fmt: skip
def test_a_decrypt_field_of_a_size_the_spec_forbids_is_a_validation_exception(
    proxy, key, field, size
):
    made = sealed(proxy, key)
    reply = proxy.client.decrypt(key, {**made, field: b64(b"\x00" * size)})
    assert (reply.status, reply.error) == (400, "ValidationException")


def test_a_16_byte_iv_is_taken_but_decrypts_nothing_of_ours(proxy, key):
    made = sealed(proxy, key)
    reply = proxy.client.decrypt(key, {**made, "initializationVector": b64(b"\x00" * 16)})
    assert (reply.status, reply.error) == (400, "InvalidCiphertextException")


@pytest.mark.parametrize(
    "field, size", [("plaintext", 4301), ("additionalAuthenticatedData", 8193)]
)
def test_an_input_past_the_spec_s_sizes_is_unsupported(proxy, key, field, size):
    reply = proxy.client.post(f"keys/{key}/encrypt", body_of(key, **{field: b64(b"\x00" * size)}))
    assert (reply.status, reply.error) == (501, "UnsupportedOperationException")


def test_a_ciphertext_past_the_spec_s_size_is_unsupported(proxy, key):
    made = sealed(proxy, key)
    reply = proxy.client.decrypt(key, {**made, "ciphertext": b64(b"\x00" * 4301)})
    assert (reply.status, reply.error) == (501, "UnsupportedOperationException")


def test_a_body_past_64_kib_is_refused_unread(proxy, key):
    path = f"/xks/kms/xks/v1/keys/{key}/encrypt"
    body = json.dumps(body_of(key, padding="x" * 70000)).encode()
    reply = proxy.transport("POST", path, body, proxy.client.headers(path, body))
    assert (reply.status, reply.error) == (501, "UnsupportedOperationException")
    assert reply.headers["connection"] == "close"


# -- what the server writes --------------------------------------------------------------------
def test_a_request_is_logged_with_its_metadata_and_never_its_plaintext(proxy, key, caplog):
    secret = b"do not log me, ever"
    with caplog.at_level(logging.INFO, logger="hsmkms.xks"):
        made = sealed(proxy, key, secret)
        proxy.client.decrypt(key, made)
    text = caplog.text
    assert "kmsRequestId=4112f4d6-db54-4af4-ae30-c55a22a8dfae" in text
    assert "XKS Decrypt" in text and "kmsOperation=Decrypt" in text
    assert f"credential={proxy.client.access_key_id}" in text  # which one AWS KMS signs with
    assert b64(secret) not in text and secret.decode() not in text
    assert made["ciphertext"] not in text


def test_errors_are_counted_in_the_metrics(proxy):
    proxy.client.health(secret="y" * 44)
    assert proxy.app.metrics.requests[("XksGetHealthStatus", "AuthenticationFailedException")]


# -- the credentials file and the settings -----------------------------------------------------
def test_a_home_gains_one_xks_profile_whose_credential_is_as_the_spec_asks(tmp_path):
    path = tmp_path / "credentials"
    admin = new_identity()
    write_credentials(path, {"hsmkms": admin}, "eu-west-1")
    ensure_xks_profile(path, "eu-west-1")
    ensure_xks_profile(path, "eu-west-1")  # a second start, or a second worker
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    assert parser.sections() == ["hsmkms", "xks"]
    xks = parser["xks"]
    assert re.fullmatch(r"[A-Z2-7]{20,30}", xks["aws_access_key_id"])
    assert re.fullmatch(r"[A-Za-z0-9+/=]{43,64}", xks["aws_secret_access_key"])
    assert xks["hsmkms_account_id"] == admin.account_id and xks["region"] == "eu-west-1"
    assert list(read_credentials(path)) == [admin.access_key_id]  # not a KMS API principal
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_path_prefix_is_checked_as_aws_kms_checks_the_uri_path():
    assert Settings.load(env={}).xks_path_prefix == "/xks"
    assert Settings.load(env={}, xks_path_prefix="/keystores/a-1_b").xks_path_prefix
    for bad in ("xks", "/xks/", "/x ks", "/" + "a" * 117):
        with pytest.raises(ConfigError):
            Settings.load(env={}, xks_path_prefix=bad)
