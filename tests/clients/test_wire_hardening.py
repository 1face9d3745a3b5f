"""A real ``hsmkms serve`` against the wire findings of issue 13 (items 5, 10, 11, 12): raw
requests signed by botocore's ``SigV4Auth`` (tests/server.py), then broken in one place."""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials
from server import CONTENT_TYPE, ServerProcess


def send(
    server: ServerProcess,
    headers: Sequence[tuple[str, str]],
    body: bytes = b"{}",
    path: str = "/",
    method: str = "POST",
) -> tuple[int, bytes]:
    """One request with ``headers`` exactly as listed (repeats and order kept, no Host added)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- item 5: a Date no calendar holds -----------------------------------------------------------
def test_a_date_past_year_9999_in_utc_is_a_400_not_a_500(server: ServerProcess):
    answer = server.raw(
        "POST",
        "/",
        b"{}",
        {
            "X-Amz-Target": "TrentService.ListKeys",
            "Content-Type": "application/x-amz-json-1.1",
            "Date": "Fri, 31 Dec 9999 23:59:59 -1400",
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAX/99991231/us-east-1/kms/"
            "aws4_request, SignedHeaders=date;host;x-amz-target, Signature=00",
        },
    )
    kind, message = answer.error
    assert (answer.status, kind) == (400, "InvalidSignatureException"), answer
    assert message.startswith("Signature not yet current: 100000101T135959Z is still later")
    assert "Traceback" not in server.log()


# -- item 10: Host must be signed ---------------------------------------------------------------
class AuthorityNotHost(SigV4Auth):
    """botocore's signer, made to sign ``:authority`` (absent: an empty line) and not Host."""

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        headers = super().headers_to_sign(request)
        del headers["host"]
        headers[":authority"] = ""
        return headers


def test_a_request_that_signs_authority_and_not_host_is_refused(server: ServerProcess):
    ident = server.identity
    body = b'{"NumberOfBytes": 8}'
    request = AWSRequest(
        method="POST",
        url=server.url + "/",
        data=body,
        headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": "TrentService.GenerateRandom"},
    )
    signer = AuthorityNotHost(
        Credentials(ident.access_key_id, ident.secret_access_key), "kms", server.region
    )
    signer.add_auth(request)
    assert ":authority;" in request.headers["Authorization"]
    headers = [("Host", "any.other.host"), *request.headers.items()]
    status, answer = send(server, headers, body)
    assert status == 400, answer
    assert json.loads(answer) == {
        "__type": "InvalidSignatureException",
        "message": "'Host' must be a 'SignedHeader' in the AWS Authorization: "
        "HTTP/1.1 has no ':authority'.",
    }


# -- item 11: one header, sent twice ------------------------------------------------------------
def signed_twice(
    server: ServerProcess, name: str, values: Sequence[str], body: bytes
) -> list[tuple[str, str]]:
    """Headers of a GenerateRandom signed by botocore with ``name`` sent once per value:
    botocore, as SigV4 says, signs the repeated header as one comma-joined value."""
    ident = server.identity
    request = AWSRequest(method="POST", url=server.url + "/", data=body)
    request.headers["Content-Type"] = CONTENT_TYPE
    if name.lower() != "x-amz-target":
        request.headers["X-Amz-Target"] = "TrentService.GenerateRandom"
    for value in values:
        request.headers[name] = value  # HTTPHeaders appends a repeated name
    SigV4Auth(
        Credentials(ident.access_key_id, ident.secret_access_key), "kms", server.region
    ).add_auth(request)
    items = list(request.headers.items())
    if not any(k.lower() == "host" for k, _ in items):
        items.insert(0, ("Host", f"127.0.0.1:{server.port}"))
    return items


def test_two_targets_signed_together_are_refused_and_neither_runs(server: ServerProcess):
    body = b'{"KeyId": "alias/none-such", "Plaintext": "eA=="}'
    targets = ["TrentService.GenerateRandom", "TrentService.Encrypt"]
    status, answer = send(server, signed_twice(server, "X-Amz-Target", targets, body), body)
    assert status == 400, answer
    assert json.loads(answer) == {
        "__type": "UnknownOperationException",
        "message": "A request names one operation: this one has 2 X-Amz-Target headers.",
    }


def test_two_host_headers_signed_together_are_refused(server: ServerProcess):
    """RFC 9112 section 3.2: a request with more than one Host line is a 400."""
    body = b'{"NumberOfBytes": 8}'
    hosts = [f"127.0.0.1:{server.port}", "evil.example"]
    status, answer = send(server, signed_twice(server, "Host", hosts, body), body)
    assert status == 400, answer
    assert json.loads(answer) == {
        "__type": "IncompleteSignatureException",
        "message": "Only one 'host' header is allowed; this request has 2.",
    }


def test_two_authorization_headers_are_refused(server: ServerProcess):
    body = b'{"NumberOfBytes": 8}'
    items = signed_twice(server, "X-Amz-Meta", ["x"], body)
    auth = next(v for k, v in items if k == "Authorization")
    status, answer = send(server, [*items, ("Authorization", auth)], body)
    assert status == 400, answer
    assert json.loads(answer)["__type"] == "IncompleteSignatureException"


def test_the_http_layer_refuses_repeated_or_conflicting_body_lengths(server: ServerProcess):
    """Request smuggling's raw material (RFC 9112 section 6.3): httptools answers 400 and
    closes before the application sees the request; kept so by this test."""
    body = b'{"NumberOfBytes": 8}'
    items = list(server.signed_headers("GenerateRandom", body).items())
    items.insert(0, ("Host", f"127.0.0.1:{server.port}"))
    n = str(len(body))
    for extra in (
        [("Content-Length", n)],  # with send()'s own: twice, equal
        [("Content-Length", "3")],  # twice, different
        [("Transfer-Encoding", "chunked")],  # with a Content-Length
    ):
        status, answer = send(server, [*items, *extra], body)
        assert status == 400, (extra, answer)
        assert b"Plaintext" not in answer


# -- item 12: /health and /metrics -------------------------------------------------------------
def test_health_tells_anyone_only_whether_the_service_is_up(server: ServerProcess):
    answer = server.get("/health")
    assert (answer.status, answer.json) == (200, {"ok": True})


def test_metrics_without_the_token_are_401_with_a_clear_answer(server: ServerProcess):
    server.post("GenerateRandom", {"NumberOfBytes": 8})
    answer = server.get("/metrics")
    assert answer.status == 401
    assert answer.headers["www-authenticate"].startswith("Bearer ")
    assert answer.json == {
        "error": "Unauthorized",
        "message": "GET /metrics needs 'Authorization: Bearer <token>' with the token of the "
        "operator_token_file setting.",
    }
    assert b"GenerateRandom" not in answer.body


def test_a_wrong_token_sees_neither_report_nor_metrics(server: ServerProcess):
    for path in ("/health", "/metrics"):
        answer = server.raw("GET", path, headers={"Authorization": "Bearer not-the-token-at-all"})
        assert answer.status == 401, (path, answer)
        assert "token" not in (answer.json or {})
        assert b"hsmkms_requests_total" not in answer.body


def test_the_operator_token_gets_the_full_report_and_the_metrics(server: ServerProcess):
    server.post("GenerateRandom", {"NumberOfBytes": 8})
    health = server.operator_get("/health")
    assert health.status == 200 and health.json["ok"] is True
    assert "manufacturer" in str(health.json["token"])
    metrics = server.operator_get("/metrics")
    assert metrics.status == 200
    assert 'hsmkms_requests_total{operation="GenerateRandom",code="OK"}' in metrics.body.decode()


def test_without_the_setting_nothing_but_liveness_is_served(tmp_path):
    with ServerProcess(tmp_path / "home", operator=False) as bare:
        assert (bare.get("/health").status, bare.get("/health").json) == (200, {"ok": True})
        for path in ("/health", "/metrics"):
            answer = bare.raw("GET", path, headers={"Authorization": "Bearer anything-at-all"})
            assert answer.status == 401
            assert answer.json["message"].endswith("no operator_token_file is configured.")
        assert bare.get("/metrics").status == 401


def test_serve_refuses_a_token_file_others_can_read(tmp_path):
    home = tmp_path / "home"
    token = tmp_path / "operator.token"
    token.write_text("a-long-enough-operator-token\n")
    token.chmod(0o644)
    srv = ServerProcess(home, operator=False, env={"HSMKMS_OPERATOR_TOKEN_FILE": str(token)})
    try:
        srv.start(timeout=30)
    except RuntimeError as exc:
        assert f"the operator token file {token} is readable by others" in str(exc)
    else:
        srv.stop()
        raise AssertionError("the server started with a world-readable token file")
