"""HTTP/1.1 connection limits that uvicorn lacks, as its httptools protocol with deadlines.

uvicorn closes a connection that stays idle after a response (``timeout_keep_alive``), but a
connection that never sends a request, or sends its head one byte at a time (slowloris), or
its body so (slow POST), holds a socket for as long as the client likes; and httptools puts
no bound on the size of a request head. uvicorn's ``limit_concurrency`` counts open
connections as well as requests in progress, so such connections would also turn every
other client away with 503. This protocol adds:

* a **head deadline**: a request's head must have arrived ``header_timeout`` seconds after
  the connection opened or the previous response ended, else the connection is closed;
* a **body deadline**: its body must have arrived ``body_timeout`` seconds after its head;
* a **head size limit** (``MAX_HEAD_BYTES``): a larger head is answered 431 and closed;
* a **concurrency limit** on requests in progress only (idle connections cost a socket, not
  a worker): one more is answered ``ThrottlingException`` (HTTP 400, as AWS KMS answers when
  it sheds load), which AWS SDKs retry with backoff.

The limits are the protocol's own parameter: :func:`guarded` binds them to the class, and
uvicorn's ``Config(http=guarded(limits))`` carries the binding to each worker process (a
``functools.partial`` of importable objects pickles across the spawn).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("hsmkms.api")

# Larger than any request head an AWS SDK sends (SigV4 headers are ~1 KiB), far below what
# would cost memory; nginx's default is 4 x 8 KiB.
MAX_HEAD_BYTES = 64 * 1024

_THROTTLED = json.dumps(
    {
        "__type": "ThrottlingException",
        "message": "Rate exceeded: too many requests in progress on this server; retry later.",
    },
    separators=(",", ":"),
).encode()
_XKS_PATH = "/kms/xks/v1/"
_XKS_THROTTLED = json.dumps(
    {
        "errorName": "ThrottlingException",
        "errorMessage": "Too many requests in progress on this proxy; retry later.",
    },
    separators=(",", ":"),
).encode()
_AMZ_JSON = b"application/x-amz-json-1.1"
# Seconds a refused connection is drained before it is closed.
_LINGER = 2.0
_TOO_LARGE_HEAD = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 31\r\n"
    b"connection: close\r\n\r\n"
    b"Request header fields too large"
)


@dataclass(frozen=True)
class Limits:
    """What one connection and one process may hold. None disables a limit."""

    header_timeout: float | None = 10.0
    body_timeout: float | None = 30.0
    limit_concurrency: int | None = 128


async def _throttled(scope: Any, receive: Any, send: Any) -> None:
    """The answer over the concurrency limit: the KMS API's ThrottlingException (400), or on
    the XKS proxy API's paths (``.../kms/xks/v1/...``) the spec's (429, errorName)."""
    xks = _XKS_PATH in str(scope.get("path", ""))
    body, status, kind = (
        (_XKS_THROTTLED, 429, b"application/json") if xks else (_THROTTLED, 400, _AMZ_JSON)
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def guarded(limits: Limits) -> Callable[..., GuardedHttpToolsProtocol]:
    """The protocol factory for uvicorn's ``Config(http=...)``, with ``limits``."""
    return functools.partial(GuardedHttpToolsProtocol, limits=limits)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines and limits of the module docstring."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: Limits = limits or Limits()
        # uvicorn's check would count idle connections too: ours counts requests only.
        self.limit_concurrency = None
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._reading_head = False
        self._refused = False

    # -- the deadline ------------------------------------------------------------------------
    def _arm(self, seconds: float | None, what: str) -> None:
        self._disarm()
        if seconds is not None:
            self._deadline = self.loop.call_later(seconds, self._expired, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("closing a connection from %s: %s", _peer(self.client), what)
            self.transport.close()

    def _await_head(self) -> None:
        self._reading_head = True
        self._head_bytes = 0
        self._arm(self.limits.header_timeout, "no complete request head in time")

    # -- uvicorn's hooks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a 431: read and drop until the client closes
        super().data_received(data)
        if self._reading_head and not self.transport.is_closing():
            # Counted after parsing: a head and its body often arrive in one read.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                log.info(
                    "refusing a request head over %d bytes from %s",
                    MAX_HEAD_BYTES,
                    _peer(self.client),
                )
                self._refuse_head()

    def _refuse_head(self) -> None:
        """Answer 431 and close, lingering: closing a socket with unread input sends a TCP
        reset, which can destroy the answer before the client reads it. So: the answer, our
        end of the stream, then drop what still comes for a moment before closing."""
        self._refused = True
        self._reading_head = False
        self.transport.write(_TOO_LARGE_HEAD)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(_LINGER, "lingering after 431")

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._arm(self.limits.body_timeout, "the request body did not arrive in time")
        limit = self.limits.limit_concurrency
        if limit is not None and len(self.tasks) >= limit:
            log.warning("%d requests in progress: answering ThrottlingException", len(self.tasks))
            app = self.app
            self.app = _throttled  # read by the superclass's method just below
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

        if self.cycle is not None:
            self.cycle.transport = _Corked(self.transport)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._disarm()  # the request is in; the answer takes the time it takes
        super().on_message_complete()

    def on_response_complete(self) -> None:
        corked = getattr(self.cycle, "transport", None)
        if isinstance(corked, _Corked):
            corked.flush()  # a response without a body write (HEAD) ends with its head
        super().on_response_complete()
        if not self.transport.is_closing():
            # uvicorn's keep-alive timer closes a connection that stays silent; this one
            # closes a connection that dribbles the next request's head.
            self._await_head()


class _Corked:
    """The transport as one response sees it: the head is held back until the body is
    written, so a response leaves in one send() rather than two (uvicorn writes them
    separately). The second send() and the client's second wake-up cost 10-20% of the server's
    CPU per GenerateDataKey (one worker, 32 connections: 336-379 -> 301-308 us)."""

    __slots__ = ("_transport", "_head")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head = b""

    def write(self, data: bytes) -> None:
        if (
            not self._head
            and data.startswith(b"HTTP/1.1 ")
            and not data.startswith(
                b"HTTP/1.1 100 "  # "100 Continue": the client waits for it before its body
            )
        ):
            self._head = data
            return
        if self._head:
            data, self._head = self._head + data, b""
        self._transport.write(data)

    def flush(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"
