"""Keys created through one server worker (or another process) are usable at once through
every other worker: the store vouches for them, the worker's token finds them (one search
of the token on a thread, never on the event loop, and a re-initialisation of the library if
SoftHSM2's view of the token lags behind), and no client sees an error meanwhile."""

from __future__ import annotations

import base64
import random
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from faults import clean_env
from loadgen import Client
from server import REPO, ServerProcess

CREATE_ELSEWHERE = r"""
import sys
from hsmkms.kms import KMS
kms = KMS(home=sys.argv[1])
print(kms.create_key()["KeyMetadata"]["KeyId"])
kms.close()
"""


# Two worker processes serve each test here: seconds, kept out of the fast subset.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("hsmkms-two-workers"), workers=2) as srv:
        yield srv


def ok(answer: Any) -> dict[str, Any]:
    assert answer.status == 200, answer
    return answer.json  # type: ignore[no-any-return]


def round_trip(client: Client, key_id: str) -> None:
    made = ok(client.call("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256"}))
    back = ok(client.call("Decrypt", {"CiphertextBlob": made["CiphertextBlob"]}))
    assert back["Plaintext"] == made["Plaintext"]
    assert back["KeyId"].endswith(key_id)


def test_keys_created_in_parallel_work_through_every_connection(two_workers):
    srv = two_workers
    clients = [srv.client() for _ in range(6)]
    with ThreadPoolExecutor(len(clients)) as pool:
        keys = list(
            pool.map(lambda c: c.create_key()["KeyMetadata"]["KeyId"], clients + clients[:4])
        )

        def use_all(client: Any) -> int:
            for key_id in random.sample(keys, len(keys)):
                made = client.generate_data_key(KeyId=key_id, KeySpec="AES_256")
                back = client.decrypt(CiphertextBlob=made["CiphertextBlob"])
                assert back["Plaintext"] == made["Plaintext"]
            return len(keys)

        # boto3 raises on any error answer (retries are off): a clean run is zero errors.
        assert sum(pool.map(use_all, clients)) == len(keys) * len(clients)


def _worker_of(srv: ServerProcess, clients: list[Client]) -> dict[int, list[Client]]:
    """The worker process holding each client's connection, by its pid."""
    psutil = pytest.importorskip("psutil")
    workers = psutil.Process(srv.proc.pid).children(recursive=True)
    held: dict[int, int] = {}  # client port -> worker pid
    for worker in workers:
        for conn in worker.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == srv.port and conn.raddr:
                held[conn.raddr.port] = worker.pid
    out: dict[int, list[Client]] = {}
    for client in clients:
        assert client.conn is not None and client.conn.sock is not None
        out.setdefault(held[client.conn.sock.getsockname()[1]], []).append(client)
    return out


def test_a_key_created_through_one_worker_is_usable_at_once_through_the_other(two_workers):
    srv = two_workers
    clients = [Client(srv) for _ in range(16)]  # new connections spread over both workers
    try:
        for client in clients:
            ok(client.call("GenerateRandom", {"NumberOfBytes": 8}))  # connects it
        by_worker = _worker_of(srv, clients)
        assert len(by_worker) == 2, f"all 16 connections on one worker: {list(by_worker)}"
        first, second = (found[0] for found in by_worker.values())
        for maker, user in [(first, second), (second, first)] * 3:
            key_id = ok(maker.call("CreateKey", {}))["KeyMetadata"]["KeyId"]
            round_trip(user, key_id)  # the very next request, on the other worker
            round_trip(maker, key_id)
    finally:
        for client in clients:
            client.close()


def test_a_key_created_by_another_process_is_served_over_http(two_workers):
    """Neither worker has seen the key's token object: the first request's inline attempt
    declines, and the call answers 200 from a worker thread."""
    srv = two_workers
    done = subprocess.run(
        [sys.executable, "-c", CREATE_ELSEWHERE, str(srv.home)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    key_id = done.stdout.strip().splitlines()[-1]
    clients = [Client(srv) for _ in range(4)]
    try:
        for client in clients:
            round_trip(client, key_id)
        plaintext = base64.b64encode(b"over http").decode()
        blob = ok(clients[0].call("Encrypt", {"KeyId": key_id, "Plaintext": plaintext}))
        back = ok(clients[-1].call("Decrypt", {"CiphertextBlob": blob["CiphertextBlob"]}))
        assert back["Plaintext"] == plaintext
    finally:
        for client in clients:
            client.close()
    assert "Traceback" not in srv.log()
