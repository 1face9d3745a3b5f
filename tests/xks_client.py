"""A client of the XKS proxy API v1 written from the spec (aws/aws-kms-xksproxy-api-spec), not
from hsmkms: JSON bodies built by hand, binary fields in standard Base64, SigV4 by botocore's
``SigV4Auth`` for the service ``kms-xks-proxy`` in the Region AWS KMS calls from, over
``host;x-amz-date`` (and the body's hash), as Appendix A describes.

    client = XksClient(transport, "kms.test", akid, secret)
    client.encrypt(key_id, b"data", aad=b"ctx")          # -> Reply(status, json)

``transport(method, path, body, headers) -> Reply`` is the ASGI app in-process
(tests/features/test_xks_proxy.py) or a socket to a server (tests/clients/test_client_xks.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SERVICE = "kms-xks-proxy"
PRINCIPAL = "arn:aws:iam::123456789012:user/Alice"
KEY_ARN = "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def error(self) -> str | None:
        data = self.json
        return data.get("errorName") if isinstance(data, dict) else None

    def blob(self, name: str) -> bytes:
        return base64.b64decode(self.json[name], validate=True)


Transport = Callable[[str, str, bytes, Mapping[str, str]], Reply]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def request_metadata(operation: str, request_id: str = "4112f4d6-db54-4af4-ae30-c55a22a8dfae"):
    """requestMetadata as AWS KMS sends it for a cryptographic operation (the spec's example)."""
    return {
        "awsPrincipalArn": PRINCIPAL,
        "kmsKeyArn": KEY_ARN,
        "kmsOperation": operation,
        "kmsRequestId": request_id,
        "kmsViaService": "ebs",
    }


def integrity(aad: bytes, metadata: bytes, iv: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """The ciphertext data integrity value as Appendix C defines it."""
    return hashlib.sha256(aad + metadata + iv + ciphertext + tag).digest()


class XksClient:
    def __init__(
        self,
        transport: Transport,
        host: str,
        access_key_id: str,
        secret: str,
        *,
        uri_path: str = "/xks/kms/xks/v1",
        region: str = "us-east-1",
        scheme: str = "http",
    ) -> None:
        self.transport = transport
        self.host = host
        self.access_key_id = access_key_id
        self.secret = secret
        self.uri_path = uri_path
        self.region = region
        self.scheme = scheme

    def headers(
        self,
        path: str,
        body: bytes,
        *,
        method: str = "POST",
        access_key_id: str | None = None,
        secret: str | None = None,
        service: str = SERVICE,
        when: datetime | None = None,
    ) -> dict[str, str]:
        request = AWSRequest(
            method=method,
            url=f"{self.scheme}://{self.host}{path}",
            data=body,
            headers={"Content-Type": "application/json", "Host": self.host},
        )
        auth = SigV4Auth(
            Credentials(access_key_id or self.access_key_id, secret or self.secret),
            service,
            self.region,
        )
        if when is None:
            auth.add_auth(request)
        else:
            with mock.patch("botocore.auth.get_current_datetime", return_value=when):
                auth.add_auth(request)
        return dict(request.headers.items())

    def post(self, operation: str, payload: Any, *, raw: bytes | None = None, **sign: Any) -> Reply:
        """POST ``<uri_path>/<operation>`` with ``payload`` as JSON (or ``raw`` bytes)."""
        path = f"{self.uri_path}/{operation}"
        body = raw if raw is not None else json.dumps(payload).encode()
        return self.transport("POST", path, body, self.headers(path, body, **sign))

    # -- the four operations, as the spec writes their bodies -----------------------------------
    def metadata(self, key_id: str, **sign: Any) -> Reply:
        meta = {
            "awsPrincipalArn": PRINCIPAL,
            "kmsOperation": "CreateKey",
            "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
        }
        return self.post(f"keys/{key_id}/metadata", {"requestMetadata": meta}, **sign)

    def encrypt(
        self,
        key_id: str,
        plaintext: bytes,
        *,
        aad: bytes | None = None,
        cdiv: bool = True,
        **sign: Any,
    ) -> Reply:
        body: dict[str, Any] = {
            "requestMetadata": request_metadata("Encrypt"),
            "plaintext": b64(plaintext),
            "encryptionAlgorithm": "AES_GCM",
        }
        if aad is not None:
            body["additionalAuthenticatedData"] = b64(aad)
        if cdiv:
            body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256"
        return self.post(f"keys/{key_id}/encrypt", body, **sign)

    def decrypt(
        self,
        key_id: str,
        sealed: Mapping[str, Any],
        *,
        aad: bytes | None = None,
        **sign: Any,
    ) -> Reply:
        """Decrypt the fields of an Encrypt answer (``sealed``: its JSON, fields as answered)."""
        body: dict[str, Any] = {
            "requestMetadata": request_metadata("Decrypt", "5112f4d6-db54-4af4-ae30-c55a22a8dfae"),
            "ciphertext": sealed["ciphertext"],
            "encryptionAlgorithm": "AES_GCM",
            "initializationVector": sealed["initializationVector"],
            "authenticationTag": sealed["authenticationTag"],
        }
        if sealed.get("ciphertextMetadata") is not None:
            body["ciphertextMetadata"] = sealed["ciphertextMetadata"]
        if aad is not None:
            body["additionalAuthenticatedData"] = b64(aad)
        return self.post(f"keys/{key_id}/decrypt", body, **sign)

    def health(self, **sign: Any) -> Reply:
        meta = {
            "kmsRequestId": "1124f4d6-db54-4af4-ae30-c55a22a8abcd",
            "kmsOperation": "KmsHealthCheck",
        }
        return self.post("health", {"requestMetadata": meta}, **sign)
