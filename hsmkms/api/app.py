"""The AWS JSON 1.1 wire, as a plain ASGI application (no framework: one route, and every
microsecond it does not spend is one the token can use).

    POST /        X-Amz-Target: TrentService.<Operation>, SigV4-signed, JSON body
    GET  /health  200 {"ok": true} or 503 {"ok": false}; the full report with the operator
                  token (hsmkms/api/operator.py)
    GET  /metrics Prometheus text, with the operator token only
    POST /xks/kms/xks/v1/...  the XKS proxy API (hsmkms/api/xks.py), under xks_path_prefix

A request goes: size limit -> target -> SigV4 -> JSON -> :func:`model.from_wire` ->
``kms.call`` on a worker thread -> :func:`model.to_wire`. The order of the checks is AWS's: an
unknown target is answered before authentication, a signature before the body is parsed.
Errors are AWS's envelope ``{"__type": "<Name>", "message": "..."}`` with the status of the
error's class. Anything unexpected is a 500 ``KMSInternalException`` with a fixed message; the
traceback goes to the server log under the request id, never the parameters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from hsmkms import errors, model
from hsmkms.api.body import read_body
from hsmkms.api.operator import METRICS, PROMETHEUS, Answer, Metrics, Operator
from hsmkms.api.sigv4 import SignedRequest, Verifier
from hsmkms.api.xks import XksApi, XksBackend
from hsmkms.config import Settings
from hsmkms.identity import Caller, Identity

log = logging.getLogger("hsmkms.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CONTENT_TYPE = b"application/x-amz-json-1.1"
TARGET_PREFIX = model.TARGET_PREFIX + "."
INTERNAL_MESSAGE = (
    "The request was rejected because an internal exception occurred. The request can be retried."
)
# Worker threads for KMS.call. Token calls are serialised inside the token layer, so more
# threads than this only queue; a few let store reads and host-side work (key pairs)
# overlap with a token call. The hop to a thread and back costs ~70-130 us per request on a
# 2-vCPU VM (thread and loop wake-ups), against ~40 us for all the rest of the wire layer;
# it buys an event loop that a 1 s RSA generation or a slow HSM never stalls.
DEFAULT_THREADS = 8
HEALTH_TIMEOUT = 5.0
# Quick operations run on the event loop (KMS.try_quick), which spares them that hop. A
# token that then fails (a 5xx) or answers slowly sends every call back to the threads for
# a while, so a sick token stalls worker threads, never the loop that answers /health.
# "Slowly" is twice within a second: one slow call alone is as likely the machine's
# scheduler (a busy host preempts the loop for tens of ms) as the token.
INLINE_SLOW = 0.05
INLINE_SLOW_AGAIN = 1.0
INLINE_PAUSE = 5.0


class KMSLike(Protocol):
    """What the wire needs of :class:`hsmkms.kms.KMS`."""

    def call(
        self, operation: str, params: dict[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]: ...

    def try_quick(
        self, operation: str, params: dict[str, Any], caller: Caller | None = None
    ) -> dict[str, Any] | None: ...

    def keypair_pool_stock(self) -> dict[str, int]: ...

    def xks_proxy(self) -> XksBackend | None: ...

    def health(self) -> dict[str, Any]: ...

    def start_background(self) -> None: ...

    def close(self) -> None: ...


class _Refused(Exception):
    """A response decided before the operation runs (carries the KMSError to answer)."""

    def __init__(self, error: errors.KMSError, close: bool = False) -> None:
        super().__init__(error.code)
        self.error = error
        self.close = close


class App:
    """The ASGI application. Build it with :func:`create_app`."""

    def __init__(
        self,
        kms: KMSLike,
        identities: Mapping[str, Identity],
        settings: Settings,
        *,
        threads: int | None = None,
        owns_kms: bool = False,
    ) -> None:
        if threads is None:
            threads = DEFAULT_THREADS
        self.kms = kms
        self.settings = settings
        self.verifier = Verifier(identities, settings.region_set())
        self.max_body = settings.max_body_bytes
        # threads=0 runs KMS.call on the event loop itself (for measurements only: a slow
        # call would then stall every other request of the process).
        self.pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hsmkms-op")
            if threads > 0
            else None
        )
        self.metrics = Metrics()
        # Read here, in each worker; `hsmkms serve` read it first to refuse a bad file.
        self.operator = Operator(settings.read_operator_token())
        self.owns_kms = owns_kms
        inline = settings.api_inline and self.pool is not None
        self._quick = kms.try_quick if inline else None
        self._inline_paused_until = 0.0
        self._inline_slow_at = float("-inf")
        self.operations = model.operations()  # also compiles the model before the 1st request
        # The XKS proxy API, over the same token and store (None: a stand-in operation layer).
        xks = kms.xks_proxy() if settings.xks_enabled else None
        self.xks = (
            XksApi(xks, settings, pool=self.pool, metrics=self.metrics) if xks is not None else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan ---------------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.owns_kms:
                    self.kms.start_background()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.owns_kms:
            self.kms.close()

    # -- http -------------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        path = scope["path"]
        if self.xks is not None and self.xks.routes(path):
            await self.xks.handle(scope, receive, send)
            return
        if path == "/health" and method in ("GET", "HEAD"):
            authorization = _headers(scope).get("authorization")
            await _answer(send, self.operator.health(await self._health(), authorization))
            return
        if path == "/metrics" and method == "GET":
            refused = self.operator.refusal(_headers(scope).get("authorization"), METRICS)
            text = b"" if refused else self.metrics.render(self.kms.keypair_pool_stock())
            await _answer(send, refused or Answer(200, text, PROMETHEUS))
            return

        request_id = str(uuid.uuid4())
        started = time.perf_counter()
        operation = "-"
        close = False
        try:
            if method != "POST":
                raise _Refused(
                    errors.UnknownOperationException(
                        "hsmkms answers the AWS JSON 1.1 protocol: POST / with "
                        "X-Amz-Target: TrentService.<Operation>"
                    )
                )
            headers = _headers(scope)
            body = await self._read_body(headers, receive)
            if body is None:
                return  # the client went away: nobody to answer
            operation = self._operation(headers)
            identity, region = self.verifier.verify_scoped(
                SignedRequest(
                    method=method,
                    raw_path=scope.get("raw_path", path.encode()).decode("latin-1"),
                    query_string=scope.get("query_string", b"").decode("latin-1"),
                    headers=headers,
                    body=body,
                )
            )
            params = model.from_wire(operation, _parse_json(body))
            client = scope.get("client")
            caller = identity.caller(
                source_ip=client[0] if client else "",
                secure_transport=scope.get("scheme") == "https",
                region=region,
                request_id=request_id,
                user_agent=(headers.get("user-agent") or [""])[0][:1024],
            )
            result = await self._call(operation, params, caller)
            payload = _dumps(model.to_wire(operation, result))
            code, status = "OK", 200
        except _Refused as refused:
            close = refused.close
            code, status, payload = _envelope(refused.error)
        except errors.KMSError as exc:
            code, status, payload = _envelope(exc)
        except Exception:
            # Never the parameters or the exception text in the answer: they may hold secrets.
            log.exception("internal error answering %s (request %s)", operation, request_id)
            code, status, payload = _envelope(errors.KMSInternalException(INTERNAL_MESSAGE))
        self.metrics.observe(operation, code, time.perf_counter() - started)
        await _respond(send, status, payload, CONTENT_TYPE, request_id, close)

    async def _call(self, operation: str, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """The operation's answer: inline when it is quick and the token is well, else from a
        worker thread."""
        if self.pool is None:
            return self.kms.call(operation, params, caller)
        quick = self._quick
        if quick is not None and time.monotonic() >= self._inline_paused_until:
            started = time.perf_counter()
            trouble = ""
            try:
                result = quick(operation, params, caller)
            except errors.KMSError as exc:
                if exc.status >= 500:
                    trouble = exc.code
                raise
            except Exception as exc:
                trouble = type(exc).__name__
                raise
            finally:
                elapsed = time.perf_counter() - started
                if elapsed > INLINE_SLOW and not trouble:
                    now = time.monotonic()
                    if now - self._inline_slow_at < INLINE_SLOW_AGAIN:
                        trouble = f"{elapsed * 1000:.0f} ms, twice within a second"
                    self._inline_slow_at = now
                if trouble:
                    self._pause_inline(operation, trouble)
            if result is not None:
                return result
        loop = asyncio.get_running_loop()
        answer: dict[str, Any] = await loop.run_in_executor(
            self.pool, self.kms.call, operation, params, caller
        )
        return answer

    def _pause_inline(self, operation: str, why: str) -> None:
        if time.monotonic() >= self._inline_paused_until:
            log.warning(
                "%s on the event loop: %s; operations run on worker threads for %g s",
                operation,
                why,
                INLINE_PAUSE,
            )
        self._inline_paused_until = time.monotonic() + INLINE_PAUSE

    async def _read_body(self, headers: Mapping[str, list[str]], receive: Receive) -> bytes | None:
        """The body under ``max_body_bytes`` (api/body.py)."""
        return await read_body(
            headers, receive, self.max_body, lambda: _Refused(self._too_large(), close=True)
        )

    def _too_large(self) -> errors.KMSError:
        return errors.RequestEntityTooLargeException(
            f"The request body is larger than the limit of {self.max_body} bytes."
        )

    def _operation(self, headers: Mapping[str, list[str]]) -> str:
        """``TrentService.<Operation>`` -> the operation; AWS answers UnknownOperationException
        (with no message) for anything else."""
        target = headers.get("x-amz-target")
        if target and len(target) > 1:
            # Two lines are one comma-joined value (RFC 9110 section 5.3), and that is what the
            # signature covers: it names no operation, whichever line a reader took.
            raise _Refused(
                errors.UnknownOperationException(
                    f"A request names one operation: this one has {len(target)} X-Amz-Target "
                    "headers."
                )
            )
        if target and target[0].startswith(TARGET_PREFIX):
            operation = target[0][len(TARGET_PREFIX) :]
            if operation in self.operations:
                return operation
        raise _Refused(errors.UnknownOperationException(""))

    async def _health(self) -> dict[str, Any]:
        """The service's health report, from a worker thread, within HEALTH_TIMEOUT."""
        loop = asyncio.get_running_loop()
        try:
            report: dict[str, Any] = await asyncio.wait_for(
                loop.run_in_executor(self.pool, self.kms.health), HEALTH_TIMEOUT
            )
        except TimeoutError:
            report = {"ok": False, "error": f"no answer within {HEALTH_TIMEOUT:g} s"}
        except Exception as exc:
            log.exception("health check failed")
            report = {"ok": False, "error": type(exc).__name__}
        return report


def _headers(scope: Scope) -> dict[str, list[str]]:
    """Lower-case name -> values in arrival order; latin-1 is how HTTP bytes map to text."""
    out: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        out.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _parse_json(body: bytes) -> Any:
    """The JSON body; AWS answers a bare SerializationException (no message) when it is not
    JSON. NaN and Infinity are not JSON, whatever Python's parser allows."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise errors.SerializationException("") from None


def _dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=default).encode("utf-8")


def _envelope(error: errors.KMSError) -> tuple[str, int, bytes]:
    """AWS JSON 1.1 error body: ``__type`` and, when there is one, ``message``."""
    body: dict[str, str] = {"__type": error.code}
    if error.message:
        body["message"] = error.message
    return error.code, error.status, _dumps(body)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    request_id: str | None = None,
    close: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
    ]
    if request_id:
        headers.append((b"x-amzn-requestid", request_id.encode()))
    if close:
        # The body was not read: the connection cannot carry another request.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _answer(send: Send, answer: Answer) -> None:
    """An answer of the operator endpoints (hsmkms/api/operator.py)."""
    headers = [
        (b"content-type", answer.content_type),
        (b"content-length", str(len(answer.body)).encode()),
        *answer.headers,
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


def create_app(
    kms: KMSLike,
    identities: Mapping[str, Identity],
    settings: Settings,
    *,
    threads: int | None = None,
    owns_kms: bool = False,
) -> App:
    """The ASGI app serving ``kms`` to the holders of ``identities`` (access key id -> Identity).

    ``threads``: worker threads for ``KMS.call`` (default 8). ``owns_kms``: start the
    operation layer's background jobs with the server and close the KMS when it stops.
    With the ``xks_enabled`` setting, the XKS proxy API (``kms.xks_proxy()``) is served too,
    under ``xks_path_prefix``, to the credentials file's XKS profiles."""
    return App(
        kms,
        identities,
        settings,
        threads=threads,
        owns_kms=owns_kms,
    )


def app_from_env() -> App:
    """uvicorn factory (``hsmkms.api:app_from_env``): one KMS per worker process.

    Settings come from ``HSMKMS_*`` variables (and ``HSMKMS_CONFIG``), which ``hsmkms serve``
    exports before it starts the workers, so ``--workers N`` gives N processes, each with its
    own token session and login.
    """
    from hsmkms import compose
    from hsmkms.kms import KMS

    settings = Settings.load()
    kms = KMS(settings)  # creates the embedded home if needed
    return create_app(kms, compose.identities(settings), settings, owns_kms=True)
