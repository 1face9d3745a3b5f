"""Measure the token layer's choices on a throwaway SoftHSM2 token.

    .venv/bin/python -m bench.token_layer [--seconds 2]      # from the repository's root

1. AES-256-GCM (32 bytes) straight through python-pkcs11 (hsmkms/hsm/raw.py) on a token
   object and on a C_CopyObject session copy, and through Token.encrypt (which computes on
   the token object: SoftHSM2 refuses to copy a CKA_MODIFIABLE=false master key into a
   session object, see hsmkms/hsm/token.py).
2. Token.encrypt from 1, 2 and 4 threads, library initialised with CKF_OS_LOCKING_OK versus
   one lock around every call.
3. Token.encrypt latency while another thread generates RSA-4096 pairs on the token.

Each case runs in a fresh process on a fresh token, since a process loads the library once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hsmkms.hsm.token import PKCS11Token

ROOT = Path(__file__).resolve().parent.parent


def _open(home: Path, **options: object) -> PKCS11Token:
    from hsmkms.config import Settings
    from hsmkms.home import ensure_home
    from hsmkms.hsm import open_token

    settings = Settings.load(home=home, env={})
    ensure_home(settings)
    return open_token(settings.pkcs11_module, settings.token_label, settings.read_pin(), **options)


def _rate(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            fn()
        n += 200
    return n / elapsed


def case_objects(home: Path, seconds: float) -> dict[str, float]:
    """ops/s: token object, session copy (python-pkcs11 straight), Token.encrypt/decrypt."""
    from hsmkms.hsm import raw

    tok = _open(home)
    mid = os.urandom(32)
    tok.create_master_key(mid, "bench")
    data = os.urandom(32)
    out: dict[str, float] = {}
    for name, copy in (("token object", False), ("session copy", True)):
        with raw.calls(tok, bytes(12), b"aad", session_copy=copy) as calls:
            out[name] = _rate(partial(calls.encrypt, data), seconds)
    out["Token.encrypt"] = _rate(lambda: tok.encrypt(mid, bytes(12), data, b"aad"), seconds)
    ct = tok.encrypt(mid, bytes(12), data, b"aad")
    out["Token.decrypt"] = _rate(lambda: tok.decrypt(mid, bytes(12), ct, b"aad"), seconds)
    tok.destroy_master_key(mid)
    tok.close()
    return out


def case_threads(home: Path, seconds: float, os_locking: bool) -> dict[str, float]:
    """Total Token.encrypt ops/s from 1, 2 and 4 threads."""
    tok = _open(home, os_locking=os_locking)
    mid = os.urandom(32)
    tok.create_master_key(mid, "bench")
    out: dict[str, float] = {}
    for n in (1, 2, 4):
        counts = [0] * n
        stop = time.perf_counter() + seconds

        def work(i: int, counts: list[int], stop: float) -> None:
            while time.perf_counter() < stop:
                for _ in range(100):
                    tok.encrypt(mid, bytes(12), b"x" * 32, b"aad")
                counts[i] += 100

        threads = [threading.Thread(target=work, args=(i, counts, stop)) for i in range(n)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out[f"{n} threads"] = sum(counts) / (time.perf_counter() - start)
    tok.destroy_master_key(mid)
    tok.close()
    return out


def case_keygen_latency(home: Path, os_locking: bool) -> dict[str, float]:
    """Token.encrypt latency while RSA-4096 pairs are generated on the token beside it."""
    from hsmkms.specs import DataKeyPairSpec

    tok = _open(home, os_locking=os_locking)
    mid = os.urandom(32)
    tok.create_master_key(mid, "bench")
    done = threading.Event()

    def keygen() -> None:
        for _ in range(2):
            tok.generate_key_pair(DataKeyPairSpec.RSA_4096)
        done.set()

    latencies: list[float] = []
    thread = threading.Thread(target=keygen)
    thread.start()
    while not done.is_set():
        start = time.perf_counter()
        tok.encrypt(mid, bytes(12), b"x" * 32, b"aad")
        latencies.append(time.perf_counter() - start)
    thread.join()
    tok.destroy_master_key(mid)
    tok.close()
    latencies.sort()
    return {
        "encrypts during 2 RSA-4096": len(latencies),
        "p50 ms": 1000 * statistics.median(latencies),
        "max ms": 1000 * latencies[-1],
    }


def _child(case: str, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        if case == "objects":
            result = case_objects(home, seconds)
        elif case.startswith("threads-"):
            result = case_threads(home, seconds, case == "threads-os")
        else:
            result = case_keygen_latency(home, case == "keygen-os")
    print(json.dumps(result))


def _run(case: str, seconds: float) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTHSM2_CONF", "HSMKMS_PIN")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.token_layer", "--child", case, "--seconds", str(seconds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.token_layer", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.seconds)
        return

    print("AES-256-GCM, 32 bytes, one thread (ops/s)")
    for name, rate in _run("objects", args.seconds).items():
        print(f"  {name:<16} {rate:>9,.0f}")
    print("Token.encrypt, 32 bytes, total over threads (ops/s)")
    for case, title in (("threads-os", "CKF_OS_LOCKING_OK"), ("threads-lock", "one lock")):
        rates = _run(case, args.seconds)
        print(f"  {title:<18}" + "".join(f"  {k}: {v:>8,.0f}" for k, v in rates.items()))
    print("Token.encrypt latency while RSA-4096 pairs generate on the token")
    for case, title in (("keygen-os", "CKF_OS_LOCKING_OK"), ("keygen-lock", "one lock")):
        r = _run(case, args.seconds)
        print(
            f"  {title:<18}  {r['encrypts during 2 RSA-4096']:>8,.0f} encrypts, "
            f"p50 {r['p50 ms']:.3f} ms, max {r['max ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
