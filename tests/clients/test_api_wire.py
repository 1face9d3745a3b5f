"""A real ``hsmkms serve`` process, driven with raw signed HTTP requests and with boto3.

Each test names the AWS behaviour it expects: the error's ``__type``, HTTP status and message.
Raw requests are signed by botocore's own ``SigV4Auth`` (tests/server.py), so a test can sign
with a wrong secret, an old clock or another region, then break exactly one thing.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from helpers import self_signed_certificate
from server import REPO, ServerProcess

from hsmkms.home import Identity

MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# -- what works -----------------------------------------------------------------------------
def test_health_answers_200_with_the_token_state(server: ServerProcess):
    answer = server.operator_get("/health")  # the full report needs the operator token
    assert answer.status == 200
    assert answer.json["ok"] is True
    assert "token" in answer.json


def test_a_signed_request_is_answered_with_its_output_shape(server: ServerProcess):
    answer = server.post("GenerateRandom", {"NumberOfBytes": 16})
    assert answer.status == 200, answer
    assert answer.headers["content-type"] == "application/x-amz-json-1.1"
    uuid.UUID(answer.headers["x-amzn-requestid"])
    import base64

    assert len(base64.b64decode(answer.json["Plaintext"])) == 16


def test_boto3_works_unchanged(server: ServerProcess):
    kms = server.client()
    result = kms.generate_random(NumberOfBytes=32)
    assert len(result["Plaintext"]) == 32
    assert result["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert result["ResponseMetadata"]["RequestId"]


def test_a_connection_carries_several_requests(server: ServerProcess):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for _ in range(3):
            body = b'{"NumberOfBytes": 8}'
            conn.request("POST", "/", body, server.signed_headers("GenerateRandom", body))
            response = conn.getresponse()
            response.read()
            assert response.status == 200
    finally:
        conn.close()


# -- SigV4 -------------------------------------------------------------------------------------
def test_a_wrong_secret_is_invalid_signature(server: ServerProcess):
    ident = server.identity
    forged = Identity(ident.access_key_id, "x" * 40, ident.account_id, ident.principal_arn)
    answer = server.post("GenerateRandom", {"NumberOfBytes": 8}, identity=forged)
    assert answer.status == 400
    assert answer.error == ("InvalidSignatureException", MISMATCH)
    assert "x-amzn-requestid" in answer.headers


def test_an_unknown_access_key_is_unrecognized_client(server: ServerProcess):
    stranger = Identity("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG", "", "")
    answer = server.post("GenerateRandom", {"NumberOfBytes": 8}, identity=stranger)
    assert answer.status == 400
    assert answer.error == (
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


def test_a_request_signed_ten_minutes_ago_has_expired(server: ServerProcess):
    answer = server.post("GenerateRandom", {"NumberOfBytes": 8}, when=now() - timedelta(minutes=10))
    kind, message = answer.error
    assert (answer.status, kind) == (400, "InvalidSignatureException")
    assert message.startswith("Signature expired: ")
    assert " is now earlier than " in message and message.endswith(" - 5 min.)")


def test_a_request_signed_ten_minutes_ahead_is_not_yet_current(server: ServerProcess):
    answer = server.post("GenerateRandom", {"NumberOfBytes": 8}, when=now() + timedelta(minutes=10))
    kind, message = answer.error
    assert kind == "InvalidSignatureException"
    assert message.startswith("Signature not yet current: ") and message.endswith(" + 5 min.)")


def test_no_authorization_header_is_missing_authentication_token(server: ServerProcess):
    answer = server.raw(
        "POST",
        "/",
        b"{}",
        {"X-Amz-Target": "TrentService.ListKeys", "Content-Type": "application/x-amz-json-1.1"},
    )
    assert answer.status == 400
    assert answer.error == (
        "MissingAuthenticationTokenException",
        "Request is missing Authentication Token",
    )


def test_a_malformed_authorization_is_incomplete_signature(server: ServerProcess):
    body = b"{}"
    headers = server.signed_headers("ListKeys", body)
    headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/kms"
    answer = server.raw("POST", "/", body, headers)
    kind, message = answer.error
    assert (answer.status, kind) == (400, "IncompleteSignatureException")
    assert message.startswith("Authorization header requires 'Signature' parameter.")


def test_an_unsigned_target_is_refused(server: ServerProcess):
    body = b'{"NumberOfBytes": 8}'
    headers = server.signed_headers(None, body)  # signed without X-Amz-Target
    headers["X-Amz-Target"] = "TrentService.GenerateRandom"
    answer = server.raw("POST", "/", body, headers)
    assert answer.error == (
        "InvalidSignatureException",
        "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization.",
    )


def test_a_body_changed_after_signing_is_invalid_signature(server: ServerProcess):
    headers = server.signed_headers("GenerateRandom", b'{"NumberOfBytes": 8}')
    answer = server.raw("POST", "/", b'{"NumberOfBytes": 9}', headers)
    assert answer.error == ("InvalidSignatureException", MISMATCH)


def test_a_content_sha256_that_is_not_the_bodys_is_refused(server: ServerProcess):
    body = b'{"NumberOfBytes": 8}'
    answer = server.post("GenerateRandom", body=body, extra={"X-Amz-Content-Sha256": "0" * 64})
    assert answer.error[0] == "InvalidSignatureException"


def test_a_credential_for_a_region_not_served_is_refused(server: ServerProcess):
    """Every Region botocore knows is served by default (``regions = "*"``); a made-up one is
    not, with AWS's message."""
    answer = server.post("GenerateRandom", {"NumberOfBytes": 8}, region="xx-nowhere-9")
    assert answer.error == (
        "InvalidSignatureException",
        "Credential should be scoped to a valid region, not 'xx-nowhere-9'. ",
    )


# -- the protocol ------------------------------------------------------------------------------
def test_broken_json_is_a_serialization_exception(server: ServerProcess):
    answer = server.post("GenerateRandom", body=b'{"NumberOfBytes": ')
    assert (answer.status, answer.json) == (400, {"__type": "SerializationException"})


def test_a_json_type_mismatch_is_a_serialization_exception(server: ServerProcess):
    answer = server.post("GenerateRandom", {"NumberOfBytes": "8"})
    assert answer.status == 400
    assert answer.error == (
        "SerializationException",
        "STRING_VALUE can not be converted to an Integer",
    )


def test_an_unknown_target_is_an_unknown_operation(server: ServerProcess):
    answer = server.post("NoSuchOperation", {})
    assert (answer.status, answer.json) == (400, {"__type": "UnknownOperationException"})


def test_every_operation_of_the_model_is_served_and_an_unserved_value_says_why(
    server: ServerProcess,
):
    answer = server.post("DescribeCustomKeyStores", {})  # the last family served
    assert answer.status == 200 and answer.json["CustomKeyStores"] == []
    answer = server.post("CreateKey", {"KeySpec": "SM2"})
    assert answer.status == 400
    kind, message = answer.error
    assert kind == "UnsupportedOperationException" and "SM2" in message


def _raw_exchange(port: int, head: bytes, chunks: list[bytes]) -> bytes:
    """Send ``head`` and ``chunks`` on a socket; return whatever the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server answered and closed before the whole body went
        data = b""
        while True:
            try:
                part = sock.recv(65536)
            except OSError:
                break
            if not part:
                break
            data += part
        return data


def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent(server: ServerProcess):
    headers = server.signed_headers("GenerateRandom", b"{}")
    headers["Content-Length"] = str(64 * 1024 * 1024)
    head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host")
    reply = _raw_exchange(server.port, (head + "\r\n").encode(), [])
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 413 " in status_line
    assert b'"__type":"RequestEntityTooLargeException"' in rest


def test_a_chunked_body_over_the_limit_is_refused_while_reading(server: ServerProcess):
    headers = server.signed_headers("GenerateRandom", b"{}")
    head = f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host")
    piece = b"x" * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    reply = _raw_exchange(server.port, (head + "\r\n").encode(), [chunk] * 40 + [b"0\r\n\r\n"])
    assert b" 413 " in reply.partition(b"\r\n")[0]


# -- validation through boto3 (its own validation off, so the server's answers) ------------------
@pytest.fixture(scope="module")
def unvalidated(server: ServerProcess):
    return server.client(parameter_validation=False)


def client_error(call, **params) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as caught:
        call(**params)
    err = caught.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


def test_an_invalid_enum_is_a_validation_exception(unvalidated):
    code, message, status = client_error(
        unvalidated.generate_data_key_pair, KeyId="alias/x", KeyPairSpec="RSA_1024"
    )
    assert (code, status) == ("ValidationException", 400)
    assert message.startswith(
        "1 validation error detected: Value 'RSA_1024' at 'keyPairSpec' failed to satisfy "
        "constraint: Member must satisfy enum value set: [RSA_2048, "
    )


def test_a_too_long_string_is_a_validation_exception(unvalidated):
    key_id = "k" * 2049
    assert client_error(unvalidated.describe_key, KeyId=key_id) == (
        "ValidationException",
        f"1 validation error detected: Value '{key_id}' at 'keyId' failed to satisfy "
        "constraint: Member must have length less than or equal to 2048",
        400,
    )


def test_a_missing_member_is_a_validation_exception(unvalidated):
    assert client_error(unvalidated.generate_data_key_pair, KeyId="alias/x") == (
        "ValidationException",
        "1 validation error detected: Value null at 'keyPairSpec' failed to satisfy "
        "constraint: Member must not be null",
        400,
    )


def test_a_value_out_of_range_is_a_validation_exception(unvalidated):
    code, message, _ = client_error(unvalidated.generate_random, NumberOfBytes=1025)
    assert message == (
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy "
        "constraint: Member must have value less than or equal to 1024"
    )


def test_several_validation_errors_are_listed_together(unvalidated):
    code, message, _ = client_error(unvalidated.encrypt, KeyId="", Plaintext=b"")
    assert message == (
        "2 validation errors detected: "
        "Value '' at 'keyId' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1; "
        "Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )


# -- other ways to serve -----------------------------------------------------------------------
def test_several_workers_serve_the_same_api(tmp_path: Path):
    with ServerProcess(tmp_path / "home", workers=2) as srv:
        kms = srv.client()
        for _ in range(6):
            assert len(kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
        assert srv.post("GenerateRandom", {"NumberOfBytes": 8}, region="xx-nowhere-9").error[0] == (
            "InvalidSignatureException"
        )


def test_connections_opened_at_once_spread_over_the_workers(tmp_path: Path):
    """A client pool opens its connections together; each worker has a listening socket of
    its own (SO_REUSEPORT), so they do not all land on whichever worker woke first."""
    psutil = pytest.importorskip("psutil")
    with ServerProcess(tmp_path / "home", workers=2) as srv:
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(32)]
        try:
            workers = psutil.Process(srv.proc.pid).children(recursive=True)
            deadline = time.monotonic() + 10
            while True:
                held = sorted(
                    sum(
                        1
                        for c in w.net_connections(kind="tcp")
                        if c.laddr and c.laddr.port == srv.port and c.status == "ESTABLISHED"
                    )
                    for w in workers
                )
                if sum(held) == len(socks) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert sum(held) == len(socks), held
            # Binomial(32, 1/2): fewer than 5 on one side happens about once in 100,000 runs.
            assert held[-2] >= 5 and held[-1] >= 5, held
            assert len(srv.client().generate_random(NumberOfBytes=8)["Plaintext"]) == 8
        finally:
            for s in socks:
                s.close()


def test_tls_serves_https(tmp_path: Path):
    tls = self_signed_certificate(tmp_path)
    with ServerProcess(tmp_path / "home", tls=tls) as srv:
        assert srv.url.startswith("https://")
        assert len(srv.client().generate_random(NumberOfBytes=8)["Plaintext"]) == 8


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture
def busy_port():
    """A port something already listens on: a server that got past its checks exits at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def make_home(home: Path) -> None:
    """The embedded default (token labelled 'hsmkms'), made in another process so that this
    one's SOFTHSM2_CONF stays the test session's."""
    code = (
        "import sys; from hsmkms.config import Settings; from hsmkms.home import ensure_home; "
        "ensure_home(Settings.load(home=sys.argv[1], env={}))"
    )
    subprocess.run([sys.executable, "-c", code, str(home)], check=True, timeout=60, cwd=REPO)


def serve(
    home: Path, port: int, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    import os

    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))
    }
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "hsmkms", "serve", "--home", str(home), "--port", str(port), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=environment,
    )


def test_a_missing_pkcs11_module_fails_fast_and_says_how_to_fix_it(tmp_path: Path, busy_port):
    result = serve(tmp_path, busy_port, "--pkcs11-module", str(tmp_path / "nope.so"))
    assert result.returncode == 1
    assert "nope.so not found" in result.stderr
    assert "--pkcs11-module" in result.stderr


def test_tls_needs_both_a_certificate_and_a_key(tmp_path: Path, busy_port):
    result = serve(tmp_path, busy_port, "--tls-cert", str(tmp_path / "cert.pem"))
    assert result.returncode == 2
    assert "--tls-cert and --tls-key go together" in result.stderr


def test_a_port_in_use_fails_after_the_checks(tmp_path: Path, busy_port):
    result = serve(tmp_path / "home", busy_port)
    assert result.returncode != 0
    assert "Address already in use" in result.stderr


def test_a_wrong_pin_fails_fast_without_retrying(server: ServerProcess, tmp_path: Path, busy_port):
    make_home(tmp_path / "home")
    result = serve(tmp_path / "home", busy_port, env={"HSMKMS_PIN": "not-the-pin"})
    assert result.returncode == 1
    assert "refused the user PIN from HSMKMS_PIN" in result.stderr


def test_an_unknown_token_label_fails_fast_and_names_it(
    server: ServerProcess, tmp_path: Path, busy_port
):
    make_home(tmp_path / "home")
    result = serve(tmp_path / "home", busy_port, "--token-label", "nosuch")
    assert result.returncode == 1
    assert "cannot reach token 'nosuch'" in result.stderr
