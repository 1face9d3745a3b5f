"""Several nodes on one PostgreSQL store and one token (issue 18): two ``hsmkms serve``
processes on separate homes, the second pointed at the first's SoftHSM2 token (as a network
HSM is shared), PINs and credentials, both on one throwaway PostgreSQL database.

A key made through node A is usable through node B at once; a change made through one is
seen by the other's cache by the store's signal; alias races across nodes have one winner;
kill -9 of a node under writes loses no acknowledged write; PostgreSQL restarted under load
gives errors, then recovery, without restarting the nodes."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from helpers import raises
from postgres import cluster
from server import ServerProcess


class Node(ServerProcess):
    """A node on its own home that shares ``first``'s token, PINs and credentials."""

    def __init__(self, home: Path, store: str, first: Path | None = None, **kw: object) -> None:
        env = {"HSMKMS_STORE": store, "HSMKMS_CACHE_TTL": "0.2"}
        if first is not None:
            env.update(
                HSMKMS_SOFTHSM_CONF=str(first / "softhsm2.conf"),
                HSMKMS_PIN_FILE=str(first / "user.pin"),
                HSMKMS_CREDENTIALS_FILE=str(first / "credentials"),
            )
        super().__init__(home, env=env, **kw)  # type: ignore[arg-type]
        self.first = first or home

    @property
    def credentials(self) -> Path:
        return self.first / "credentials"


@pytest.fixture(scope="module")
def nodes(postgres, tmp_path_factory: pytest.TempPathFactory):
    store = postgres.database()
    base = tmp_path_factory.mktemp("nodes")
    a = Node(base / "a", store).start()
    b = Node(base / "b", store, first=base / "a").start()
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


def test_a_key_made_through_one_node_is_usable_through_the_other_at_once(nodes):
    a, b = (n.client() for n in nodes)
    for _ in range(5):
        key = a.create_key()["KeyMetadata"]["KeyId"]
        blob = b.encrypt(KeyId=key, Plaintext=b"from b")["CiphertextBlob"]  # same second
        assert a.decrypt(CiphertextBlob=blob)["Plaintext"] == b"from b"
        assert b.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    # A change through A reaches B's cache by the store's signal, well within its ttl.
    a.disable_key(KeyId=key)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            b.encrypt(KeyId=key, Plaintext=b"x")
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "DisabledException"
            break
        time.sleep(0.05)
    else:
        pytest.fail("node B kept using a key node A disabled")
    # Multi-Region keys and their replicas, across nodes.
    east = a.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    a.replicate_key(KeyId=east, ReplicaRegion="us-west-2")
    west = nodes[1].client("us-west-2")
    blob = a.encrypt(KeyId=east, Plaintext=b"east")["CiphertextBlob"]
    assert west.decrypt(CiphertextBlob=blob)["Plaintext"] == b"east"


def test_an_alias_race_across_nodes_has_one_winner(nodes):
    a, b = (n.client() for n in nodes)
    keys = [a.create_key()["KeyMetadata"]["KeyId"] for _ in range(2)]
    for round_ in range(10):
        name = f"alias/race-{round_}-{keys[0][:8]}"
        barrier = threading.Barrier(2)

        def create(client, key_id, name=name, barrier=barrier):
            barrier.wait()
            try:
                client.create_alias(AliasName=name, TargetKeyId=key_id)
                return "ok"
            except ClientError as exc:
                return exc.response["Error"]["Code"]

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(create, (a, b), keys))
        assert outcomes == ["AlreadyExistsException", "ok"], outcomes
        target = a.describe_key(KeyId=name)["KeyMetadata"]["KeyId"]
        assert b.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == target


def test_kill_9_of_a_node_under_writes_loses_no_acknowledged_write(postgres, tmp_path: Path):
    store = postgres.database()
    a = Node(tmp_path / "a", store).start()
    b = Node(tmp_path / "b", store, first=tmp_path / "a").start()
    acknowledged: list[tuple[str, bytes]] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        client = a.client()
        while not stop.is_set():
            try:
                key = client.create_key(Description=f"writer {n}")["KeyMetadata"]["KeyId"]
                blob = client.encrypt(KeyId=key, Plaintext=b"acked")["CiphertextBlob"]
            except Exception:
                return  # the node is gone: what was acknowledged is counted below
            acknowledged.append((key, blob))

    try:
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert len(acknowledged) >= 20
        other = b.client()
        for key, blob in acknowledged:
            assert other.describe_key(KeyId=key)["KeyMetadata"]["Description"].startswith("writer")
            assert other.decrypt(CiphertextBlob=blob)["Plaintext"] == b"acked"
    finally:
        stop.set()
        b.stop()
        a.stop()


def test_postgresql_restarted_under_load_errors_then_recovers(tmp_path: Path):
    with cluster() as own:
        if own.datadir is None:
            pytest.skip("HSMKMS_TEST_POSTGRES names a server this test cannot restart")
        store = own.database()
        node = Node(
            tmp_path / "a", store, extra_args=()
        )  # its own cluster: the restart disturbs no other test
        node.env["HSMKMS_STORE_BUSY_TIMEOUT"] = "2"
        node.start()
        try:
            client = node.client()
            key = client.create_key()["KeyMetadata"]["KeyId"]
            own.pg_ctl("stop", "-m", "fast")
            started = time.monotonic()
            with raises("DependencyTimeoutException"):
                client.create_key()
            assert time.monotonic() - started < 10  # bounded: the store's timeout, not a hang
            # The data plane answers from its cache meanwhile, or an AWS error; never a hang.
            try:
                client.encrypt(KeyId=key, Plaintext=b"x")
            except ClientError as exc:
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 500, 503)
            assert node.get("/health").status in (200, 503)
            own.pg_ctl("start")
            deadline = time.monotonic() + 15
            while True:
                try:
                    made = client.create_key()["KeyMetadata"]["KeyId"]
                    break
                except ClientError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            blob = client.encrypt(KeyId=made, Plaintext=b"back")["CiphertextBlob"]
            assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"back"
        finally:
            node.stop()


def test_store_copy_moves_an_embedded_home_to_postgresql_without_loss(postgres, tmp_path: Path):
    import subprocess
    import sys

    home = tmp_path / "home"
    embedded = ServerProcess(home).start()
    try:
        client = embedded.client()
        made = []
        for n in range(5):
            key = client.create_key(Description=f"key {n}")["KeyMetadata"]["KeyId"]
            client.create_alias(AliasName=f"alias/copied-{n}", TargetKeyId=key)
            client.tag_resource(KeyId=key, Tags=[{"TagKey": "n", "TagValue": str(n)}])
            made.append((key, client.encrypt(KeyId=key, Plaintext=b"old")["CiphertextBlob"]))
        gone = client.create_key()["KeyMetadata"]["KeyId"]
        client.schedule_key_deletion(KeyId=gone, PendingWindowInDays=7)
    finally:
        embedded.stop()
    url = postgres.database()

    def copy() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hsmkms", "store", "copy",
             "--from", str(home / "hsmkms.sqlite3"), "--to", url],  # fmt: skip
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    done = copy()
    assert done.returncode == 0, done.stderr
    assert "keys 6" in done.stdout and "aliases 5" in done.stdout and "tags 5" in done.stdout
    again = copy()  # into a store that now holds keys: refused, nothing written
    assert again.returncode == 1 and "already holds keys" in again.stderr
    moved = ServerProcess(home, env={"HSMKMS_STORE": url}).start()
    try:
        client = moved.client()
        for n, (key, blob) in enumerate(made):
            assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"old"
            assert client.describe_key(KeyId=f"alias/copied-{n}")["KeyMetadata"]["KeyId"] == key
            assert client.list_resource_tags(KeyId=key)["Tags"] == [
                {"TagKey": "n", "TagValue": str(n)}
            ]
        assert client.describe_key(KeyId=gone)["KeyMetadata"]["KeyState"] == "PendingDeletion"
        listed = client.list_keys(Limit=100)["Keys"]
        assert len(listed) == 6
    finally:
        moved.stop()
