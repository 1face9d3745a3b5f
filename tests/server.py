"""A real hsmkms server for the wire tests: ``python -m hsmkms serve`` in its own process.

    with ServerProcess(home, workers=1) as srv:   # free port, waits for GET /health == 200
        srv.url, srv.identity, srv.region
        srv.post("GenerateRandom", {"NumberOfBytes": 8})   # a SigV4-signed raw request
        srv.operator_get("/metrics")                       # with the operator token

Starting, waiting and stopping are the benchmark's launcher (:class:`bench.servers.HsmkmsServer`,
one for both); this adds what the tests send, signed by botocore. The server's output goes to
``<home>/server.log``; :meth:`ServerProcess.log` reads it, and a server that does not come up
raises with that log in the message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bench.servers import HsmkmsServer
from hsmkms.home import PROFILE, Identity

REPO = Path(__file__).resolve().parent.parent
CONTENT_TYPE = "application/x-amz-json-1.1"


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


# The master-key mode of the suite's run (HSMKMS_TEST_MASTER_KEYS, tests/conftest.py): servers
# get the test process's environment less its HSMKMS_* variables, so it is passed on here.
_MODE = (
    {"HSMKMS_MASTER_KEYS": os.environ["HSMKMS_TEST_MASTER_KEYS"]}
    if os.environ.get("HSMKMS_TEST_MASTER_KEYS", "token") != "token"
    else {}
)


class ServerProcess(HsmkmsServer):
    """``hsmkms serve`` on ``home`` serving ``region``, ``extra_args`` passed on, ``env`` added
    (HSMKMS_* and SOFTHSM2_* of the test process are not)."""

    start_timeout = 60.0
    stop_timeout = 15.0

    def __init__(
        self,
        home: Path,
        *,
        workers: int = 1,
        region: str = "us-east-1",
        extra_args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,  # (certificate, key) PEM files: serve HTTPS
        operator: bool = True,  # serve with an operator token (HsmkmsServer)
    ) -> None:
        super().__init__(
            home,
            workers=workers,
            args=extra_args,
            env={**_MODE, **(env or {}), "HSMKMS_REGION": region},
            tls=tls,
            operator=operator,
        )
        self.region = region
        self.extra_args = extra_args

    @property
    def identity(self) -> Identity:
        return read_identity(self.credentials)

    # -- requests ---------------------------------------------------------------------------
    def raw(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path: str) -> Response:
        """``GET path`` as anyone: no Authorization header."""
        return self.raw("GET", path)

    def operator_get(self, path: str) -> Response:
        """``GET path`` with the operator's bearer token (/health's full report, /metrics)."""
        assert self.operator_token, "this server has no operator token"
        return self.raw("GET", path, headers={"Authorization": f"Bearer {self.operator_token}"})

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

    def client(self, region: str | None = None, **config: Any) -> Any:
        """A boto3 KMS client for this server in ``region`` (default: the server's default
        Region); ``config`` goes to botocore's Config."""
        import boto3
        from botocore.config import Config

        ident = self.identity
        return boto3.client(
            "kms",
            endpoint_url=self.url,
            verify=str(self.tls[0]) if self.tls else None,
            region_name=region or self.region,
            aws_access_key_id=ident.access_key_id,
            aws_secret_access_key=ident.secret_access_key,
            config=Config(retries={"total_max_attempts": 1}, **config),
        )


@contextmanager
def _clock(when: datetime | None) -> Any:
    if when is None:
        yield
        return
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        yield
