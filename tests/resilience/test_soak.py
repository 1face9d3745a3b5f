"""A bounded soak: a real server under 32 clients of mixed operations (data key pairs among
them) with zero errors, every Decrypt round trip checked, and the server's resident memory
flat from the first third of the run to the last.

``HSMKMS_SOAK_SECONDS`` (default 20) and ``HSMKMS_SOAK_CLIENTS`` (default 32) size it; a
longer soak is the same test with a larger number.

Flat: the median VmRSS of the last third exceeds that of the first third by no more than
max(8 MiB, 5%). A warm-up before the first third lets caches, arenas and the thread pool
reach their working size, which is growth by design, not a leak; a leak of even 100 bytes
per request (at ~1,000 requests/s) shows as more than the tolerance within a minute.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from collections import Counter
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from loadgen import Client, Load, b64, plaintext, rss_kib, unb64
from server import ServerProcess

SECONDS = float(os.environ.get("HSMKMS_SOAK_SECONDS", "20"))
CLIENTS = int(os.environ.get("HSMKMS_SOAK_CLIENTS", "32"))
WARM_UP = 3.0
TOLERANCE_KIB = 8 * 1024
TOLERANCE_SHARE = 0.05


def _public_of(pkcs8: bytes) -> bytes:
    key = serialization.load_der_private_key(pkcs8, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_a_soak_of_mixed_operations_has_no_errors_and_flat_memory(tmp_path: Path):
    with ServerProcess(tmp_path / "home") as srv:
        kms = srv.client()
        keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(4)]
        for i, key_id in enumerate(keys):
            kms.create_alias(AliasName=f"alias/soak-{i}", TargetKeyId=key_id)
        failures: list[str] = []
        checked = Counter[str]()
        lock = threading.Lock()

        def fail(what: str) -> None:
            with lock:
                failures.append(what)

        def decrypt(client: Client, blob: str, expected: bytes, context: dict | None) -> None:
            params: dict = {"CiphertextBlob": blob}
            if context:
                params["EncryptionContext"] = context
            answer = client.call("Decrypt", params)
            if answer.status != 200 or unb64(answer.json["Plaintext"]) != expected:
                fail(f"Decrypt round trip: {answer!r}")
            else:
                with lock:
                    checked["round trips"] += 1

        def work(client: Client, stop: threading.Event) -> None:
            key = random.choice(keys)
            name = random.choice([key, f"alias/soak-{keys.index(key)}"])
            context = (
                {"tenant": str(random.randrange(10)), "é": "ü"} if random.random() < 0.5 else None
            )
            pick = random.random()
            if pick < 0.30:
                data = plaintext(random.choice([1, 32, 1024, 4096]))
                params = {"KeyId": name, "Plaintext": b64(data)}
                if context:
                    params["EncryptionContext"] = context  # type: ignore[assignment]
                answer = client.call("Encrypt", params)
                if answer.status != 200:
                    return fail(f"Encrypt: {answer!r}")
                decrypt(client, answer.json["CiphertextBlob"], data, context)
            elif pick < 0.50:
                answer = client.call("GenerateDataKey", {"KeyId": name, "KeySpec": "AES_256"})
                if answer.status != 200:
                    return fail(f"GenerateDataKey: {answer!r}")
                decrypt(
                    client, answer.json["CiphertextBlob"], unb64(answer.json["Plaintext"]), None
                )
            elif pick < 0.62:
                spec = random.choice(["ECC_NIST_P256", "ECC_NIST_P384", "ECC_SECG_P256K1"])
                answer = client.call("GenerateDataKeyPair", {"KeyId": name, "KeyPairSpec": spec})
                if answer.status != 200:
                    return fail(f"GenerateDataKeyPair: {answer!r}")
                private = unb64(answer.json["PrivateKeyPlaintext"])
                if _public_of(private) != unb64(answer.json["PublicKey"]):
                    return fail("GenerateDataKeyPair: the public key is not the private key's")
                decrypt(client, answer.json["PrivateKeyCiphertextBlob"], private, None)
            elif pick < 0.65:
                answer = client.call(
                    "GenerateDataKeyPairWithoutPlaintext",
                    {"KeyId": name, "KeyPairSpec": "RSA_2048"},
                )
                if answer.status != 200:
                    return fail(f"GenerateDataKeyPairWithoutPlaintext: {answer!r}")
                blob = answer.json["PrivateKeyCiphertextBlob"]
                opened = client.call("Decrypt", {"CiphertextBlob": blob})
                if opened.status != 200 or _public_of(unb64(opened.json["Plaintext"])) != unb64(
                    answer.json["PublicKey"]
                ):
                    return fail(f"RSA pair round trip: {opened!r}")
                with lock:
                    checked["round trips"] += 1
            elif pick < 0.75:
                data = plaintext(64)
                sealed = client.call("Encrypt", {"KeyId": key, "Plaintext": b64(data)})
                other = random.choice(keys)
                answer = client.call(
                    "ReEncrypt",
                    {"CiphertextBlob": sealed.json["CiphertextBlob"], "DestinationKeyId": other},
                )
                if sealed.status != 200 or answer.status != 200:
                    return fail(f"ReEncrypt: {answer!r}")
                decrypt(client, answer.json["CiphertextBlob"], data, None)
            elif pick < 0.88:
                op, params = random.choice(
                    [
                        ("DescribeKey", {"KeyId": name}),
                        ("ListAliases", {"Limit": 10}),
                        ("ListKeys", {"Limit": 10}),
                        ("GenerateRandom", {"NumberOfBytes": 64}),
                    ]
                )
                answer = client.call(op, params)
                if answer.status != 200:
                    fail(f"{op}: {answer!r}")
            else:
                n = random.randrange(10**9)
                created = client.call(
                    "CreateAlias", {"AliasName": f"alias/tmp-{n}", "TargetKeyId": key}
                )
                deleted = client.call("DeleteAlias", {"AliasName": f"alias/tmp-{n}"})
                if created.status != 200 or deleted.status != 200:
                    fail(f"alias churn: {created!r} {deleted!r}")

        assert srv.proc is not None
        pid = srv.proc.pid
        samples: list[tuple[float, int]] = []
        with Load(srv, clients=CLIENTS, work=work) as load:
            time.sleep(WARM_UP)
            started = time.monotonic()
            while (now := time.monotonic()) - started < SECONDS and not load.stop.is_set():
                samples.append((now - started, rss_kib(pid)))
                time.sleep(0.25)
        outcomes = load.outcomes
        assert srv.proc.poll() is None

    assert failures == [], failures[:10]
    assert all(o.status == 200 for o in outcomes)
    third = SECONDS / 3
    first = statistics.median(kib for t, kib in samples if t < third)
    last = statistics.median(kib for t, kib in samples if t >= 2 * third)
    allowed = max(TOLERANCE_KIB, TOLERANCE_SHARE * first)
    rate = len(outcomes) / (SECONDS + WARM_UP)
    print(
        f"\nsoak {SECONDS:.0f} s + {WARM_UP:.0f} s warm-up, {CLIENTS} clients: "
        f"{len(outcomes)} requests ({rate:.0f}/s), {checked['round trips']} round trips "
        f"checked, 0 errors; VmRSS median first third {first / 1024:.1f} MiB, last third "
        f"{last / 1024:.1f} MiB (growth {(last - first) / 1024:+.1f} MiB, allowed "
        f"{allowed / 1024:.1f}); ops {dict(Counter(o.op for o in outcomes))}"
    )
    assert last - first <= allowed, f"memory grew {(last - first) / 1024:.1f} MiB"
