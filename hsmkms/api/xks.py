"""The XKS proxy API v1 on the wire (aws/aws-kms-xksproxy-api-spec): hsmkms as an external key
store proxy for AWS KMS, served by the same server as the KMS API, under a path prefix
(``xks_path_prefix``, default ``/xks``)::

    POST <prefix>/kms/xks/v1/keys/<externalKeyId>/metadata   GetKeyMetadata
    POST <prefix>/kms/xks/v1/keys/<externalKeyId>/encrypt    Encrypt
    POST <prefix>/kms/xks/v1/keys/<externalKeyId>/decrypt    Decrypt
    POST <prefix>/kms/xks/v1/health                          GetHealthStatus

JSON bodies (``application/json``), binary fields in standard Base64. A request goes: path
(else InvalidUriPathException 404) -> method (POST, else 405) -> body (at most MAX_BODY bytes)
-> SigV4 for the service ``kms-xks-proxy``, signed over ``host;x-amz-date`` with a credential
of an XKS profile of the credentials file (else AuthenticationFailedException 401) -> the
fields (else ValidationException 400; larger than the spec's sizes: UnsupportedOperationException
501) -> the operation (:mod:`hsmkms.service.xks`) on a worker thread, never on the event loop.
Errors are ``{"errorName": ..., "errorMessage": ...}`` with the spec's statuses. Plaintext is
never logged; each request is, with its requestMetadata, status and time (the spec's Logging).

The credentials file is read again when it changes (looked at once a second at most), so a
second credential, added for a rotation, is accepted without a restart, and a removed one no
longer is.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hsmkms import errors
from hsmkms.api.sigv4 import SignedRequest, Verifier
from hsmkms.api.xks_request import XksError, parse, read_body
from hsmkms.config import ConfigError, Settings
from hsmkms.home import read_xks_credentials
from hsmkms.identity import Caller, Identity

log = logging.getLogger("hsmkms.xks")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVICE = "kms-xks-proxy"
API_PATH = "/kms/xks/v1"
CONTENT_TYPE = b"application/json"
HEALTH_TIMEOUT = 1.0
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_OPERATIONS = {"metadata": "GetKeyMetadata", "encrypt": "Encrypt", "decrypt": "Decrypt"}
_LOGGED_METADATA = ("kmsRequestId", "kmsOperation", "awsPrincipalArn", "kmsKeyArn", "kmsViaService")
_CHECK_CREDENTIALS = 1.0  # seconds between looks at the credentials file

# The operation layer's errors (AWS KMS's names), as the XKS proxy API names them.
_FROM_KMS = {
    "ValidationException": "ValidationException",
    "NotFoundException": "KeyNotFoundException",
    "DisabledException": "InvalidStateException",
    "KMSInvalidStateException": "InvalidStateException",
    "InvalidCiphertextException": "InvalidCiphertextException",
    "InvalidKeyUsageException": "InvalidKeyUsageException",
    "AccessDeniedException": "AccessDeniedException",
    "ThrottlingException": "ThrottlingException",
    "LimitExceededException": "ThrottlingException",
    "UnsupportedOperationException": "UnsupportedOperationException",
    "DependencyTimeoutException": "DependencyTimeoutException",
    # SigV4's refusals (hsmkms/api/sigv4.py), each with AWS's own wording.
    "MissingAuthenticationTokenException": "AuthenticationFailedException",
    "IncompleteSignatureException": "AuthenticationFailedException",
    "InvalidSignatureException": "AuthenticationFailedException",
    "UnrecognizedClientException": "AuthenticationFailedException",
}
INTERNAL_MESSAGE = "The XKS proxy failed; the server log says why."


class XksBackend(Protocol):
    """The XKS operations (:class:`hsmkms.service.xks.XksProxy`). Answers are the spec's
    fields, bytes where the wire sends Base64; errors are :class:`hsmkms.errors.KMSError`."""

    def metadata(self, caller: Caller, external_key_id: str) -> dict[str, Any]: ...

    def encrypt(
        self, caller: Caller, external_key_id: str, plaintext: bytes, aad: bytes, integrity: bool
    ) -> dict[str, bytes]: ...

    def decrypt(
        self,
        caller: Caller,
        external_key_id: str,
        ciphertext: bytes,
        aad: bytes,
        metadata: bytes,
        iv: bytes,
        tag: bytes,
    ) -> dict[str, bytes]: ...

    def health(self) -> dict[str, Any]: ...


class Observer(Protocol):
    """Where each answer is counted (hsmkms/api/operator.py's Metrics)."""

    def observe(self, operation: str, code: str, seconds: float) -> None: ...


def from_kms(exc: errors.KMSError) -> XksError:
    """The XKS error for an error of the operation layer (InternalException for the rest)."""
    return XksError(_FROM_KMS.get(exc.code, "InternalException"), exc.message)


@dataclass(frozen=True)
class Route:
    operation: str  # GetKeyMetadata, Encrypt, Decrypt, GetHealthStatus
    key_id: str = ""


class Credentials:
    """The XKS credentials of a credentials file, and a SigV4 verifier over them, read again
    when the file changes (its size, inode or modification time), at most once a second."""

    def __init__(
        self,
        path: Path,
        regions: frozenset[str],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.regions = regions
        self.clock = clock
        self._monotonic = monotonic
        self._seen: tuple[int, int, int] | None = (-1, -1, -1)  # nothing read yet
        self._checked = float("-inf")
        self.regions_of: dict[str, str] = {}
        self.verifier = self._verifier({})

    def _verifier(self, identities: Mapping[str, Identity]) -> Verifier:
        return Verifier(identities, self.regions, SERVICE, self.clock, target_signed=False)

    def current(self) -> Credentials:
        now = self._monotonic()
        if now - self._checked >= _CHECK_CREDENTIALS:
            self._checked = now
            self._reload()
        return self

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            seen = None
        else:
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            found = read_xks_credentials(self.path)
        except ConfigError as exc:
            log.warning("XKS credentials: %s; keeping those read before", exc)
            return
        self.verifier = self._verifier({akid: ident for akid, (ident, _) in found.items()})
        self.regions_of = {akid: region for akid, (_, region) in found.items()}
        if not found:
            log.warning("no XKS profile in %s: every XKS request is refused", self.path)


class XksApi:
    """The XKS proxy API's requests of one App (hsmkms/api/app.py routes them here)."""

    def __init__(
        self,
        backend: XksBackend,
        settings: Settings,
        *,
        pool: Executor | None,
        metrics: Observer,
        credentials: Credentials | None = None,
    ) -> None:
        self.backend = backend
        self.prefix = settings.xks_path_prefix
        self.base = self.prefix + API_PATH
        self.pool = pool
        self.metrics = metrics
        # AWS KMS signs with the Region it calls from: any Region botocore knows for KMS.
        self.credentials = credentials or Credentials(
            settings.credentials_path, settings.replace(regions="*").region_set()
        )

    def routes(self, path: str) -> bool:
        """Whether ``path`` is this API's to answer: under the prefix (under /kms/xks/ when
        there is none, which leaves every other path to the KMS API)."""
        if not self.prefix:
            return path.startswith("/kms/xks/")
        return path == self.prefix or path.startswith(self.prefix + "/")

    def route(self, path: str) -> Route:
        if path == self.base + "/health":
            return Route("GetHealthStatus")
        head, _, rest = path.partition(self.base + "/keys/")
        key_id, _, verb = rest.partition("/")
        if head or not _KEY_ID.match(key_id) or verb not in _OPERATIONS:
            raise XksError(
                "InvalidUriPathException",
                f"No XKS API at this path: the API is {self.base}/health and "
                f"{self.base}/keys/<externalKeyId>/metadata|encrypt|decrypt.",
            )
        return Route(_OPERATIONS[verb], key_id)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        route = Route("-")
        meta: Mapping[str, Any] = {}
        signer = ""
        close = False
        extra: list[tuple[bytes, bytes]] = []
        try:
            route = self.route(scope["path"])
            if scope["method"] != "POST":
                extra.append((b"allow", b"POST"))
                raise XksError(
                    "ValidationException", "The XKS proxy API takes POST only.", status=405
                )
            headers = _headers(scope)
            body = await read_body(headers, receive)
            if body is None:
                return  # the client went away
            caller = self._authenticate(scope, headers, body, request_id)
            signer = caller.access_key_id
            request = parse(body, route.operation)
            given = request.get("requestMetadata")
            meta = given if isinstance(given, dict) else {}
            answer = await self._run(route, caller, request)
            status, payload, code = 200, _dumps(_encoded(answer)), "OK"
        except XksError as exc:
            status, payload, code, close = _refusal(exc)
        except errors.KMSError as exc:
            status, payload, code, close = _refusal(from_kms(exc))
        except Exception:
            # Never the body or the exception's text in the answer: they may hold secrets.
            log.exception("XKS %s failed (request %s)", route.operation, request_id)
            status, payload, code, close = _refusal(XksError("InternalException", INTERNAL_MESSAGE))
        elapsed = time.perf_counter() - started
        self.metrics.observe(f"Xks{route.operation}", code, elapsed)
        _log(route, meta, signer, status, code, elapsed)
        await _respond(send, status, payload, request_id, close, extra)

    def _authenticate(
        self, scope: Scope, headers: Mapping[str, list[str]], body: bytes, request_id: str
    ) -> Caller:
        credentials = self.credentials.current()
        path = scope["path"]
        identity, _ = credentials.verifier.verify_scoped(
            SignedRequest(
                method=scope["method"],
                raw_path=scope.get("raw_path", path.encode()).decode("latin-1"),
                query_string=scope.get("query_string", b"").decode("latin-1"),
                headers=headers,
                body=body,
            )
        )
        client = scope.get("client")
        return identity.caller(
            source_ip=client[0] if client else "",
            secure_transport=scope.get("scheme") == "https",
            # The credential's Region names the keys; the scope's is AWS KMS's own.
            region=credentials.regions_of.get(identity.access_key_id, ""),
            request_id=request_id,
            user_agent=(headers.get("user-agent") or [""])[0][:1024],
        )

    async def _run(self, route: Route, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
        """The operation, on a worker thread (a token call may block)."""
        backend = self.backend
        call: Callable[[], dict[str, Any]]
        if route.operation == "GetHealthStatus":
            call = backend.health
        elif route.operation == "GetKeyMetadata":

            def call() -> dict[str, Any]:
                return backend.metadata(caller, route.key_id)
        elif route.operation == "Encrypt":

            def call() -> dict[str, Any]:
                return backend.encrypt(
                    caller,
                    route.key_id,
                    request["plaintext"],
                    request["additionalAuthenticatedData"],
                    request["ciphertextDataIntegrityValueAlgorithm"] is not None,
                )
        else:

            def call() -> dict[str, Any]:
                return backend.decrypt(
                    caller,
                    route.key_id,
                    request["ciphertext"],
                    request["additionalAuthenticatedData"],
                    request["ciphertextMetadata"],
                    request["initializationVector"],
                    request["authenticationTag"],
                )

        if self.pool is None:
            return call()
        future = asyncio.get_running_loop().run_in_executor(self.pool, call)
        if route.operation != "GetHealthStatus":
            return await future
        try:
            return await asyncio.wait_for(future, HEALTH_TIMEOUT)
        except TimeoutError:
            raise XksError(
                "DependencyTimeoutException",
                f"The HSM did not answer the health check within {HEALTH_TIMEOUT:g} s.",
            ) from None


# -- the answer -------------------------------------------------------------------------------
def _encoded(answer: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: base64.b64encode(v).decode() if isinstance(v, bytes | bytearray) else v
        for k, v in answer.items()
    }


def _refusal(exc: XksError) -> tuple[int, bytes, str, bool]:
    body: dict[str, str] = {"errorName": exc.name}
    if exc.message:
        body["errorMessage"] = _printable(exc.message, 511)
    return exc.status, _dumps(body), exc.name, exc.close


def _printable(text: str, limit: int) -> str:
    """The spec's errorMessage: printable ASCII (0x20-0x7e), under 512 characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:limit]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _headers(scope: Scope) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        out.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return out


def _log(
    route: Route, meta: Mapping[str, Any], signer: str, status: int, code: str, seconds: float
) -> None:
    """One line per request (the spec's Logging): what AWS KMS said it was doing and which
    credential signed (a rotation's progress), never a field of the body besides
    requestMetadata."""
    said = " ".join(
        f"{name}={_printable(str(meta[name]), 200)}"
        for name in _LOGGED_METADATA
        if isinstance(meta.get(name), str)
    )
    key = f" {route.key_id}" if route.key_id else ""
    by = f" credential={signer}" if signer else ""
    log.info(
        "XKS %s%s: %d %s in %.1f ms%s %s",
        route.operation,
        key,
        status,
        code,
        seconds * 1000,
        by,
        said,
    )


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    close: bool,
    extra: list[tuple[bytes, bytes]],
) -> None:
    headers = [
        (b"content-type", CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
        (b"x-amzn-requestid", request_id.encode()),
        *extra,
    ]
    if close:
        headers.append((b"connection", b"close"))  # the body was not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
