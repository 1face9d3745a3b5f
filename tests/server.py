"""A real hsmkms server for the wire tests: ``python -m hsmkms serve`` in its own process.

    with ServerProcess(home, workers=1) as srv:   # free port, waits for GET /health == 200
        srv.url, srv.identity, srv.region
        srv.post("GenerateRandom", {"NumberOfBytes": 8})   # a SigV4-signed raw request

The server's output goes to ``<home>/server.log``; :meth:`ServerProcess.log` reads it, and a
server that does not come up raises with that log in the message.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from hsmkms.home import PROFILE, Identity

REPO = Path(__file__).resolve().parent.parent
CONTENT_TYPE = "application/x-amz-json-1.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_identity(credentials: Path, profile: str = PROFILE) -> Identity:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(credentials)
    sec = parser[profile]
    return Identity(
        sec["aws_access_key_id"],
        sec["aws_secret_access_key"],
        sec.get("hsmkms_account_id", ""),
        sec.get("hsmkms_principal_arn", ""),
    )


class Response:
    """Status, headers (lower-case names) and the parsed JSON body (None if not JSON)."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json: Any = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def error(self) -> tuple[str | None, str | None]:
        data = self.json if isinstance(self.json, dict) else {}
        return data.get("__type"), data.get("message")

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body[:300]!r})"


class ServerProcess:
    def __init__(
        self,
        home: Path,
        *,
        workers: int = 1,
        region: str = "us-east-1",
        extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.home = Path(home)
        self.tls = tls  # (certificate, key) PEM files: serve HTTPS
        self.port = free_port()
        self.workers = workers
        self.region = region
        self.extra_args = extra_args
        self.env = dict(env or {})
        self.log_path = self.home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> Path:
        return self.home / "credentials"

    @property
    def identity(self) -> Identity:
        return read_identity(self.credentials)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- life -------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))}
        env.update(self.env)
        env["HSMKMS_REGION"] = self.region
        cmd = [
            sys.executable, "-m", "hsmkms", "serve",
            "--home", str(self.home),
            "--port", str(self.port),
            "--workers", str(self.workers),
            *self.extra_args,
        ]  # fmt: skip
        if self.tls:
            cmd += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO)
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"hsmkms serve exited with {self.proc.returncode}:\n{self.log()}"
                )
            try:
                if self.get("/health").status == 200 and self._all_workers_listen():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hsmkms serve not healthy after {timeout}s:\n{self.log()}")

    def _all_workers_listen(self) -> bool:
        """With several workers, /health answers once the first is up; each worker has a
        socket of its own and gets connections only once it listens, so wait for them all."""
        if self.workers == 1:
            return True
        from hsmkms.bench.servers import listening_workers

        assert self.proc is not None
        return listening_workers(self.proc.pid, self.port) >= self.workers

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- requests ---------------------------------------------------------------------------
    def raw(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        conn: http.client.HTTPConnection
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls[0]))
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path: str) -> Response:
        return self.raw("GET", path)

    def signed_headers(
        self,
        operation: str | None,
        body: bytes,
        *,
        identity: Identity | None = None,
        region: str | None = None,
        service: str = "kms",
        when: datetime | None = None,
        extra: Mapping[str, str] | None = None,
        path: str = "/",
    ) -> dict[str, str]:
        """Headers of a request signed as botocore signs it (``when`` fakes the clock)."""
        ident = identity or self.identity
        headers = {"Content-Type": CONTENT_TYPE}
        if operation is not None:
            headers["X-Amz-Target"] = f"TrentService.{operation}"
        headers.update(extra or {})
        request = AWSRequest(method="POST", url=self.url + path, data=body, headers=headers)
        auth = SigV4Auth(
            Credentials(ident.access_key_id, ident.secret_access_key),
            service,
            region or self.region,
        )
        with _clock(when):
            auth.add_auth(request)
        return dict(request.headers.items())

    def post(
        self,
        operation: str | None,
        params: Any = None,
        *,
        body: bytes | None = None,
        **sign: Any,
    ) -> Response:
        """POST / signed; ``body`` overrides the JSON of ``params`` (for broken bodies)."""
        data = body if body is not None else json.dumps(params or {}).encode()
        return self.raw("POST", "/", data, self.signed_headers(operation, data, **sign))

    def client(self, **config: Any) -> Any:
        """A boto3 KMS client for this server (``config`` goes to botocore's Config)."""
        import boto3
        from botocore.config import Config

        ident = self.identity
        return boto3.client(
            "kms",
            endpoint_url=self.url,
            verify=str(self.tls[0]) if self.tls else None,
            region_name=self.region,
            aws_access_key_id=ident.access_key_id,
            aws_secret_access_key=ident.secret_access_key,
            config=Config(retries={"max_attempts": 1}, **config),
        )


@contextmanager
def _clock(when: datetime | None) -> Any:
    if when is None:
        yield
        return
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        yield
