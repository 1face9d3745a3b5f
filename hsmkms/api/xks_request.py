"""An XKS proxy API request's body (aws/aws-kms-xksproxy-api-spec v1): read within its
limit, its JSON checked field by field and its Base64 decoded; and the spec's errors.

Sizes are the spec's: what a proxy must take is what this one takes. A field larger than that,
where the spec lets a proxy take more, is UnsupportedOperationException (501: "a parameter
value exceeded the maximum size that is currently supported"); one the spec itself bounds (the
20 bytes of ciphertextMetadata, the 16 of a tag) is ValidationException.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from hsmkms.api import body

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

# The spec's sizes (bytes, decoded): what a proxy must take, and what this one takes.
MAX_PLAINTEXT = 4300
MAX_CIPHERTEXT = 4300
MAX_AAD = 8192
MAX_METADATA = 20
# Larger than any request the spec allows (two 2048-character ARNs, 10,924 characters of AAD,
# 5,736 of plaintext or ciphertext and the rest come to ~23 KiB).
MAX_BODY = 64 * 1024
# What each operation's requestMetadata must carry (strings), by the spec; the rest may be
# absent, and members it does not name are let through (Appendix B: KMS may add some).
_REQUIRED_METADATA = {
    "GetKeyMetadata": ("awsPrincipalArn", "kmsOperation", "kmsRequestId"),
    "Encrypt": ("awsPrincipalArn", "kmsKeyArn", "kmsOperation", "kmsRequestId"),
    "Decrypt": ("awsPrincipalArn", "kmsKeyArn", "kmsOperation", "kmsRequestId"),
}
# The spec's error names and HTTP statuses.
STATUS = {
    "ValidationException": 400,
    "InvalidStateException": 400,
    "InvalidCiphertextException": 400,
    "InvalidKeyUsageException": 400,
    "AuthenticationFailedException": 401,
    "AccessDeniedException": 403,
    "KeyNotFoundException": 404,
    "InvalidUriPathException": 404,
    "ThrottlingException": 429,
    "UnsupportedOperationException": 501,
    "DependencyTimeoutException": 503,
    "InternalException": 500,
}


class XksError(Exception):
    """An error named as the spec names it."""

    def __init__(
        self, name: str, message: str = "", *, close: bool = False, status: int | None = None
    ) -> None:
        super().__init__(name)
        self.name = name
        self.status = status or STATUS[name]
        self.message = message
        self.close = close  # the body was not read: the connection cannot carry another


def parse(body: bytes, operation: str) -> dict[str, Any]:
    """The request's fields, checked and decoded (Base64 -> bytes; absent optional -> b"" or
    None). GetHealthStatus answers whatever its body: the spec lets it refuse nothing."""
    if operation == "GetHealthStatus":
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return {}
        return parsed if isinstance(parsed, dict) else {}
    try:
        parsed = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise XksError("ValidationException", "The request body is not JSON.") from None
    if not isinstance(parsed, dict):
        raise XksError("ValidationException", "The request body is not a JSON object.")
    meta = parsed.get("requestMetadata")
    if not isinstance(meta, dict):
        raise XksError("ValidationException", "requestMetadata is required: a JSON object.")
    for name, value in meta.items():
        if value is not None and not isinstance(value, str):
            raise XksError("ValidationException", f"requestMetadata.{name} must be a string.")
    missing = [m for m in _REQUIRED_METADATA[operation] if not meta.get(m)]
    if missing:
        raise XksError("ValidationException", f"requestMetadata lacks {', '.join(missing)}.")
    out: dict[str, Any] = {"requestMetadata": meta}
    if operation == "GetKeyMetadata":
        return out
    _choice(parsed, "encryptionAlgorithm", "AES_GCM", required=True)
    out["additionalAuthenticatedData"] = _blob(parsed, "additionalAuthenticatedData", MAX_AAD)
    if operation == "Encrypt":
        out["plaintext"] = _blob(parsed, "plaintext", MAX_PLAINTEXT, required=True)
        out["ciphertextDataIntegrityValueAlgorithm"] = _choice(
            parsed, "ciphertextDataIntegrityValueAlgorithm", "SHA_256"
        )
        return out
    out["ciphertext"] = _blob(parsed, "ciphertext", MAX_CIPHERTEXT, required=True)
    out["ciphertextMetadata"] = _blob(parsed, "ciphertextMetadata", MAX_METADATA, larger=False)
    iv = _blob(parsed, "initializationVector", 16, required=True, larger=False)
    if len(iv) not in (12, 16):
        raise XksError("ValidationException", "initializationVector must be 12 or 16 bytes.")
    tag = _blob(parsed, "authenticationTag", 16, required=True, larger=False)
    if len(tag) != 16:
        raise XksError("ValidationException", "authenticationTag must be 16 bytes.")
    out["initializationVector"], out["authenticationTag"] = iv, tag
    return out


def _blob(
    parsed: Mapping[str, Any],
    name: str,
    limit: int,
    *,
    required: bool = False,
    larger: bool = True,
) -> bytes:
    """A Base64 field, decoded. Past ``limit``: UnsupportedOperationException when the spec
    lets a proxy take more (``larger``), else ValidationException."""
    value = parsed.get(name)
    if value is None:
        if required:
            raise XksError("ValidationException", f"{name} is required.")
        return b""
    if not isinstance(value, str):
        raise XksError("ValidationException", f"{name} must be a Base64 string.")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise XksError("ValidationException", f"{name} is not standard Base64.") from None
    if len(data) > limit:
        if larger:
            raise XksError(
                "UnsupportedOperationException",
                f"{name} is {len(data)} bytes: this proxy takes at most {limit}.",
            )
        raise XksError("ValidationException", f"{name} must be at most {limit} bytes.")
    return data


def _choice(
    parsed: Mapping[str, Any], name: str, allowed: str, *, required: bool = False
) -> str | None:
    value = parsed.get(name)
    if value is None and not required:
        return None
    if value != allowed:
        raise XksError("ValidationException", f"{name} must be {allowed} (XKS proxy API v1).")
    return allowed


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


async def read_body(headers: Mapping[str, list[str]], receive: Receive) -> bytes | None:
    """The body under MAX_BODY (api/body.py), over it the spec's UnsupportedOperationException."""
    return await body.read_body(headers, receive, MAX_BODY, _too_large)


def _too_large() -> XksError:
    return XksError(
        "UnsupportedOperationException",
        f"The request body is larger than this proxy's limit of {MAX_BODY} bytes.",
        close=True,
    )
