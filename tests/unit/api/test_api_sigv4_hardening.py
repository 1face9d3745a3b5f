"""SigV4 against hostile requests (issue 13, items 5, 10, 11): dates no calendar holds, a
Host left unsigned, the headers SigV4 reads as one value sent twice."""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

import pytest

from hsmkms import errors
from hsmkms.api.sigv4 import (
    SignedRequest,
    Verifier,
    canonical_request,
    signing_key,
    string_to_sign,
)
from hsmkms.home import Identity

NOW = datetime(2024, 1, 1, 0, 10, 0, tzinfo=UTC)
ALICE = Identity("AKIAALICE", "alice-secret", "111122223333", "arn:aws:iam::111122223333:user/a")
SCOPE = "20240101/us-east-1/kms/aws4_request"
BODY = b"{}"


@pytest.fixture
def verifier() -> Verifier:
    return Verifier({ALICE.access_key_id: ALICE}, "us-east-1", clock=NOW.timestamp)


def sign(
    headers: Mapping[str, Sequence[str]],
    names: Sequence[str],
    *,
    amz_date: str = "20240101T001000Z",
    scope: str = SCOPE,
) -> SignedRequest:
    """``headers`` (lower-case names, values as sent) signed over ``names`` exactly as SigV4
    specifies: repeated headers joined with commas, as any signer joins them."""
    unsigned = SignedRequest("POST", "/", "", {k: list(v) for k, v in headers.items()}, BODY)
    canonical = canonical_request(unsigned, names, hashlib.sha256(BODY).hexdigest())
    key = signing_key(ALICE.secret_access_key, scope.split("/")[0], "us-east-1", "kms")
    signature = hmac.new(
        key, string_to_sign(amz_date, scope, canonical).encode(), hashlib.sha256
    ).hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={ALICE.access_key_id}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return SignedRequest(
        "POST", "/", "", {**unsigned.headers, "authorization": [authorization]}, BODY
    )


def base_headers(**extra: Sequence[str]) -> dict[str, Sequence[str]]:
    return {
        "host": ["kms.test:8080"],
        "x-amz-date": ["20240101T001000Z"],
        "x-amz-target": ["TrentService.ListKeys"],
        **{k.replace("_", "-"): v for k, v in extra.items()},
    }


NAMES = ("host", "x-amz-date", "x-amz-target")


def error_of(verifier: Verifier, request: SignedRequest) -> errors.KMSError:
    with pytest.raises(errors.KMSError) as caught:
        verifier.verify(request)
    return caught.value


def by_date_header(date: str) -> SignedRequest:
    """A request dated by its ``Date`` header alone (no X-Amz-Date)."""
    headers = {
        "host": ["kms.test:8080"],
        "date": [date],
        "x-amz-target": ["TrentService.ListKeys"],
    }
    return sign(headers, ("date", "host", "x-amz-target"))


# -- item 5: dates outside the calendar -------------------------------------------------------
def test_a_date_header_past_year_9999_in_utc_is_not_yet_current(verifier):
    """The instant is 10000-01-01T13:59:59Z: AWS reads it as a date, far ahead."""
    exc = error_of(verifier, by_date_header("Fri, 31 Dec 9999 23:59:59 -1400"))
    assert (exc.code, exc.message) == (
        "InvalidSignatureException",
        "Signature not yet current: 100000101T135959Z is still later than 20240101T001500Z "
        "(20240101T001000Z + 5 min.)",
    )


def test_a_date_header_with_an_offset_too_large_for_an_int_is_incomplete(verifier):
    exc = error_of(verifier, by_date_header("Fri, 31 Dec 1999 23:59:59 +99999999999999999999"))
    assert exc.code == "IncompleteSignatureException"
    assert exc.message.startswith("Date must be in ISO-8601 'basic format'.")


@pytest.mark.parametrize(
    "date",
    [
        "Fri, 31 Dec 9999 23:59:59 +9959",  # an offset of four days
        "Fri, 31 Dec 99999 23:59:59 GMT",
        "Fri, 31 Dec 1999 99:99:99 GMT",
        "Sat, 01 Jan 0000 00:00:00 +1400",
    ],
)
def test_other_impossible_date_headers_are_400s(verifier, date):
    exc = error_of(verifier, by_date_header(date))
    assert exc.status == 400
    assert exc.code in ("IncompleteSignatureException", "InvalidSignatureException")


def test_an_x_amz_date_in_year_9999_is_not_yet_current(verifier):
    exc = error_of(verifier, sign(base_headers(x_amz_date=["99991231T235959Z"]), NAMES))
    assert exc.code == "InvalidSignatureException"
    assert exc.message.startswith("Signature not yet current: 99991231T235959Z is still later")


@pytest.fixture
def new_york() -> Iterator[None]:
    """This process's local time zone set to New York (UTC-5 in January)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_a_date_header_in_minus_0000_is_utc_whatever_the_servers_zone(verifier, new_york):
    """RFC 5322 section 3.3: -0000 is UTC with the sender's zone unknown; email.utils gives a
    naive datetime for it, which ``astimezone`` would read as the server's local time."""
    assert verifier.verify(by_date_header("Mon, 01 Jan 2024 00:10:00 -0000")) == ALICE


# -- item 10: Host must be signed ---------------------------------------------------------------
def test_signing_authority_instead_of_host_is_refused_over_http_1_1(verifier):
    """HTTP/1.1 has no :authority; signing it (an empty line) leaves Host free to change."""
    names = (":authority", "x-amz-date", "x-amz-target")
    exc = error_of(verifier, sign(base_headers(), names))
    assert (exc.code, exc.message) == (
        "InvalidSignatureException",
        "'Host' must be a 'SignedHeader' in the AWS Authorization: HTTP/1.1 has no ':authority'.",
    )


def test_signing_host_and_authority_is_accepted(verifier):
    names = (":authority", "host", "x-amz-date", "x-amz-target")
    assert verifier.verify(sign(base_headers(), names)) == ALICE


# -- item 11: headers SigV4 reads as one value, sent twice -------------------------------------
@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("x-amz-date", ["20240101T001000Z", "20240101T001000Z"]),
        ("x-amz-content-sha256", [hashlib.sha256(BODY).hexdigest()] * 2),
        ("host", ["kms.test:8080", "evil.test"]),
    ],
)
def test_a_signed_header_that_must_be_single_is_refused_when_repeated(verifier, name, values):
    """Even signed over both values: the checks read the first, the signature the joined two."""
    headers = base_headers(**{name.replace("-", "_"): values})
    names = tuple(sorted({*NAMES, name}))
    exc = error_of(verifier, sign(headers, names))
    assert exc.code == "IncompleteSignatureException"
    assert exc.message == f"Only one '{name}' header is allowed; this request has {len(values)}."


def test_a_repeated_date_header_is_refused(verifier):
    headers = {
        "host": ["kms.test:8080"],
        "date": ["Mon, 01 Jan 2024 00:10:00 GMT", "Mon, 01 Jan 2024 00:10:00 GMT"],
        "x-amz-target": ["TrentService.ListKeys"],
    }
    exc = error_of(verifier, sign(headers, ("date", "host", "x-amz-target")))
    assert exc.message == "Only one 'date' header is allowed; this request has 2."


def test_a_repeated_authorization_header_is_refused(verifier):
    request = sign(base_headers(), NAMES)
    auth = request.headers["authorization"][0]
    twice = SignedRequest("POST", "/", "", {**request.headers, "authorization": [auth, auth]}, BODY)
    exc = error_of(verifier, twice)
    assert (exc.code, exc.message) == (
        "IncompleteSignatureException",
        "Only one 'authorization' header is allowed; this request has 2.",
    )


def test_a_single_copy_of_each_is_still_accepted(verifier):
    headers = base_headers(x_amz_content_sha256=[hashlib.sha256(BODY).hexdigest()])
    assert verifier.verify(sign(headers, (*NAMES, "x-amz-content-sha256"))) == ALICE


@pytest.mark.parametrize("param", ["Credential", "SignedHeaders", "Signature"])
def test_an_authorization_parameter_given_twice_is_refused(verifier, param):
    """The sibling inside one header: a second Credential (or SignedHeaders, Signature) that a
    log or a proxy might read instead of the first, which alone was verified."""
    request = sign(base_headers(), NAMES)
    auth = request.headers["authorization"][0]
    value = auth.split(f"{param}=")[1].split(",")[0]
    doubled = SignedRequest(
        "POST", "/", "", {**request.headers, "authorization": [f"{auth}, {param}={value}"]}, BODY
    )
    exc = error_of(verifier, doubled)
    assert (exc.code, exc.message) == (
        "IncompleteSignatureException",
        f"Authorization header has more than one '{param}' parameter.",
    )
