"""Load for the fault, soak and race tests: clients on keep-alive connections sending SigV4-signed
requests from threads, every outcome recorded.

    with Load(srv, clients=16, work=my_loop) as load:   # my_loop(client, stop) per thread
        time.sleep(5)
    load.outcomes   # [Outcome(op, status, code, seconds, started), ...]

A request whose connection broke before an answer came is recorded with status 0: its effect
is unknown (the tests never count it as acknowledged).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from server import Response, ServerProcess


@dataclass(frozen=True)
class Outcome:
    op: str
    status: int  # 0: no answer (connection broke)
    code: str | None  # AWS error __type
    seconds: float
    started: float  # time.monotonic()


class Client:
    """One keep-alive connection to ``srv``; a broken one is replaced on the next call."""

    def __init__(self, srv: ServerProcess, timeout: float = 30.0) -> None:
        self.srv = srv
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.outcomes: list[Outcome] = []

    def call(self, op: str, params: dict[str, Any]) -> Response:
        """POST one operation; a ``Response`` with status 0 if no answer came."""
        body = json.dumps(params).encode()
        headers = self.srv.signed_headers(op, body)
        started = time.monotonic()
        reused = self.conn is not None
        try:
            answer = self._send(body, headers)
        except (OSError, http.client.HTTPException):
            self.close()
            if not reused:
                answer = Response(0, {}, b"")
            else:
                # The server closed an idle keep-alive connection as we reused it (every
                # HTTP client retries that case once). Only if nothing can have been read:
                # a request sent on a socket closed before it is not ambiguous.
                try:
                    answer = self._send(body, headers)
                except (OSError, http.client.HTTPException):
                    self.close()
                    answer = Response(0, {}, b"")
        self.outcomes.append(
            Outcome(op, answer.status, answer.error[0], time.monotonic() - started, started)
        )
        return answer

    def _send(self, body: bytes, headers: dict[str, str]) -> Response:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=self.timeout)
        self.conn.request("POST", "/", body, headers)
        reply = self.conn.getresponse()
        data = reply.read()
        if (reply.getheader("connection") or "").lower() == "close":
            self.close()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


Work = Callable[[Client, threading.Event], None]


class Load:
    """``clients`` threads, each running ``work(client, stop)`` until ``stop`` is set."""

    def __init__(self, srv: ServerProcess, clients: int, work: Work) -> None:
        self.clients = [Client(srv) for _ in range(clients)]
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(c, work), daemon=True) for c in self.clients
        ]

    def _run(self, client: Client, work: Work) -> None:
        try:
            while not self.stop.is_set():
                work(client, self.stop)
        except BaseException as exc:  # a failed assertion in a worker fails the test
            self.errors.append(exc)
            self.stop.set()
        finally:
            client.close()

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish()

    def finish(self, timeout: float = 60.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self.threads if t.is_alive()]
        assert not alive, f"{len(alive)} clients still waiting for an answer: a hang"
        if self.errors:
            raise self.errors[0]

    @property
    def outcomes(self) -> list[Outcome]:
        return sorted((o for c in self.clients for o in c.outcomes), key=lambda o: o.started)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def plaintext(n: int = 32) -> bytes:
    return os.urandom(n)


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS of /proc/<pid>/status), in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")
