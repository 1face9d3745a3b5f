"""The benchmark's own SigV4 signer signs exactly as botocore does, and hsmkms accepts it."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bench.signer import Signer
from hsmkms.api.sigv4 import SignedRequest, Verifier
from hsmkms.home import Identity

IDENTITY = Identity(
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "111122223333",
    "arn:aws:iam::111122223333:user/bench",
)  # fmt: skip
HOST = "127.0.0.1:8080"
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
AMZ_DATE = "20260102T030405Z"


def botocore_headers(target: str, body: bytes, region: str = "us-east-1") -> dict[str, str]:
    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}/",
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target},
    )
    auth = SigV4Auth(Credentials(IDENTITY.access_key_id, IDENTITY.secret_access_key), "kms", region)
    with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
        auth.add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    ("target", "body"),
    [
        ("TrentService.GenerateDataKey", b'{"KeyId":"alias/app","KeySpec":"AES_256"}'),
        ("TrentService.Decrypt", b'{"CiphertextBlob":"SGVsbG8sIHdvcmxkIQ=="}'),
        ("TrentService.ListKeys", b"{}"),
        ("TrentService.Encrypt", '{"Plaintext":"w6k=","KeyId":"é"}'.encode()),
    ],
)
def test_the_signature_is_botocores_byte_for_byte(target: str, body: bytes):
    ours = Signer(IDENTITY.access_key_id, IDENTITY.secret_access_key, "us-east-1", HOST)
    theirs = botocore_headers(target, body)
    mine = ours.headers(target, body, AMZ_DATE)
    assert mine["Authorization"] == theirs["Authorization"]
    assert mine["X-Amz-Date"] == theirs["X-Amz-Date"]


def test_a_new_day_derives_a_new_signing_key():
    ours = Signer(IDENTITY.access_key_id, IDENTITY.secret_access_key, "eu-west-1", HOST)
    ours.headers("TrentService.ListKeys", b"{}", "20260101T235959Z")
    mine = ours.headers("TrentService.ListKeys", b"{}", AMZ_DATE)
    assert (
        mine["Authorization"]
        == botocore_headers("TrentService.ListKeys", b"{}", "eu-west-1")["Authorization"]
    )


def test_hsmkms_verifies_what_it_signs():
    ours = Signer(IDENTITY.access_key_id, IDENTITY.secret_access_key, "us-east-1", HOST)
    body = b'{"NumberOfBytes":8}'
    headers = ours.headers("TrentService.GenerateRandom", body, AMZ_DATE)
    headers["Content-Length"] = str(len(body))
    verifier = Verifier({IDENTITY.access_key_id: IDENTITY}, "us-east-1", clock=WHEN.timestamp)
    request = SignedRequest(
        method="POST",
        raw_path="/",
        query_string="",
        headers={k.lower(): [v] for k, v in headers.items()},
        body=body,
    )
    assert verifier.verify(request) == IDENTITY
