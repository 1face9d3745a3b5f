"""Many threads on one Token: no crash, no wrong answer, even while the token goes and returns.

Without the layer's fix, python-pkcs11 initialises SoftHSM2 with C_Initialize(NULL), SoftHSM2
turns its mutexes off, and two threads segfault or double-free it within seconds: this very
hammer, with the Token's lock replaced by a no-op and os_locking=False, died with SIGSEGV in
3 runs of 3. It runs in a subprocess so that a crash fails this test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HAMMER = r"""
import glob, json, os, random, sys, threading, time
from pathlib import Path
from cryptography.hazmat.primitives import serialization
from hsmkms.config import Settings
from hsmkms.home import ensure_home
from hsmkms.hsm import IntegrityError, TokenUnavailable, open_token

settings = Settings.load(home=Path(sys.argv[1]), env={})
ensure_home(settings)
os_locking = sys.argv[2] == "os-locking"
outage = sys.argv[3] == "outage"
[token_dir] = glob.glob(str(settings.home / "tokens" / "*"))
tok = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin(),
                 reinit_interval=0.2, os_locking=os_locking)
keys = [os.urandom(32) for _ in range(3)]
for i, mid in enumerate(keys):
    tok.create_master_key(mid, f"hammer-{i}")

RUN = 4.0
start = time.monotonic()
down = [None, None]  # monotonic times the token left and came back
counts, problems, lock = {}, [], threading.Lock()
encrypt_latency = []

def spki(pkcs8):
    key = serialization.load_der_private_key(pkcs8, None)
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)

def one(rng):
    mid = rng.choice(keys)
    op = rng.choice(["gcm", "gcm", "gcm", "tamper", "random", "has", "keygen", "ec", "wrap",
                     "status"])
    iv = os.urandom(12)
    if op == "gcm":
        pt = os.urandom(rng.randrange(0, 300))
        t = time.monotonic()
        ct = tok.encrypt(mid, iv, pt, b"ctx")
        encrypt_latency.append(time.monotonic() - t)
        assert tok.decrypt(mid, iv, ct, b"ctx") == pt, "round trip"
    elif op == "tamper":
        ct = tok.encrypt(mid, iv, b"payload", b"ctx")
        try:
            tok.decrypt(mid, iv, ct, b"other ctx")
            raise AssertionError("tampered ciphertext decrypted")
        except IntegrityError:
            pass
    elif op == "random":
        assert len(tok.random(32)) == 32
    elif op == "has":
        assert tok.has_master_key(mid)
    elif op == "keygen":
        fresh = os.urandom(32)
        tok.create_master_key(fresh, "short-lived")
        try:
            tok.encrypt(fresh, iv, b"x", b"")
        finally:
            tok.destroy_master_key(fresh)
    elif op == "ec":
        public, private = tok.generate_key_pair("ECC_NIST_P256")
        assert spki(private) == public, "pair mismatch"
    elif op == "wrap":
        public, wrapped = tok.generate_wrapped_key_pair("ECC_NIST_P384", mid)
        assert spki(tok.unwrap_private_key(mid, wrapped)) == public, "wrap mismatch"
    elif op == "status":
        tok.status()
    return op

def outage_window(now):
    # TokenUnavailable is the right answer while the token is away, and for the moment it
    # takes to come back (re-initialisation is rate-limited to every 0.2 s).
    left, back = down
    return left is not None and now >= left - 0.05 and (back is None or now <= back + 1.5)

def worker(seed):
    rng = random.Random(seed)
    while time.monotonic() - start < RUN:
        try:
            op = one(rng)
        except TokenUnavailable as exc:
            op = "unavailable"
            if not outage_window(time.monotonic()):
                with lock:
                    problems.append(f"TokenUnavailable outside the outage: {exc}")
        except Exception as exc:
            op = "problem"
            with lock:
                problems.append(f"{type(exc).__name__}: {exc}")
        with lock:
            counts[op] = counts.get(op, 0) + 1

def rsa_worker():
    # Slow generations beside the request path: with OS locking they do not block it.
    while time.monotonic() - start < RUN:
        try:
            public, private = tok.generate_key_pair("RSA_2048")
            assert spki(private) == public
            with lock:
                counts["rsa"] = counts.get("rsa", 0) + 1
        except TokenUnavailable:
            if not outage_window(time.monotonic()):
                problems.append("RSA: TokenUnavailable outside the outage")
        except Exception as exc:
            with lock:
                problems.append(f"RSA {type(exc).__name__}: {exc}")

threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
threads.append(threading.Thread(target=rsa_worker))
for t in threads:
    t.start()
if outage:
    time.sleep(1.2)
    down[0] = time.monotonic()
    os.rename(token_dir, str(settings.home / "away"))
    time.sleep(0.8)
    os.rename(str(settings.home / "away"), token_dir)
    down[1] = time.monotonic()
for t in threads:
    t.join()

# Afterwards everything works, without a restart.
for mid in keys:
    ct = tok.encrypt(mid, bytes(12), b"after", b"")
    assert tok.decrypt(mid, bytes(12), ct, b"") == b"after"
assert tok.status().ok
encrypt_latency.sort()
print(json.dumps({
    "counts": counts,
    "problems": problems[:20],
    "os_locking": tok.os_locking,
    "encrypt_p50_ms": round(1000 * encrypt_latency[len(encrypt_latency) // 2], 3),
    "encrypt_max_ms": round(1000 * encrypt_latency[-1], 1),
}))
tok.close()
"""


def hammer(home: Path, locking: str, outage: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTHSM2_CONF", "HSMKMS_PIN")}
    done = subprocess.run(
        [sys.executable, "-c", HAMMER, str(home), locking, outage],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # A crash of SoftHSM2 shows up here as a signal (negative return code) or an abort.
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow  # seconds of load each
@pytest.mark.parametrize("locking", ["os-locking", "one-lock"])
def test_many_threads_hammering_the_token_neither_crash_nor_err(
    tmp_path: Path, locking: str
) -> None:
    out = hammer(tmp_path / "home", locking, "steady")
    assert out["problems"] == []
    assert out["os_locking"] is (locking == "os-locking")
    counts = out["counts"]
    assert isinstance(counts, dict)
    for op in ("gcm", "tamper", "random", "has", "keygen", "ec", "wrap", "status", "rsa"):
        assert counts.get(op, 0) > 0, (op, counts)


@pytest.mark.slow  # an outage and a recovery under load: ~4 s
def test_threads_ride_out_a_token_outage_and_recover(tmp_path: Path) -> None:
    out = hammer(tmp_path / "home", "os-locking", "outage")
    assert out["problems"] == []
    counts = out["counts"]
    assert isinstance(counts, dict)
    assert counts.get("unavailable", 0) > 0  # the outage was seen ...
    assert counts.get("gcm", 0) > 0  # ... and work went on around it
