"""The answer over the concurrency limit (api/protocol.py): the KMS API's ThrottlingException,
and on the XKS proxy API's paths the spec's (429 and an errorName), which is what AWS KMS
expects of a proxy that cannot keep up."""

from __future__ import annotations

import asyncio
import json

from hsmkms.api.protocol import _throttled


def _answer(path: str) -> tuple[int, dict[str, bytes], dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(_throttled({"type": "http", "path": path}, None, send))
    start, body = sent
    return start["status"], dict(start["headers"]), json.loads(body["body"])


def test_the_kms_api_is_told_throttling_as_aws_kms_says_it():
    status, headers, body = _answer("/")
    assert status == 400 and body["__type"] == "ThrottlingException"
    assert headers[b"content-type"] == b"application/x-amz-json-1.1"


def test_the_xks_api_is_told_throttling_as_the_proxy_spec_says_it():
    status, headers, body = _answer("/xks/kms/xks/v1/keys/k/encrypt")
    assert status == 429 and body["errorName"] == "ThrottlingException"
    assert headers[b"content-type"] == b"application/json"
