"""The ASGI app, driven in-process: the AWS JSON 1.1 envelope, limits, errors, lifespan.

The operation layer is a fake behind the real :class:`hsmkms.kms.KMS`, so input validation is
the real one and each test sees exactly what the wire hands to ``Service.dispatch``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hsmkms import errors
from hsmkms.api import create_app
from hsmkms.config import Settings
from hsmkms.home import Identity
from hsmkms.kms import KMS, Caller

ALICE = Identity("AKIAALICE", "alice-secret", "111122223333", "arn:aws:iam::111122223333:user/a")
HOST = "kms.test:8080"
CANARY = "canary-3f1d"  # must never appear in an answer


class FakeService:
    """Records what the wire passes down; answers per operation."""

    def __init__(self) -> None:
        self.settings = Settings.load(env={})
        self.calls: list[tuple[str, dict[str, Any], Caller]] = []
        self.health_report: dict[str, Any] | Exception = {"ok": True, "token": {"ok": True}}
        self.closed = False
        self.swept = False
        self.pool: Any = None  # a test may give it a key pair pool

    def dispatch(self, operation: str, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        from hsmkms import model

        model.validate_input(operation, params)  # as Service.dispatch does, before anything
        self.calls.append((operation, params, caller))
        if operation == "GenerateRandom":
            return {"Plaintext": b"\x00\x01\xfe\xff", "Unmodelled": "dropped"}
        if operation == "DescribeKey":
            raise RuntimeError(f"token exploded holding {CANARY}")
        if operation == "Encrypt":
            raise errors.NotFoundException("Key 'arn:aws:kms:us-east-1:1:key/k' does not exist")
        return {}

    def health(self) -> dict[str, Any]:
        if isinstance(self.health_report, Exception):
            raise self.health_report
        return self.health_report

    def runs_quickly(self, operation: str, params: dict[str, Any]) -> bool:
        return False

    def pool_stock(self) -> dict[str, int]:
        return self.pool.stock() if self.pool is not None and self.pool.size else {}

    def start_scheduler(self) -> None:
        self.swept = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def app(service: FakeService):
    settings = Settings.load(env={}, max_body_bytes=4096)
    application = create_app(KMS.from_service(service), {ALICE.access_key_id: ALICE}, settings)
    yield application
    application.pool.shutdown()


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.json: Any = json.loads(body) if body.startswith(b"{") else None


def run(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    *,
    chunks: list[bytes] | None = None,
) -> tuple[Answer, int]:
    """One HTTP request through the ASGI app; also returns how many body messages it read.
    ``headers`` as a list of pairs may repeat a name, as a client on the wire can."""
    parts = chunks if chunks is not None else [body]
    reads = 0

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        if reads > len(parts):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": parts[reads - 1], "more_body": reads < len(parts)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in _pairs(headers)],
        "client": ("192.0.2.7", 50000),
    }
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    answer = Answer(
        start["status"],
        {k.decode(): v.decode() for k, v in start["headers"]},
        b"".join(m.get("body", b"") for m in sent[1:]),
    )
    return answer, reads


def _pairs(headers: dict[str, str] | list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return list(headers.items()) if isinstance(headers, dict) else headers


def signed_headers(
    operation: str | None, body: bytes, identity: Identity = ALICE
) -> dict[str, str]:
    headers = {"Content-Type": "application/x-amz-json-1.1", "Host": HOST}
    if operation:
        headers["X-Amz-Target"] = f"TrentService.{operation}"
    request = AWSRequest(method="POST", url=f"http://{HOST}/", data=body, headers=headers)
    SigV4Auth(
        Credentials(identity.access_key_id, identity.secret_access_key), "kms", "us-east-1"
    ).add_auth(request)
    return dict(request.headers.items())


def post(app: Any, operation: str | None, params: Any = None, body: bytes | None = None) -> Answer:
    data = body if body is not None else json.dumps(params or {}).encode()
    return run(app, "POST", "/", data, signed_headers(operation, data))[0]


# -- success -----------------------------------------------------------------------------------
def test_an_operation_answers_its_output_shape_with_blobs_in_base64(app):
    answer = post(app, "GenerateRandom", {"NumberOfBytes": 4})
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/x-amz-json-1.1"
    assert answer.json == {"Plaintext": base64.b64encode(b"\x00\x01\xfe\xff").decode()}
    uuid.UUID(answer.headers["x-amzn-requestid"])


def test_the_verified_identity_is_the_caller(app, service):
    answer = post(app, "GenerateRandom", {"NumberOfBytes": 4})
    operation, params, caller = service.calls[-1]
    assert (operation, params) == ("GenerateRandom", {"NumberOfBytes": 4})
    assert caller == Caller(
        ALICE.account_id,
        ALICE.principal_arn,
        ALICE.access_key_id,
        "192.0.2.7",
        region="us-east-1",
        request_id=answer.headers["x-amzn-requestid"],  # the operation layer's request id
    )


def test_blobs_arrive_decoded_at_the_operation_layer(app, service):
    secret = b"\x00plain\xff"
    params = {"KeyId": "k", "Plaintext": base64.b64encode(secret).decode()}
    post(app, "Encrypt", params)
    assert service.calls[-1][1] == {"KeyId": "k", "Plaintext": secret}


def test_each_request_has_its_own_request_id(app):
    first = post(app, "GenerateRandom", {"NumberOfBytes": 4}).headers["x-amzn-requestid"]
    second = post(app, "GenerateRandom", {"NumberOfBytes": 4}).headers["x-amzn-requestid"]
    assert first != second


# -- errors --------------------------------------------------------------------------------------
def test_a_kms_error_is_the_aws_envelope_with_its_status(app):
    answer = post(app, "Encrypt", {"KeyId": "k", "Plaintext": "eA=="})
    assert answer.status == 400
    assert answer.json == {
        "__type": "NotFoundException",
        "message": "Key 'arn:aws:kms:us-east-1:1:key/k' does not exist",
    }


def test_a_validation_error_is_answered_before_the_operation_runs(app, service):
    answer = post(app, "GenerateDataKeyPair", {"KeyId": "k", "KeyPairSpec": "RSA_9"})
    assert answer.status == 400
    assert answer.json["__type"] == "ValidationException"
    assert answer.json["message"].startswith(
        "1 validation error detected: Value 'RSA_9' at 'keyPairSpec' failed to satisfy constraint"
    )
    assert service.calls == []


def test_an_unexpected_failure_is_a_generic_500_and_logged_without_the_params(app, caplog):
    with caplog.at_level(logging.ERROR, logger="hsmkms.api"):
        answer = post(app, "DescribeKey", {"KeyId": f"alias/{CANARY}-param"})
    assert answer.status == 500
    assert answer.json == {
        "__type": "KMSInternalException",
        "message": "The request was rejected because an internal exception occurred. "
        "The request can be retried.",
    }
    assert CANARY not in answer.body.decode()
    assert "Traceback" not in answer.body.decode()
    (record,) = [r for r in caplog.records if r.name == "hsmkms.api"]
    assert answer.headers["x-amzn-requestid"] in record.getMessage()
    assert f"{CANARY}-param" not in record.getMessage()


def test_malformed_json_is_a_serialization_exception(app):
    for body in (b"{", b"", b"[]", b'{"NumberOfBytes": NaN}', b"\xff\xfe{"):
        answer = post(app, "GenerateRandom", body=body)
        assert answer.status == 400, body
        assert answer.json["__type"] == "SerializationException", body


def test_invalid_base64_is_a_serialization_exception(app, service):
    answer = post(app, "Encrypt", body=b'{"KeyId":"k","Plaintext":"abc"}')
    assert (answer.status, answer.json["__type"]) == (400, "SerializationException")
    assert service.calls == []


@pytest.mark.parametrize("target", [None, "TrentService.Nope", "Other.ListKeys", "ListKeys"])
def test_an_unknown_target_is_an_unknown_operation(app, target):
    body = b"{}"
    headers = signed_headers(None, body)
    if target:
        headers["X-Amz-Target"] = target
    answer, _ = run(app, "POST", "/", body, headers)
    assert (answer.status, answer.json) == (400, {"__type": "UnknownOperationException"})


def test_a_target_is_checked_before_the_signature_as_aws_does(app):
    answer, _ = run(app, "POST", "/", b"{}", {"X-Amz-Target": "TrentService.Nope"})
    assert answer.json == {"__type": "UnknownOperationException"}
    answer, _ = run(app, "POST", "/", b"{}", {"X-Amz-Target": "TrentService.ListKeys"})
    assert answer.json["__type"] == "MissingAuthenticationTokenException"


def test_a_body_declared_too_large_is_refused_before_reading_it(app, service):
    headers = signed_headers("GenerateRandom", b"{}")
    headers["Content-Length"] = "4097"
    answer, reads = run(app, "POST", "/", b"{}", headers)
    assert answer.status == 413
    assert answer.json["__type"] == "RequestEntityTooLargeException"
    assert answer.headers["connection"] == "close"
    assert reads == 0
    assert service.calls == []


def test_a_chunked_body_is_counted_while_reading(app, service):
    headers = signed_headers("GenerateRandom", b"{}")
    answer, reads = run(app, "POST", "/", headers=headers, chunks=[b"x" * 3000] * 3)
    assert answer.status == 413
    assert reads == 2  # stopped at the chunk that crossed the limit
    assert service.calls == []


def test_a_get_on_the_api_path_says_what_the_api_is(app):
    answer, _ = run(app, "GET", "/")
    assert answer.status == 400
    assert answer.json["__type"] == "UnknownOperationException"
    assert "X-Amz-Target" in answer.json["message"]


# /health and /metrics, which now need the operator token: tests/unit/api/test_api_operator.py


# -- lifespan ----------------------------------------------------------------------------------
def test_an_app_that_owns_its_kms_starts_the_sweeper_and_closes_it(service):
    settings = Settings.load(env={})
    application = create_app(KMS.from_service(service), {}, settings, owns_kms=True)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    asyncio.run(application({"type": "lifespan"}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert service.swept and service.closed
