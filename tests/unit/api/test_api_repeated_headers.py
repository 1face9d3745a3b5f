"""A header that names one thing, sent twice, is refused before anything runs (issue 13, item 11).

HTTP makes repeated field lines one comma-joined value (RFC 9110 section 5.3) and SigV4 signs
them so; reading only the first would run what the signature does not say.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from test_api_app import ALICE, HOST, FakeService
from test_api_app import run as run_asgi

from hsmkms.api import create_app
from hsmkms.config import Settings
from hsmkms.kms import KMS


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def app(service: FakeService):
    application = create_app(
        KMS.from_service(service), {ALICE.access_key_id: ALICE}, Settings.load(env={})
    )
    yield application
    application.pool.shutdown()


def signed_items(targets: list[str], body: bytes) -> list[tuple[str, str]]:
    """Headers signed by botocore, one X-Amz-Target line per entry of ``targets`` (botocore
    signs repeated headers joined with commas, as SigV4 specifies)."""
    request = AWSRequest(method="POST", url=f"http://{HOST}/", data=body)
    request.headers["Host"] = HOST
    request.headers["Content-Type"] = "application/x-amz-json-1.1"
    for target in targets:
        request.headers["X-Amz-Target"] = target  # HTTPHeaders appends a repeated name
    SigV4Auth(
        Credentials(ALICE.access_key_id, ALICE.secret_access_key), "kms", "us-east-1"
    ).add_auth(request)
    return list(request.headers.items())


def run(app: Any, headers: list[tuple[str, str]], body: bytes) -> tuple[int, Any]:
    """POST / with these header lines (names may repeat): (status, JSON answer)."""
    answer, _reads = run_asgi(app, "POST", "/", body, headers)
    return answer.status, json.loads(answer.body)


def test_one_signed_target_runs(app, service):
    body = b'{"NumberOfBytes": 4}'
    status, _ = run(app, signed_items(["TrentService.GenerateRandom"], body), body)
    assert status == 200
    assert [call[0] for call in service.calls] == ["GenerateRandom"]


def test_two_targets_signed_together_are_an_unknown_operation_and_nothing_runs(app, service):
    body = b'{"NumberOfBytes": 4}'
    headers = signed_items(["TrentService.GenerateRandom", "TrentService.Encrypt"], body)
    assert [k for k, _ in headers].count("X-Amz-Target") == 2
    status, answer = run(app, headers, body)
    assert (status, answer["__type"]) == (400, "UnknownOperationException")
    assert answer["message"] == (
        "A request names one operation: this one has 2 X-Amz-Target headers."
    )
    assert service.calls == []


def test_the_same_target_twice_is_refused_too(app, service):
    body = b'{"NumberOfBytes": 4}'
    headers = signed_items(["TrentService.GenerateRandom"] * 2, body)
    status, answer = run(app, headers, body)
    assert (status, answer["__type"]) == (400, "UnknownOperationException")
    assert service.calls == []
