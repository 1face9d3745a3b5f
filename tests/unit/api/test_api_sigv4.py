"""SigV4 verification accepts what botocore signs and answers AWS's error for each flaw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hsmkms import errors
from hsmkms.api.sigv4 import SignedRequest, Verifier, canonical_query, canonical_uri
from hsmkms.home import Identity

NOW = datetime(2024, 1, 1, 0, 10, 0, tzinfo=UTC)
ALICE = Identity(
    "AKIAALICE", "alice-secret/+key", "111122223333", "arn:aws:iam::111122223333:user/a"
)
BOB = Identity("AKIABOB", "bob-secret", "444455556666", "arn:aws:iam::444455556666:user/b")
BODY = b'{"KeyId":"alias/app","KeyPairSpec":"ECC_NIST_P256"}'
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


@pytest.fixture
def verifier() -> Verifier:
    return Verifier({i.access_key_id: i for i in (ALICE, BOB)}, "us-east-1", clock=NOW.timestamp)


def signed(
    body: bytes = BODY,
    *,
    identity: Identity = ALICE,
    region: str = "us-east-1",
    service: str = "kms",
    when: datetime = NOW,
    url: str = "http://localhost:8080/",
    headers: dict[str, str] | None = None,
) -> SignedRequest:
    """A request signed by botocore exactly as boto3 signs a KMS call."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "TrentService.GenerateDataKeyPair",
            **(headers or {}),
        },
    )
    auth = SigV4Auth(
        Credentials(identity.access_key_id, identity.secret_access_key), service, region
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=when.replace(tzinfo=None)):
        auth.add_auth(request)
    prepared = request.prepare()
    path, _, query = prepared.url.split("localhost:8080", 1)[1].partition("?")
    wire_headers = {"host": ["localhost:8080"]}
    for name, value in prepared.headers.items():
        wire_headers.setdefault(name.lower(), []).append(value)
    return SignedRequest("POST", path, query, wire_headers, prepared.body or b"")


def with_header(request: SignedRequest, name: str, value: str | None) -> SignedRequest:
    headers = {k: list(v) for k, v in request.headers.items()}
    if value is None:
        headers.pop(name, None)
    else:
        headers[name] = [value]
    return SignedRequest(
        request.method, request.raw_path, request.query_string, headers, request.body
    )


def error_of(verifier: Verifier, request: SignedRequest) -> errors.KMSError:
    with pytest.raises(errors.KMSError) as caught:
        verifier.verify(request)
    return caught.value


def test_a_request_signed_by_botocore_is_the_signers_identity(verifier):
    assert verifier.verify(signed()) == ALICE
    assert verifier.verify(signed(identity=BOB)) == BOB


def test_a_path_and_query_are_canonicalised_as_botocore_does(verifier):
    request = signed(url="http://localhost:8080/a%20b/./c/../d?b=2&a=1&a=0&x=a%20b")
    assert verifier.verify(request) == ALICE


def test_canonical_uri_and_query_follow_the_specification():
    assert canonical_uri("") == "/"
    assert canonical_uri("/a//b/../c/") == "/a/c/"
    assert canonical_uri("/a%20b") == "/a%2520b"  # non-S3 services double-encode
    assert canonical_query("b=2&a=1&a=0&c") == "a=0&a=1&b=2&c="


def test_a_wrong_secret_is_a_signature_mismatch(verifier):
    forged = Identity(ALICE.access_key_id, "not-the-secret", "", "")
    exc = error_of(verifier, signed(identity=forged))
    assert (exc.code, exc.status, exc.message) == ("InvalidSignatureException", 400, MISMATCH)


def test_a_changed_body_is_a_signature_mismatch(verifier):
    request = signed()
    tampered = SignedRequest(
        request.method, request.raw_path, request.query_string, request.headers, BODY + b" "
    )
    assert error_of(verifier, tampered).message == MISMATCH


def test_a_changed_signed_header_is_a_signature_mismatch(verifier):
    request = with_header(signed(), "x-amz-target", "TrentService.Decrypt")
    assert error_of(verifier, request).message == MISMATCH


def test_an_unknown_access_key_is_an_unrecognized_client(verifier):
    stranger = Identity("AKIASTRANGER", "whatever", "", "")
    exc = error_of(verifier, signed(identity=stranger))
    assert (exc.code, exc.message) == (
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )


def test_a_session_token_is_refused_because_we_issue_none(verifier):
    request = signed(headers={"X-Amz-Security-Token": "FwoGZXIvYXdzE"})
    assert error_of(verifier, request).code == "UnrecognizedClientException"


def test_a_date_more_than_five_minutes_old_has_expired(verifier):
    exc = error_of(verifier, signed(when=NOW - timedelta(minutes=10)))
    assert (exc.code, exc.message) == (
        "InvalidSignatureException",
        "Signature expired: 20240101T000000Z is now earlier than 20240101T000500Z "
        "(20240101T001000Z - 5 min.)",
    )


def test_a_date_more_than_five_minutes_ahead_is_not_yet_current(verifier):
    exc = error_of(verifier, signed(when=NOW + timedelta(minutes=6)))
    assert exc.message == (
        "Signature not yet current: 20240101T001600Z is still later than 20240101T001500Z "
        "(20240101T001000Z + 5 min.)"
    )


def test_a_date_within_five_minutes_is_accepted(verifier):
    assert verifier.verify(signed(when=NOW - timedelta(minutes=4, seconds=59))) == ALICE
    assert verifier.verify(signed(when=NOW + timedelta(minutes=4, seconds=59))) == ALICE


def test_no_authorization_header_is_a_missing_authentication_token(verifier):
    exc = error_of(verifier, with_header(signed(), "authorization", None))
    assert (exc.code, exc.status, exc.message) == (
        "MissingAuthenticationTokenException",
        400,
        "Request is missing Authentication Token",
    )


def test_an_authorization_that_is_not_sigv4_is_a_missing_authentication_token(verifier):
    request = with_header(signed(), "authorization", "Basic dXNlcjpwYXNz")
    assert error_of(verifier, request).code == "MissingAuthenticationTokenException"


def test_a_malformed_authorization_is_an_incomplete_signature(verifier):
    header = "AWS4-HMAC-SHA256 Credential=AKIAALICE/20240101/us-east-1/kms/aws4_request"
    exc = error_of(verifier, with_header(signed(), "authorization", header))
    assert (exc.code, exc.message) == (
        "IncompleteSignatureException",
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires 'SignedHeaders' parameter. "
        f"Authorization={header}",
    )


def test_no_date_header_is_an_incomplete_signature(verifier):
    exc = error_of(verifier, with_header(signed(), "x-amz-date", None))
    assert exc.code == "IncompleteSignatureException"
    assert "requires existence of either a 'X-Amz-Date' or a 'Date' header" in exc.message


def test_a_date_not_in_iso_basic_format_is_an_incomplete_signature(verifier):
    exc = error_of(verifier, with_header(signed(), "x-amz-date", "2024-01-01T00:10:00Z"))
    assert (exc.code, exc.message) == (
        "IncompleteSignatureException",
        "Date must be in ISO-8601 'basic format'. Got '2024-01-01T00:10:00Z'. "
        "See http://en.wikipedia.org/wiki/ISO_8601",
    )


def _resign_without(request: SignedRequest, header: str) -> SignedRequest:
    auth = request.header("authorization") or ""
    names = auth.split("SignedHeaders=")[1].split(",")[0]
    kept = ";".join(n for n in names.split(";") if n != header)
    return with_header(request, "authorization", auth.replace(names, kept))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("host", "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."),
        ("x-amz-date", "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization."),
        ("x-amz-target", "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization."),
    ],
)
def test_host_date_and_target_must_be_signed(verifier, header, message):
    exc = error_of(verifier, _resign_without(signed(), header))
    assert (exc.code, exc.message) == ("InvalidSignatureException", message)


def test_another_region_is_refused_with_awss_scope_wording(verifier):
    exc = error_of(verifier, signed(region="eu-west-1"))
    assert (exc.code, exc.message) == (
        "InvalidSignatureException",
        "Credential should be scoped to a valid region, not 'eu-west-1'. ",
    )


def test_another_service_is_refused(verifier):
    exc = error_of(verifier, signed(service="s3"))
    assert exc.message == "Credential should be scoped to correct service: 'kms'. "


def test_a_scope_date_other_than_the_request_date_is_refused(verifier):
    request = signed()
    auth = (request.header("authorization") or "").replace("/20240101/", "/20231231/")
    exc = error_of(verifier, with_header(request, "authorization", auth))
    assert exc.message == (
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
        "HTTP: '20231231' != '20240101', from '20240101T001000Z'."
    )


def test_a_credential_without_five_parts_is_an_incomplete_signature(verifier):
    request = signed()
    auth = (request.header("authorization") or "").replace("/kms/aws4_request", "")
    exc = error_of(verifier, with_header(request, "authorization", auth))
    assert exc.code == "IncompleteSignatureException"
    assert exc.message.startswith("Credential must have exactly 5 slash-delimited elements")


def test_another_algorithm_is_unsupported(verifier):
    request = signed()
    auth = (request.header("authorization") or "").replace(
        "AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"
    )
    exc = error_of(verifier, with_header(request, "authorization", auth))
    assert (exc.code, exc.message) == (
        "IncompleteSignatureException",
        "Unsupported AWS 'algorithm': 'AWS4-ECDSA-P256-SHA256' (only AWS4-HMAC-SHA256 for now). ",
    )


def test_a_content_sha256_header_is_accepted_when_it_matches_the_body(verifier):
    import hashlib

    digest = hashlib.sha256(BODY).hexdigest()
    assert verifier.verify(signed(headers={"X-Amz-Content-SHA256": digest})) == ALICE


def test_a_content_sha256_header_that_does_not_match_the_body_is_refused(verifier):
    request = signed(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    exc = error_of(verifier, request)
    assert exc.code == "InvalidSignatureException"
    assert "x-amz-content-sha256" in exc.message


def test_a_date_header_may_stand_in_for_x_amz_date(verifier):
    """SigV4 allows the HTTP Date header when X-Amz-Date is absent (RFC 1123 form)."""
    import hashlib
    import hmac

    from hsmkms.api.sigv4 import canonical_request, signing_key, string_to_sign

    headers = {
        "host": ["localhost:8080"],
        "date": ["Mon, 01 Jan 2024 00:10:00 GMT"],
        "x-amz-target": ["TrentService.ListKeys"],
    }
    unsigned = SignedRequest("POST", "/", "", headers, b"{}")
    names = ("date", "host", "x-amz-target")
    scope = "20240101/us-east-1/kms/aws4_request"
    canonical = canonical_request(unsigned, names, hashlib.sha256(b"{}").hexdigest())
    key = signing_key(ALICE.secret_access_key, "20240101", "us-east-1", "kms")
    signature = hmac.new(
        key, string_to_sign("20240101T001000Z", scope, canonical).encode(), hashlib.sha256
    ).hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={ALICE.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    request = with_header(unsigned, "authorization", authorization)
    assert verifier.verify(request) == ALICE
