"""The load generator: SigV4-signed AWS JSON 1.1 requests on keep-alive HTTP/1.1
connections, one asyncio task per connection, one connection per unit of concurrency.

Cheap by construction: requests are written as bytes with a hand-made head (no HTTP client
library), responses are read with ``readuntil``/``readexactly``, and the signer is
:mod:`bench.signer`. What it costs is measured against a trivial server (see
:class:`bench.servers.Trivial`) and printed with every run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from bench.signer import Signer

# A request to send: (X-Amz-Target, JSON body).
Request = tuple[str, bytes]
# Makes the next request; called on the event loop, so it must be quick.
Workload = Callable[[], Request]

T = TypeVar("T")

TARGET_PREFIX = "TrentService."
TIMEOUT = 60.0  # a cell never waits longer than this past its end for answers


class _Clock:
    """X-Amz-Date, formatted once per second rather than per request."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def amz_date(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._text = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
        return self._text


@dataclass
class Endpoint:
    """Where to send and how to sign."""

    host: str
    port: int
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def signer(self) -> Signer:
        return Signer(
            self.access_key_id, self.secret_access_key, self.region, f"{self.host}:{self.port}"
        )


@dataclass
class Result:
    """One cell: what completed inside the measured window, and how long each took."""

    seconds: float
    latencies: list[float] = field(default_factory=list)  # of successful requests, seconds
    errors: Counter[str] = field(default_factory=Counter)
    answered: int = 0  # every answer of the cell, warm-up included (for CPU per request)
    server_cpu: float | None = None  # the server's CPU seconds over the cell, when measured

    @property
    def cpu_per_request(self) -> float | None:
        """The server's CPU seconds per answered request, warm-up included."""
        if self.server_cpu is None or not self.answered:
            return None
        return self.server_cpu / self.answered

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def total(self) -> int:
        return self.ok + sum(self.errors.values())

    @property
    def rate(self) -> float:
        """Successful operations per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index]


class Connection:
    """One keep-alive HTTP/1.1 connection that sends signed KMS requests."""

    def __init__(self, endpoint: Endpoint, clock: _Clock | None = None) -> None:
        self.endpoint = endpoint
        self.signer = endpoint.signer()
        self.clock = clock or _Clock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.endpoint.host, self.endpoint.port
            )
        return self._reader, self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def send(self, target: str, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, body). Reconnects once when the server closed an idle connection."""
        headers = self.signer.headers(target, body, self.clock.amz_date())
        head = "POST / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = f"{head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body
        for attempt in (1, 2):
            reader, writer = await self._open()
            try:
                writer.write(data)
                status, payload, keep = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    raise
                continue
            if not keep:
                self.close()
            return status, payload
        raise AssertionError("unreachable")

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One operation for set-up work: the parsed answer, or RuntimeError on an error."""
        status, payload = await self.send(TARGET_PREFIX + operation, json.dumps(params).encode())
        if status != 200:
            raise RuntimeError(f"{operation} answered {status}: {payload[:300]!r}")
        answer: dict[str, Any] = json.loads(payload)
        return answer


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    first, _, rest = head.partition(b"\r\n")
    status = int(first.split(b" ", 2)[1])
    length = -1
    keep = True
    for line in rest.split(b"\r\n"):
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"connection" and value.strip().lower() == b"close":
            keep = False
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            return status, await _read_chunked(reader), keep
    if length < 0:
        return status, await reader.read(), False  # delimited by close
    return status, await reader.readexactly(length), keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def error_name(status: int, payload: bytes) -> str:
    """``<status> <__type>`` of an AWS error answer; the body's start when it is not JSON."""
    try:
        kind = json.loads(payload).get("__type", "?")
        kind = str(kind).rsplit("#", 1)[-1]
    except (ValueError, AttributeError):
        kind = "non-JSON body"
    return f"{status} {kind}"


async def run_cell(
    endpoint: Endpoint | Sequence[Endpoint],
    workload: Workload,
    concurrency: int,
    seconds: float,
    *,
    warmup: float = 0.5,
    max_requests: int | None = None,
) -> Result:
    """``concurrency`` connections send ``workload``'s requests back to back for
    ``warmup + seconds``; what completes inside the measured window counts, with its whole
    latency. Counting completions (as wrk does) rather than requests that both start and end
    inside is what keeps slow requests honest: at 32 connections an RSA-4096 request takes
    seconds, and those begun in the warm-up would otherwise never count though their work
    fills the window. ``max_requests`` instead measures exactly that many requests, from the
    first sent after the warm-up, however long they take (for the key pair pool: measure only
    while it has stock). Several endpoints (the nodes of issue 18) share the connections in
    turn: connection i goes to endpoint i mod n."""
    clock = _Clock()
    endpoints = [endpoint] if isinstance(endpoint, Endpoint) else list(endpoint)
    conns = [Connection(endpoints[i % len(endpoints)], clock) for i in range(concurrency)]
    now = time.monotonic
    start = now() + warmup
    end = start + seconds
    result = Result(seconds=seconds)
    budget = [max_requests if max_requests is not None else -1]

    async def worker(conn: Connection) -> None:
        while (t0 := now()) < end:
            measured = t0 >= start
            if measured and budget[0] >= 0:
                if budget[0] == 0:
                    return
                budget[0] -= 1
            target, body = workload()
            try:
                status, payload = await conn.send(target, body)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status, payload = -1, type(exc).__name__.encode()
            t1 = now()
            result.answered += 1
            if measured if max_requests is not None else start <= t1 <= end:
                if status == 200:
                    result.latencies.append(t1 - t0)
                elif status < 0:
                    result.errors[f"connection {payload.decode()}"] += 1
                else:
                    result.errors[error_name(status, payload)] += 1

    tasks = [asyncio.create_task(worker(c)) for c in conns]
    try:
        done, pending = await asyncio.wait(tasks, timeout=warmup + seconds + TIMEOUT)
        for task in pending:
            task.cancel()
            result.errors["timeout (no answer)"] += 1
        for task in done:
            task.result()
    finally:
        for conn in conns:
            conn.close()
    if max_requests is not None and budget[0] == 0:
        # The cell ended by count: its window is as long as it took.
        result.seconds = max(1e-9, now() - start)
    return result


def on_uvloop(coro: Coroutine[Any, Any, T]) -> T:
    """Runs ``coro`` to the end, on uvloop when it is there: the generator's own cost matters."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
