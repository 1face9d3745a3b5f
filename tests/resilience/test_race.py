"""Two server processes, 16 clients, the same few keys: CreateKey, DisableKey, EnableKey,
ScheduleKeyDeletion, CancelKeyDeletion and CreateAlias racing. Every answer is a success or
the 4xx the key's state calls for; afterwards every key's record is consistent (a deletion
date exactly when pending deletion), each alias name was granted once, the two processes
agree, and the store and the token agree (``hsmkms doctor``)."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

from faults import doctor_report
from loadgen import Client, Load
from server import ServerProcess

SECONDS = float(os.environ.get("HSMKMS_RACE_SECONDS", "8"))
ALLOWED = {
    "KMSInvalidStateException",  # e.g. Enable of a key pending deletion
    "AlreadyExistsException",  # the alias name was taken first
}
ALIASES = [f"alias/race-{i}" for i in range(12)]


def test_racing_state_changes_and_aliases_on_the_same_keys_stay_consistent(tmp_path: Path):
    home = tmp_path / "home"
    with ServerProcess(home, workers=2) as srv:
        kms = srv.client()
        keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(4)]
        lock = threading.Lock()
        wrong: list[str] = []
        granted = Counter[str]()

        def work(client: Client, stop: threading.Event) -> None:
            with lock:
                key_id = random.choice(keys)
            pick = random.random()
            if pick < 0.05:
                op, params = "CreateKey", {}
            elif pick < 0.25:
                op, params = "DisableKey", {"KeyId": key_id}
            elif pick < 0.45:
                op, params = "EnableKey", {"KeyId": key_id}
            elif pick < 0.62:
                op, params = "ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 7}
            elif pick < 0.80:
                op, params = "CancelKeyDeletion", {"KeyId": key_id}
            else:
                name = random.choice(ALIASES)
                op, params = "CreateAlias", {"AliasName": name, "TargetKeyId": key_id}
            answer = client.call(op, params)
            if answer.status == 200:
                if op == "CreateKey":
                    with lock:
                        keys.append(answer.json["KeyMetadata"]["KeyId"])
                elif op == "CreateAlias":
                    with lock:
                        granted[params["AliasName"]] += 1
            elif not (400 <= answer.status < 500 and answer.error[0] in ALLOWED):
                with lock:
                    wrong.append(f"{op} {params}: {answer!r}")

        with Load(srv, clients=16, work=work) as load:
            time.sleep(SECONDS)
        outcomes = load.outcomes
        assert wrong == [], wrong[:10]
        assert all(o.status for o in outcomes)
        # Each alias name was given out once, whichever process answered.
        assert all(n == 1 for n in granted.values()), granted

        # Both processes see what the store holds, once their caches have expired.
        time.sleep(1.5)
        with sqlite3.connect(home / "hsmkms.sqlite3") as db:
            rows = db.execute(
                "SELECT key_id, state, deletion_date, pending_window_days FROM keys"
            ).fetchall()
            aliases = db.execute("SELECT alias_name, key_id FROM aliases").fetchall()
        states = {}
        for key_id, state, deletion_date, window in rows:
            states[key_id] = state
            assert state in ("Enabled", "Disabled", "PendingDeletion"), (key_id, state)
            pending = state == "PendingDeletion"
            assert (deletion_date is not None) == pending, (key_id, state, deletion_date)
            assert (window is not None) == pending, (key_id, state, window)
        assert set(keys) <= set(states)
        assert len({name for name, _ in aliases}) == len(aliases) == len(granted)
        assert all(key_id in states for _, key_id in aliases)
        client = Client(srv)
        for key_id in keys:
            seen = set()
            for _ in range(4):  # new connections: both workers answer some
                client.close()
                answer = client.call("DescribeKey", {"KeyId": key_id})
                seen.add(answer.json["KeyMetadata"]["KeyState"])
            assert seen == {states[key_id]}, (key_id, seen, states[key_id])
        listed = client.call("ListAliases", {"Limit": 100}).json["Aliases"]
        names = [a["AliasName"] for a in listed]
        assert len(names) == len(set(names))
        client.close()
        print(
            f"\nrace: 2 workers, 16 clients, {len(outcomes)} requests in {SECONDS:.0f} s: "
            f"{dict(Counter((o.op, o.code or 'OK') for o in outcomes))}; final states "
            f"{dict(Counter(states.values()))}"
        )
    code, report = doctor_report(home)
    assert code == 0 and report["missing"] == [], report
