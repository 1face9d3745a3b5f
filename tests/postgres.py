"""A throwaway PostgreSQL cluster for the tests: initdb in a temporary directory, a free port on
loopback, trust authentication, stopped and removed at the end. Debian's postgresql package
provides the binaries (scripts/_setup.sh installs it). As root (CI), the server runs as the
package's ``postgres`` user, since PostgreSQL refuses to run as root.

``HSMKMS_TEST_POSTGRES`` (a URL) names a server to use instead; the tests then make their
databases in it."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package")
    return path


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One running cluster; :meth:`database` makes a fresh database in it."""

    def __init__(self, base_url: str, datadir: Path | None, port: int) -> None:
        self.base_url = base_url  # the maintenance database's URL
        self.datadir = datadir
        self.port = port

    def database(self) -> str:
        """A new, empty database's URL."""
        import psycopg

        name = f"hsmkms_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.base_url.rsplit("/", 1)[0] + f"/{name}"

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on this cluster (stop, start, restart): the tests that take the
        database away under load."""
        assert self.datadir is not None, "an external server cannot be restarted here"
        subprocess.run(
            [
                *_as_server_user(),
                _bin("pg_ctl"),
                "-D",
                str(self.datadir),
                "-w",
                "-t",
                "30",
                "-l",
                str(self.datadir / "log"),
                *args,
            ],  # fmt: skip
            check=True,
            capture_output=True,
        )


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("HSMKMS_TEST_POSTGRES")
    if external:
        yield Cluster(external, None, 0)
        return
    top = Path(tempfile.mkdtemp(prefix="hsmkms-pg-"))
    datadir = top / "data"
    datadir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(top, "postgres")
        shutil.chown(datadir, "postgres")
    port = _free_port()
    user = _as_server_user()
    subprocess.run(
        [
            *user,
            _bin("initdb"),
            "-D",
            str(datadir),
            "-U",
            "hsmkms",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    with open(datadir / "postgresql.conf", "a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{top}'\n"
            "fsync = on\nmax_connections = 200\nshared_buffers = 32MB\n"
        )
    made = Cluster(f"postgresql://hsmkms@127.0.0.1:{port}/postgres", datadir, port)
    made.pg_ctl("start")
    try:
        _wait(made.base_url)
        yield made
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            made.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(top, ignore_errors=True)


def _wait(url: str, timeout: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
