"""The servers a benchmark run starts on loopback: hsmkms on a fresh embedded home, moto's
standalone server as the peer, and trivial servers that measure the load generator and the
HTTP framework. The tests start hsmkms through the same :class:`HsmkmsServer`
(tests/server.py adds their request helpers)."""

from __future__ import annotations

import configparser
import http.client
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.load import Endpoint

HOST = "127.0.0.1"  # loopback only: the benchmark never sends traffic elsewhere
ROOT = Path(__file__).resolve().parent.parent  # servers run from here (bench.trivial imports)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def listening_workers(pid: int, port: int) -> int:
    """How many processes under ``pid`` (itself excluded) listen on ``port``: with a socket per
    worker (hsmkms/api/workers.py) a worker receives connections only once it listens, so a
    server whose first worker answers /health may still have others starting."""
    import psutil

    count = 0
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            conns = child.net_connections(kind="tcp")
        except psutil.Error:
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
               for c in conns):  # fmt: skip
            count += 1
    return count


class Server:
    """A child process serving HTTP on ``HOST:port``; a context manager that stops it."""

    name = "server"
    cwd = ROOT  # where it runs: ``python -m hsmkms`` imports the hsmkms/ found here first
    start_timeout = 120.0  # seconds from spawn to ready before giving up
    stop_timeout = 20.0  # seconds from SIGTERM to SIGKILL

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"{self.name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0  # seconds from spawn to ready

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def ready(self) -> bool:
        raise NotImplementedError

    def endpoint(self) -> Endpoint:
        raise NotImplementedError

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(HOST, self.port, timeout=timeout)

    def log(self) -> str:
        """What the server wrote so far ("" if nothing)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float | None = None) -> Self:
        timeout = self.start_timeout if timeout is None else timeout
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environment(),
                cwd=self.cwd,
            )  # fmt: skip
        while time.monotonic() - began < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}; see {self.log_path}:\n"
                    + self.log()[-20000:]
                )
            try:
                if self.ready():
                    self.started_in = time.monotonic() - began
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} not ready after {timeout:g} s; see {self.log_path}:\n"
            + self.log()[-20000:]
        )

    def http_get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of ``GET path``."""
        conn = self.connection(10.0)
        try:
            conn.request("GET", path, headers=dict(headers or {}))
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by the server and its worker processes."""
        import psutil

        if self.proc is None:
            return 0.0
        total = 0.0
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        for proc in procs:
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
        return total

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class HsmkmsServer(Server):
    """``python -m hsmkms serve`` on ``home`` (made on first start: token, store, credentials),
    ready once /health answers 200 and every worker listens. ``args`` go to ``serve``; ``env``
    is added to this process's environment less its HSMKMS_* and SOFTHSM2_* variables; ``tls``
    is (certificate, key) PEM files to serve HTTPS with. The log goes to ``<home>/server.log``
    unless ``log_dir`` is given. ``operator``: write a random operator token to
    ``<home>/operator.token`` and serve with it (``operator_token_file``), so that
    :meth:`http_get` sees /health's full report and /metrics; readiness needs no token."""

    name = "hsmkms"

    def __init__(
        self,
        home: Path,
        *,
        workers: int = 1,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
        log_dir: Path | None = None,
        operator: bool = True,
    ) -> None:
        self.home = Path(home)
        super().__init__(log_dir or self.home)
        if log_dir is None:
            self.log_path = self.home / "server.log"
        self.workers = workers
        self.args = args
        self.env = dict(env or {})
        self.tls = tls
        self.operator_token = secrets.token_urlsafe(32) if operator else None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{HOST}:{self.port}"

    @property
    def credentials(self) -> Path:
        return self.home / "credentials"

    @property
    def operator_token_file(self) -> Path:
        return self.home / "operator.token"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "hsmkms", "serve", "--home", str(self.home),
            "--port", str(self.port), "--workers", str(self.workers), *self.args,
        ]  # fmt: skip
        if self.tls:
            cmd += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        return cmd

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))}
        if self.operator_token:
            env["HSMKMS_OPERATOR_TOKEN_FILE"] = str(self.operator_token_file)
        env.update(self.env)
        return env

    def http_get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of ``GET path`` as the operator (the bearer token, when there is one)."""
        bearer = {"Authorization": f"Bearer {self.operator_token}"} if self.operator_token else {}
        return super().http_get(path, {**bearer, **(headers or {})})

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if not self.tls:
            return super().connection(timeout)
        context = ssl.create_default_context(cafile=str(self.tls[0]))
        return http.client.HTTPSConnection(HOST, self.port, timeout=timeout, context=context)

    def start(self, timeout: float | None = None) -> Self:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.operator_token:
            fd = os.open(self.operator_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(self.operator_token + "\n")
            os.chmod(self.operator_token_file, 0o600)
        return super().start(timeout)

    def ready(self) -> bool:
        # Readiness as a load balancer asks it: no token, 200 or 503.
        if Server.http_get(self, "/health")[0] != 200:
            return False
        # Every worker listening, not just the first: connections opened now stay put.
        assert self.proc is not None
        return self.workers == 1 or listening_workers(self.proc.pid, self.port) >= self.workers

    def endpoint(self) -> Endpoint:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(self.credentials)
        section = parser["hsmkms"]
        return Endpoint(
            HOST,
            self.port,
            section["aws_access_key_id"],
            section["aws_secret_access_key"],
            section.get("region", "us-east-1"),
        )


class Hsmkms(HsmkmsServer):
    """hsmkms as a run serves it: on loopback, logging warnings only, with ``settings`` as
    HSMKMS_<NAME> values and its log in the run's ``log_dir``."""

    def __init__(self, home: Path, log_dir: Path, workers: int, settings: dict[str, str]) -> None:
        super().__init__(
            home, workers=workers, args=("--host", HOST, "--log-level", "warning"),
            env={f"HSMKMS_{k.upper()}": v for k, v in settings.items()}, log_dir=log_dir,
        )  # fmt: skip


def moto_command() -> list[str]:
    """moto's standalone server from this interpreter's environment."""
    exe = Path(sys.executable).parent / "moto_server"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("moto_server")
    if found:
        return [found]
    raise RuntimeError(
        "moto_server is not installed: run scripts/bench (it installs the bench extra), "
        "or pip install -e '.[bench]'"
    )


class Moto(Server):
    """moto's standalone server (Flask/Werkzeug); it accepts any credentials."""

    name = "moto"

    def command(self) -> list[str]:
        return [*moto_command(), "-H", HOST, "-p", str(self.port)]

    def ready(self) -> bool:
        return self.http_get("/moto-api/")[0] < 500

    def endpoint(self) -> Endpoint:
        return Endpoint(HOST, self.port, "AKIDBENCHMARK0000000", "bench-secret-not-checked")


class TrivialAsgi(Server):
    """uvicorn serving a trivial ASGI app, through hsmkms's own HTTP protocol class and worker
    supervisor: the ceiling of the HTTP framework before any KMS work."""

    name = "trivial-asgi"

    def __init__(self, log_dir: Path, workers: int) -> None:
        super().__init__(log_dir)
        self.workers = workers

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.trivial", HOST, str(self.port),
                "--asgi", str(self.workers)]  # fmt: skip

    def ready(self) -> bool:
        return self.http_get("/")[0] == 200

    def endpoint(self) -> Endpoint:
        return Endpoint(HOST, self.port, "AKIDBENCHMARK0000000", "trivial")


class Trivial(Server):
    """A fixed 200 answer to every request (asyncio, uvloop): the load generator's ceiling."""

    name = "trivial"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.trivial", HOST, str(self.port)]

    def ready(self) -> bool:
        return self.http_get("/")[0] == 200

    def endpoint(self) -> Endpoint:
        return Endpoint(HOST, self.port, "AKIDBENCHMARK0000000", "trivial")
