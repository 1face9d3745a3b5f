"""``kill -9`` of a real server in the middle of a write-heavy load, twice, then a restart.

Acknowledged (answered 200) means durable: after the restart every key created is there with
the material it was created with, every alias names its key, every blob answered decrypts to
its plaintext (Encrypt, GenerateDataKeyPair), every rotation answered is in effect, and the
store and the token agree (``hsmkms doctor``: no missing material; orphans, the harmless
remains of a kill between the token's create and the store's commit, are allowed). Requests
that got no answer may have happened or not: they are not checked."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from faults import doctor_report
from loadgen import Client, Load, b64, plaintext, unb64
from server import ServerProcess

ROUNDS = 2
CLIENTS = 12


@dataclass
class Acknowledged:
    keys: dict[str, str] = field(default_factory=dict)  # key id -> its first material
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> key id
    blobs: list[tuple[str, bytes]] = field(default_factory=list)  # (blob b64, plaintext)
    rotated: set[str] = field(default_factory=set)  # key ids
    lock: threading.Lock = field(default_factory=threading.Lock)

    def some_key(self) -> str | None:
        with self.lock:
            return random.choice(list(self.keys)) if self.keys else None


def _writes(acked: Acknowledged, rotations: bool):
    def work(client: Client, stop: threading.Event) -> None:
        pick = random.random()
        key_id = acked.some_key()
        if pick < 0.3 or key_id is None:
            answer = client.call("CreateKey", {"Description": "crash test"})
            if answer.status == 200:
                meta = answer.json["KeyMetadata"]
                with acked.lock:
                    acked.keys[meta["KeyId"]] = meta["CurrentKeyMaterialId"]
        elif pick < 0.45:
            name = f"alias/crash-{uuid.uuid4().hex[:12]}"
            answer = client.call("CreateAlias", {"AliasName": name, "TargetKeyId": key_id})
            if answer.status == 200:
                with acked.lock:
                    acked.aliases[name] = key_id
        elif pick < 0.6:
            answer = client.call(
                "GenerateDataKeyPair", {"KeyId": key_id, "KeyPairSpec": "ECC_NIST_P256"}
            )
            if answer.status == 200:
                private = unb64(answer.json["PrivateKeyPlaintext"])
                with acked.lock:
                    acked.blobs.append((answer.json["PrivateKeyCiphertextBlob"], private))
        elif pick < 0.9 or not rotations:
            data = plaintext()
            answer = client.call("Encrypt", {"KeyId": key_id, "Plaintext": b64(data)})
            if answer.status == 200:
                with acked.lock:
                    acked.blobs.append((answer.json["CiphertextBlob"], data))
        else:
            answer = client.call("RotateKeyOnDemand", {"KeyId": key_id})
            if answer.status == 200:
                with acked.lock:
                    acked.rotated.add(key_id)

    return work


def test_kill_9_under_write_load_loses_no_acknowledged_write(tmp_path: Path):
    home = tmp_path / "home"
    acked = Acknowledged()
    srv = ServerProcess(home).start()
    probe = srv.client().create_key()["KeyMetadata"]
    acked.keys[probe["KeyId"]] = probe["CurrentKeyMaterialId"]
    rotations = srv.post("RotateKeyOnDemand", {"KeyId": probe["KeyId"]}).status == 200
    if rotations:
        acked.rotated.add(probe["KeyId"])
    killed_with = []
    try:
        for _ in range(ROUNDS):
            with Load(srv, clients=CLIENTS, work=_writes(acked, rotations)) as load:
                time.sleep(1.0 + random.random())
                assert srv.proc is not None
                killed = time.monotonic()
                srv.proc.kill()  # SIGKILL: no shutdown, no flush, mid-request
                srv.proc.wait(timeout=10)
            cut = [o for o in load.outcomes if o.status == 0 and o.started < killed]
            killed_with.append(len(cut))
            srv = ServerProcess(home).start()  # the same home, as an operator would restart
        _check(srv, acked, rotations)
    finally:
        srv.stop()
    code, report = doctor_report(home)
    assert code == 0 and report["missing"] == [], report
    with sqlite3.connect(home / "hsmkms.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    print(
        f"\n{ROUNDS} kills under {CLIENTS} writers: {len(acked.keys)} keys, "
        f"{len(acked.aliases)} aliases, {len(acked.blobs)} blobs, {len(acked.rotated)} rotated "
        f"keys acknowledged and found; requests cut off per kill: {killed_with}; "
        f"orphans left: {len(report['orphans'])}"
    )


def _check(srv: ServerProcess, acked: Acknowledged, rotations: bool) -> None:
    client = Client(srv)
    for key_id, first_material in acked.keys.items():
        answer = client.call("DescribeKey", {"KeyId": key_id})
        assert answer.status == 200, (key_id, answer)
        current = answer.json["KeyMetadata"]["CurrentKeyMaterialId"]
        if key_id in acked.rotated:
            assert current != first_material, f"rotation of {key_id} lost"
        elif not rotations:
            assert current == first_material
    for name, key_id in acked.aliases.items():
        answer = client.call("DescribeKey", {"KeyId": name})
        assert answer.status == 200 and answer.json["KeyMetadata"]["KeyId"] == key_id, name
    for blob, data in acked.blobs:
        answer = client.call("Decrypt", {"CiphertextBlob": blob})
        assert answer.status == 200, answer
        assert unb64(answer.json["Plaintext"]) == data
    client.close()
