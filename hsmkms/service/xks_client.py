"""The client side of the XKS proxy API v1 (aws/aws-kms-xksproxy-api-spec): what an external
key store (EXTERNAL_KEY_STORE) asks of its proxy. POST only, JSON bodies, SigV4 for the service
``kms-xks-proxy`` with the store's credential (botocore signs), HTTPS, and AWS's budget of
250 ms per call (``xks_proxy_timeout``).

Failures are :class:`XksFailure`, naming the spec's ``errorName`` (or what went wrong on the
way: unreachable, timed out, a malformed answer) and AWS KMS's message for it (the spec's
table of KMS exception messages); the operation layer picks the KMS exception by operation.
The proxy's own ``errorMessage`` is logged, never answered (as AWS KMS does).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

log = logging.getLogger("hsmkms.xks")

SERVICE = "kms-xks-proxy"
# AWS KMS's messages (the spec's "KMS Considerations" table), by what the proxy answered.
MESSAGES = {
    "ValidationException": "AWS KMS cannot interpret the response from the external key store "
    "proxy. If you see this error repeatedly, report it to your external key store proxy "
    "administrator.",
    "InvalidStateException": "The external key associated with this KMS key in an external key "
    "store is not enabled in the external key manager. Enable the external key in the external "
    "key manager and retry the request.",
    "InvalidCiphertextException": "The external key store proxy rejected the request because "
    "the specified ciphertext or encryption context is corrupted, missing, or otherwise invalid.",
    "InvalidKeyUsageException": "The external key associated with this KMS key in an external "
    "key store does not support the requested operation. Enable the operation on the key in your "
    "external key manager, and try the request again.",
    "AuthenticationFailedException": "The external key store proxy rejected the request because "
    "it could not authenticate AWS KMS. Verify the XKS proxy authentication credentials for your "
    "external key store and update if necessary.",
    "AccessDeniedException": "The external key store proxy denied access to the operation. "
    "Verify that the user and the external key are both authorized for this operation, and try "
    "the request again.",
    "KeyNotFoundException": "The external key associated with this KMS key in an external key "
    "store was not found in its external key manager. If the external key ID associated with "
    "this KMS key is incorrect, create a new KMS key with the correct external key ID.",
    "InvalidUriPathException": "The external key store proxy rejected the request because of an "
    "invalid URI path. Verify the URI path for your external key store and update if necessary.",
    "UnsupportedOperationException": "The external key store proxy rejected the request because "
    "it does not support the requested operation. If you see this error repeatedly, report it to "
    "your external key store proxy administrator.",
    "DependencyTimeoutException": "The external key store proxy did not respond to the request "
    "in the time allotted. Retry the request. If you see this error repeatedly, report it to "
    "your external key store proxy administrator.",
    "ThrottlingException": "The external key store proxy rejected the request due to a very high "
    "request rate. Reduce the frequency of your calls using KMS keys in this external key store.",
    "InternalException": "The external key store proxy rejected the request because it cannot "
    "communicate with the external key manager. Verify that the external key store proxy "
    "configuration is correct and that the external key manager is available.",
    "Unreachable": "AWS KMS cannot communicate with the external key store proxy. This might be "
    "a transient network issue. If you see this error repeatedly, verify that your external key "
    "store proxy is active and is connected to the network, and that its endpoint URI is correct "
    "in your external keystore.",
    "TlsFailure": "AWS KMS cannot establish a TLS connection to the external key store proxy. "
    "Verify the TLS configuration, including its certificate.",
    "TimedOut": "AWS KMS rejected the request because the external key store proxy did not "
    "respond in time. Retry the request. If you see this error repeatedly, report it to your "
    "external key store proxy administrator.",
    "Malformed": "AWS KMS cannot interpret the response from the external key store proxy. If "
    "you see this error repeatedly, report it to your external key store proxy administrator.",
}


class XksFailure(Exception):
    """A proxy call that failed: ``kind`` is the proxy's errorName or one of Unreachable,
    TlsFailure, TimedOut, Malformed; ``message`` AWS KMS's words for it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.message = MESSAGES.get(kind, MESSAGES["Malformed"])
        super().__init__(f"{kind}: {self.message}")


@dataclass(frozen=True)
class Proxy:
    """One external key store's proxy: where it is and how to sign for it."""

    endpoint: str  # https://host[:port]
    path: str  # [/prefix]/kms/xks/v1
    access_key_id: str
    secret: str
    region: str
    timeout: float = 0.25
    ca_file: str | None = None
    port: int = 443  # where XksProxyUriEndpoint (which names no port) is reached

    def call(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``<path>/<operation>`` (``health`` or ``keys/<id>/<verb>``): the JSON answer."""
        base = self.endpoint.rstrip("/")
        if self.port != 443 and urlsplit(base).port is None:
            base = f"{base}:{self.port}"  # signed as sent: the Host header names the port
        url = f"{base}{self.path}/{operation}"
        data = json.dumps(body).encode()
        request = AWSRequest(
            method="POST", url=url, data=data, headers={"Content-Type": "application/json"}
        )
        SigV4Auth(Credentials(self.access_key_id, self.secret), SERVICE, self.region).add_auth(
            request
        )
        parts = urlsplit(url)
        try:
            conn = self._connection(parts.hostname or "", parts.port)
            try:
                conn.request("POST", parts.path, body=data, headers=dict(request.headers.items()))
                answer = conn.getresponse()
                status, raw = answer.status, answer.read(64 * 1024)
            finally:
                conn.close()
        except ssl.SSLError:
            raise XksFailure("TlsFailure") from None
        except TimeoutError:
            raise XksFailure("TimedOut") from None
        except OSError:
            raise XksFailure("Unreachable") from None
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            raise XksFailure("Malformed") from None
        if not isinstance(parsed, dict):
            raise XksFailure("Malformed")
        if status != 200:
            name = parsed.get("errorName")
            log.warning(
                "XKS proxy %s answered %s %s: %s",
                self.endpoint,
                status,
                name,
                str(parsed.get("errorMessage", ""))[:512],
            )
            raise XksFailure(name if name in MESSAGES else "Malformed")
        return parsed

    def _connection(self, host: str, port: int | None) -> http.client.HTTPConnection:
        if self.endpoint.startswith("http://"):  # only for a proxy on loopback in tests
            return http.client.HTTPConnection(host, port, timeout=self.timeout)
        context = ssl.create_default_context(cafile=self.ca_file)
        return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=context)

    # -- the four operations -----------------------------------------------------------------
    def health(self, request_id: str, operation: str) -> str:
        """The proxy's health: ACTIVE, DEGRADED or UNAVAILABLE (the best of its fleet)."""
        out = self.call("health", {"requestMetadata": _meta(request_id, operation)})
        fleet = out.get("ekmFleetDetails")
        if not isinstance(fleet, list) or not fleet:
            raise XksFailure("Malformed")
        states = {e.get("healthStatus") for e in fleet if isinstance(e, dict)}
        for state in ("ACTIVE", "DEGRADED", "UNAVAILABLE"):
            if state in states:
                return state
        raise XksFailure("Malformed")

    def metadata(self, key_id: str, meta: dict[str, str]) -> dict[str, Any]:
        return self.call(f"keys/{key_id}/metadata", {"requestMetadata": meta})

    def encrypt(self, key_id: str, plaintext: bytes, aad: bytes, meta: dict[str, str]) -> bytes:
        """The external layer: (metadata, iv, tag, ciphertext) packed by :func:`pack`, after
        checking the proxy's ciphertext data integrity value (SHA-256, the spec's Appendix C)."""
        out = self.call(
            f"keys/{key_id}/encrypt",
            {
                "requestMetadata": meta,
                "plaintext": _b64(plaintext),
                "encryptionAlgorithm": "AES_GCM",
                "additionalAuthenticatedData": _b64(aad),
                "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
            },
        )
        try:
            ciphertext = base64.b64decode(out["ciphertext"], validate=True)
            iv = base64.b64decode(out["initializationVector"], validate=True)
            tag = base64.b64decode(out["authenticationTag"], validate=True)
            metadata = base64.b64decode(out.get("ciphertextMetadata") or "", validate=True)
            cdiv = base64.b64decode(out["ciphertextDataIntegrityValue"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise XksFailure("Malformed") from None
        if (
            len(iv) not in (12, 16)
            or len(tag) != 16
            or len(metadata) > 20
            or len(ciphertext) != len(plaintext)
        ):
            raise XksFailure("Malformed")
        if hashlib.sha256(aad + metadata + iv + ciphertext + tag).digest() != cdiv:
            raise XksFailure("Malformed")
        return pack(metadata, iv, tag, ciphertext)

    def decrypt(self, key_id: str, packed: bytes, aad: bytes, meta: dict[str, str]) -> bytes:
        metadata, iv, tag, ciphertext = unpack(packed)
        body: dict[str, Any] = {
            "requestMetadata": meta,
            "ciphertext": _b64(ciphertext),
            "encryptionAlgorithm": "AES_GCM",
            "additionalAuthenticatedData": _b64(aad),
            "authenticationTag": _b64(tag),
            "initializationVector": _b64(iv),
        }
        if metadata:
            body["ciphertextMetadata"] = _b64(metadata)
        out = self.call(f"keys/{key_id}/decrypt", body)
        try:
            plaintext = base64.b64decode(out["plaintext"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise XksFailure("Malformed") from None
        if len(plaintext) != len(ciphertext):
            raise XksFailure("Malformed")
        return plaintext


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _meta(request_id: str, operation: str) -> dict[str, str]:
    return {"kmsRequestId": request_id, "kmsOperation": operation}


def request_metadata(
    principal_arn: str, key_arn: str | None, operation: str, request_id: str
) -> dict[str, str]:
    meta = {"awsPrincipalArn": principal_arn, "kmsOperation": operation, "kmsRequestId": request_id}
    if key_arn:
        meta["kmsKeyArn"] = key_arn
    return meta


def pack(metadata: bytes, iv: bytes, tag: bytes, ciphertext: bytes) -> bytes:
    """The external layer in a blob: lengths of metadata and IV, then the four fields."""
    return bytes((len(metadata), len(iv))) + metadata + iv + tag + ciphertext


def unpack(packed: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    if len(packed) < 2:
        raise ValueError("too short")
    m, i = packed[0], packed[1]
    if m > 20 or i not in (12, 16) or len(packed) < 2 + m + i + 16:
        raise ValueError("malformed external layer")
    rest = packed[2:]
    return rest[:m], rest[m : m + i], rest[m + i : m + i + 16], rest[m + i + 16 :]
