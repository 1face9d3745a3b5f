"""Clients that hold connections without finishing a request (idle, slowloris, slow bodies),
heads too large, bodies too large, more requests than the server takes at once: the server
stays up, serves a normal client meanwhile, and lets go of every such connection in time."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from server import ServerProcess

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 2.0
LIMIT = 3


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("slow-clients"),
        extra_args=(
            "--header-timeout",
            str(HEADER_TIMEOUT),
            "--body-timeout",
            str(BODY_TIMEOUT),
            "--limit-concurrency",
            str(LIMIT),
        ),
    )
    with server:
        yield server


def _open_fds(srv: ServerProcess) -> int:
    assert srv.proc is not None
    return len(os.listdir(f"/proc/{srv.proc.pid}/fd"))


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes ``sock`` before ``deadline`` (whatever it sent first)."""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return False
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True
    return False


def _connect(srv: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=10)


def test_a_client_is_served_while_200_idle_and_slowloris_connections_are_open(
    srv: ServerProcess,
):
    baseline = _open_fds(srv)
    idle = [_connect(srv) for _ in range(100)]
    slow = [_connect(srv) for _ in range(100)]
    stop = threading.Event()

    def dribble() -> None:
        # A slowloris: a head that never ends, one header line at a time.
        for sock in slow:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        n = 0
        while not stop.wait(0.2):
            n += 1
            for sock in slow:
                try:
                    sock.sendall(b"X-Slow-%d: %d\r\n" % (n, n))
                except OSError:
                    pass  # closed by the server: what we want

    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    opened = time.monotonic()
    try:
        # The server really holds them (it accepts from its backlog as it gets to it).
        wait = time.monotonic() + 3
        while _open_fds(srv) < baseline + 150 and time.monotonic() < wait:
            time.sleep(0.05)
        assert _open_fds(srv) >= baseline + 150
        times = []
        for _ in range(20):
            started = time.monotonic()
            answer = srv.post("GenerateRandom", {"NumberOfBytes": 16})
            times.append(time.monotonic() - started)
            assert answer.status == 200, answer
        assert max(times) < 1.0, times
        # Every one of them is let go once its head is overdue.
        deadline = opened + HEADER_TIMEOUT + 5
        assert all(_closed_by_server(s, deadline) for s in idle + slow)
    finally:
        stop.set()
        dribbler.join()
        for sock in idle + slow:
            sock.close()
    # ... and the server holds no more sockets than before.
    deadline = time.monotonic() + 5
    while _open_fds(srv) > baseline + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _open_fds(srv) <= baseline + 2
    assert srv.post("GenerateRandom", {"NumberOfBytes": 8}).status == 200


def test_a_head_larger_than_64_kib_is_refused_and_closed(srv: ServerProcess):
    with _connect(srv) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for i in range(200):
                sock.sendall(b"X-Big-%d: %s\r\n" % (i, b"a" * 1000))
        except OSError:
            pass  # the server answered and closed before we were done
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert srv.post("GenerateRandom", {"NumberOfBytes": 8}).status == 200


def test_a_body_that_does_not_arrive_is_cut_off(srv: ServerProcess):
    body = b'{"NumberOfBytes": 8}'
    headers = srv.signed_headers("GenerateRandom", body)
    head = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host"
    )
    with _connect(srv) as sock:
        sock.sendall(head.encode() + b"Content-Length: 1000\r\n\r\n" + body)
        started = time.monotonic()
        assert _closed_by_server(sock, started + BODY_TIMEOUT + 5)
        assert time.monotonic() - started >= BODY_TIMEOUT - 0.5


def test_oversized_bodies_are_refused_and_the_server_stays_up(srv: ServerProcess):
    big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    headers = srv.signed_headers("GenerateRandom", big)
    head = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host"
    )
    # The head and a first part of the body: the server answers without waiting for more
    # (the rest would only meet a closed socket and a TCP reset).
    request = head.encode() + f"Content-Length: {len(big)}\r\n\r\n".encode() + big[:4096]

    def send(_: int) -> bytes:
        with _connect(srv) as sock:
            sock.sendall(request)
            reply = b""
            try:
                while chunk := sock.recv(65536):
                    reply += chunk
            except OSError:
                pass
            return reply.partition(b"\r\n")[0]

    with ThreadPoolExecutor(LIMIT - 1) as pool:  # more at once would be throttled
        status_lines = set(pool.map(send, range(16)))
    assert status_lines == {b"HTTP/1.1 413 Request Entity Too Large"}
    assert srv.post("GenerateRandom", {"NumberOfBytes": 8}).status == 200


def test_requests_beyond_the_limit_are_throttled_as_aws_does(srv: ServerProcess):
    key_id = srv.client().create_key()["KeyMetadata"]["KeyId"]

    def pair() -> tuple[int, str | None]:
        # An RSA-4096 pair takes a good fraction of a second: requests overlap.
        answer = srv.post("GenerateDataKeyPair", {"KeyId": key_id, "KeyPairSpec": "RSA_4096"})
        return answer.status, answer.error[0]

    with ThreadPoolExecutor(10) as pool:
        outcomes = list(pool.map(lambda _: pair(), range(10)))
    assert {o for o in outcomes if o[0] != 200} == {(400, "ThrottlingException")}
    assert sum(1 for o in outcomes if o[0] == 200) >= LIMIT
    # boto3's retries absorb it: a throttled client succeeds with its default retry policy.
    import boto3
    from botocore.config import Config

    ident = srv.identity
    patient = boto3.client(
        "kms",
        endpoint_url=srv.url,
        region_name=srv.region,
        aws_access_key_id=ident.access_key_id,
        aws_secret_access_key=ident.secret_access_key,
        config=Config(retries={"mode": "standard", "max_attempts": 10}),
    )
    with ThreadPoolExecutor(8) as pool:
        done = list(
            pool.map(
                lambda _: patient.generate_data_key_pair(KeyId=key_id, KeyPairSpec="RSA_3072"),
                range(8),
            )
        )
    assert len(done) == 8


def test_the_limits_are_settings(tmp_path: Path):
    from hsmkms.config import ConfigError, Settings

    s = Settings.load(env={"HSMKMS_HEADER_TIMEOUT": "3", "HSMKMS_LIMIT_CONCURRENCY": "7"})
    assert (s.header_timeout, s.limit_concurrency) == (3.0, 7)
    with pytest.raises(ConfigError):
        Settings.load(env={"HSMKMS_LIMIT_CONCURRENCY": "0"})
