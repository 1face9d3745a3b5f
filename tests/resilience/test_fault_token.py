"""The token's directory taken away from a real server under load, then given back.

While it is away every request answers 200 (what needs no token) or a 5xx KMS error as AWS
would (KeyUnavailableException, DependencyTimeoutException, KMSInternalException) — never a
4xx, never InvalidCiphertextException for a sound blob, never a hang — /health says 503, and
the server stays up. Once it is back the server serves again by itself within seconds, and
the store and the token agree (``hsmkms doctor``)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from faults import doctor, token_dir, wait_for
from loadgen import Client, Load, b64, plaintext, unb64
from server import ServerProcess

FAULTS = {"KeyUnavailableException", "DependencyTimeoutException", "KMSInternalException"}
OUTAGE = 2.0  # seconds the token stays away
RECOVERY_LIMIT = 5.0  # seconds the server may take to serve again once it is back


def test_a_token_gone_under_load_is_a_5xx_then_the_server_recovers_by_itself(tmp_path: Path):
    with ServerProcess(tmp_path / "home") as srv:
        kms = srv.client()
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        sealed = []
        for _ in range(8):
            data = plaintext()
            sealed.append((data, kms.encrypt(KeyId=key_id, Plaintext=data)["CiphertextBlob"]))
        wrong: list[str] = []  # answers no request may get, whatever the token does
        lock = threading.Lock()

        def check(op: str, answer: object, ok: bool) -> None:
            if not ok:
                with lock:
                    wrong.append(f"{op}: {answer!r}")

        def work(client: Client, stop: threading.Event) -> None:
            pick = random.random()
            if pick < 0.4:
                data, blob = random.choice(sealed)
                answer = client.call("Decrypt", {"CiphertextBlob": b64(blob)})
                good = answer.status == 200 and unb64(answer.json["Plaintext"]) == data
                check("Decrypt", answer, good or _fault(answer))
            elif pick < 0.7:
                data = plaintext()
                answer = client.call("Encrypt", {"KeyId": key_id, "Plaintext": b64(data)})
                check("Encrypt", answer, answer.status == 200 or _fault(answer))
            elif pick < 0.85:
                answer = client.call("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256"})
                check("GenerateDataKey", answer, answer.status == 200 or _fault(answer))
            elif pick < 0.95:
                answer = client.call("DescribeKey", {"KeyId": key_id})  # the store only
                check("DescribeKey", answer, answer.status == 200)
            else:
                answer = client.call("CreateKey", {})
                check("CreateKey", answer, answer.status == 200 or _fault(answer))

        directory = token_dir(srv.home)
        away = srv.home / "token-away"
        with Load(srv, clients=8, work=work) as load:
            time.sleep(1.0)
            gone = time.monotonic()
            directory.rename(away)  # out of tokens/: SoftHSM2 would find it anywhere inside
            noticed = wait_for(lambda: srv.get("/health").status == 503, timeout=5)
            time.sleep(OUTAGE)
            back = time.monotonic()
            away.rename(directory)
            healthy = wait_for(lambda: srv.get("/health").status == 200, timeout=10)
            time.sleep(1.0)
        outcomes = load.outcomes

        assert srv.proc is not None and srv.proc.poll() is None, "the server died"
        assert wrong == [], wrong[:10]
        assert all(o.status for o in outcomes), "a request got no answer"
        assert max(o.seconds for o in outcomes) < 5.0, "a request waited too long"
        during = [o for o in outcomes if gone + noticed < o.started < back]
        faults = [o for o in during if o.status >= 500]
        assert faults, "no request noticed the token was gone"
        assert {o.code for o in faults} <= FAULTS
        assert healthy < RECOVERY_LIMIT
        recovered = [o for o in outcomes if o.started > back]
        first_ok = min(o.started for o in recovered if o.status == 200)
        assert first_ok - back < RECOVERY_LIMIT
        settled = [o for o in outcomes if o.started > back + healthy + 0.2]
        assert settled and all(o.status == 200 for o in settled), "not recovered for good"
        # Every sound blob made before the outage still decrypts.
        for data, blob in sealed:
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == data
        print(
            f"\ntoken away {OUTAGE:.1f} s under 8 clients: {len(outcomes)} requests, "
            f"{len(faults)} answered 5xx while away ({sorted({o.code for o in faults})}), "
            f"health 503 after {noticed:.2f} s, 200 again {healthy:.2f} s after the return"
        )
        log = srv.log()
    assert "Traceback" not in log, log[-3000:]
    done = doctor(srv.home)
    assert done.returncode == 0, done.stdout + done.stderr


def _fault(answer: object) -> bool:
    status = getattr(answer, "status", 0)
    code = getattr(answer, "error", (None, None))[0]
    return status >= 500 and code in FAULTS
