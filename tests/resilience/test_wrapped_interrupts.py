"""kill -9 of ``hsmkms migrate --master-keys token`` and of ``hsmkms domain-key rotate`` in the
middle of their work, again and again, then run to the end: every ciphertext, MAC and signature
made before still verifies, between the kills and after, and every key still works. And servers
that keep answering throughout: a wrapped-mode server during a domain-key rotation (the
command's, then its own scheduler's), a token-mode server during a move of the wraps onto the
token (the order docs/master-keys.md gives). hsmkms/modes/migrate.py has the argument why.

A home of a few hundred keys and a small --batch, so that there is a middle to kill in; each
kill comes after some progress lines, a few milliseconds into the next batch."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faults import clean_env, doctor, in_library, wait_for
from server import REPO, ServerProcess

SYMMETRIC = 240

_PRELUDE = r"""
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
"""
# Keys of every kind the wrapped mode wraps, and what each made.
_MAKE = r"""
out = {"sym": {}}
for i in range(int(sys.argv[3])):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    out["sym"][key] = kms.encrypt(KeyId=key, Plaintext=key.encode())["CiphertextBlob"].hex()
mac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
value = kms.generate_mac(KeyId=mac, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
out["mac"] = [mac, value.hex()]
out["sign"] = []
for spec, algorithm in (("ECC_NIST_P256", "ECDSA_SHA_256"),
                        ("RSA_2048", "RSASSA_PKCS1_V1_5_SHA_256")):
    key = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    sig = kms.sign(KeyId=key, Message=b"m", SigningAlgorithm=algorithm)["Signature"]
    out["sign"].append([key, algorithm, sig.hex()])
agree = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
peer = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
shared = kms.derive_shared_secret(KeyId=agree, KeyAgreementAlgorithm="ECDH", PublicKey=peer)
out["ecdh"] = [agree, peer.hex(), shared["SharedSecret"].hex()]
print(json.dumps(out))
"""
_CHECK = r"""
from cryptography.hazmat.primitives.asymmetric import padding
made = json.loads(sys.stdin.read())
for key, blob in made["sym"].items():
    assert kms.decrypt(CiphertextBlob=bytes.fromhex(blob))["Plaintext"] == key.encode(), key
mac, value = made["mac"]
assert kms.verify_mac(KeyId=mac, Message=b"m", Mac=bytes.fromhex(value),
                      MacAlgorithm="HMAC_SHA_256")["MacValid"]
for key, algorithm, sig in made["sign"]:
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
    fresh = kms.sign(KeyId=key, Message=b"m", SigningAlgorithm=algorithm)["Signature"]
    for signature in (bytes.fromhex(sig), fresh):  # the old one, and one made now
        if algorithm.startswith("ECDSA"):
            public.verify(signature, b"m", ec.ECDSA(hashes.SHA256()))
        else:
            public.verify(signature, b"m", padding.PKCS1v15(), hashes.SHA256())
agree, peer, shared = made["ecdh"]
again = kms.derive_shared_secret(KeyId=agree, KeyAgreementAlgorithm="ECDH",
                                 PublicKey=bytes.fromhex(peer))
assert again["SharedSecret"].hex() == shared
new = kms.create_key()["KeyMetadata"]["KeyId"]
blob = kms.encrypt(KeyId=new, Plaintext=b"new")["CiphertextBlob"]
assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"new"
kms.schedule_key_deletion(KeyId=new, PendingWindowInDays=7)
store = kms.service.store
ids = [mid for mid, _ in kms.service.masters.token.list_master_keys()]
print(json.dumps({"wraps": store.count_wraps(),
                  "domain_keys": [[k.domain_id, k.state] for k in store.domain_keys()],
                  "token_objects": len(ids), "duplicates": len(ids) - len(set(ids))}))
"""


def _library(home: Path, mode: str, code: str, *args: str, stdin: str = "") -> Any:
    return in_library(home, mode, _PRELUDE + code, *args, stdin=stdin, timeout=300)


def _check(home: Path, mode: str, made: dict[str, Any]) -> dict[str, Any]:
    """Everything ``made`` verifies through a library process in ``mode``; what the home holds."""
    state = _library(home, mode, _CHECK, stdin=json.dumps(made))
    assert state["duplicates"] == 0  # no material made twice on the token
    return state  # type: ignore[no-any-return]


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hsmkms", *args, "--home", str(home)],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=clean_env(), check=False,
    )  # fmt: skip


def _kill_after(home: Path, args: tuple[str, ...], progress: str, lines: int, delay: float) -> str:
    """Run ``hsmkms ARGS``; kill -9 it ``delay`` seconds after its ``lines``-th line starting
    with ``progress``. What it printed (it must have been killed, not have finished)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hsmkms", *args, "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=clean_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    out, seen = [], 0
    try:
        for line in proc.stdout:
            out.append(line)
            seen += line.startswith(progress)
            if seen >= lines:
                time.sleep(delay)
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
    text = "".join(out)
    assert proc.returncode == -signal.SIGKILL, f"not killed (exit {proc.returncode}):\n{text}"
    return text


def _made(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    home = tmp_path / "home"
    return home, _library(home, "wrapped", _MAKE, str(SYMMETRIC))


# -- kill -9 in the middle -----------------------------------------------------------------------


def test_a_move_to_the_token_killed_again_and_again_resumes_and_loses_nothing(tmp_path):
    home, made = _made(tmp_path)
    total = SYMMETRIC + 4
    left = total
    move = ("migrate", "--master-keys", "token", "--batch", "10")
    for lines, delay in ((1, 0.0), (2, 0.004), (3, 0.011), (1, 0.025)):
        out = _kill_after(home, move, "moved ", lines, delay)
        assert f"moved 10 of {left}" in out
        # Killed: a token-mode process serves both the token objects and the wraps left.
        state = _check(home, "token", made)
        assert 0 < state["wraps"] <= left - 10 * lines
        assert state["domain_keys"][0][1] == "active"
        left = state["wraps"]
    done = _cli(home, *move)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"of {left} (0 wraps left)" in done.stdout and "domain keys destroyed: 1" in done.stdout
    state = _check(home, "token", made)
    assert state["wraps"] == 0 and state["domain_keys"] == []
    report = doctor(home)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "orphan" not in report.stdout  # no material made twice, none left behind


def test_a_rotation_killed_again_and_again_resumes_it_without_a_second_key(tmp_path):
    home, made = _made(tmp_path)
    rotate = ("domain-key", "rotate", "--batch", "5")
    out = _kill_after(home, rotate, "rewrapped ", 2, 0.007)
    assert "made and active" in out
    state = _check(home, "wrapped", made)
    [(old, retiring), (new, active)] = state["domain_keys"]
    assert (retiring, active) == ("retiring", "active")
    for lines, delay in ((1, 0.0), (3, 0.013), (2, 0.002)):
        out = _kill_after(home, rotate, "rewrapped ", lines, delay)
        assert "a rotation is unfinished: resuming it, no new domain key made" in out
        state = _check(home, "wrapped", made)
        assert state["domain_keys"] == [[old, "retiring"], [new, "active"]]
    done = _cli(home, *rotate)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming it" in done.stdout and "1 old domain keys destroyed" in done.stdout
    state = _check(home, "wrapped", made)
    assert state["domain_keys"] == [[new, "active"]]
    status = json.loads(_cli(home, "domain-key", "status", "--json").stdout)
    assert [(k["domain_id"], k["on_token"]) for k in status["domain_keys"]] == [(new, True)]
    assert status["domain_keys"][0]["wraps"] == status["wraps"] >= SYMMETRIC + 4


# -- servers answering throughout ----------------------------------------------------------------


class Decrypting:
    """Threads decrypting every blob through the server again and again, until stopped;
    every answer checked."""

    def __init__(self, srv: ServerProcess, blobs: dict[str, bytes], threads: int = 3) -> None:
        self.blobs = blobs
        self.done = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(srv.client(),)) for _ in range(threads)
        ]

    def _run(self, client: Any) -> None:
        while not self._stop.is_set():
            for key_id, blob in self.blobs.items():
                try:
                    answer = client.decrypt(CiphertextBlob=blob)
                    assert answer["Plaintext"] == key_id.encode()
                    self.done += 1
                except Exception as exc:  # every failure counts, whatever it is
                    self.errors.append(f"{key_id}: {exc!r}")
                if self._stop.is_set():
                    return

    def __enter__(self) -> Decrypting:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def _server(home: Path, mode: str) -> ServerProcess:
    # A few loaded keys for many: nearly every decryption unwraps again, under whichever
    # domain key the wrap is under at that instant.
    env = {
        "HSMKMS_MASTER_KEYS": mode,
        "HSMKMS_LOADED_KEYS": "5",
        "HSMKMS_SCHEDULER_INTERVAL": "0.5",
    }
    return ServerProcess(home, env=env)


def _keys(srv: ServerProcess, n: int) -> dict[str, bytes]:
    client = srv.client()
    blobs = {}
    for _ in range(n):
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        blobs[key_id] = client.encrypt(KeyId=key_id, Plaintext=key_id.encode())["CiphertextBlob"]
    return blobs


def _domain_keys(home: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "hsmkms.sqlite3") as db:
        rows = db.execute("SELECT domain_id, state FROM domain_keys ORDER BY created_at").fetchall()
    return [(r[0], r[1]) for r in rows]


def _throughout(srv: ServerProcess, blobs: dict[str, bytes], work: Callable[[], None]) -> None:
    with Decrypting(srv, blobs) as reading:
        wait_for(lambda: reading.done >= len(blobs), timeout=60)
        before = reading.done
        work()
        wait_for(lambda: reading.done >= before + len(blobs), timeout=60)
    assert not reading.errors, reading.errors[:5]


def test_a_wrapped_server_decrypts_old_ciphertexts_throughout_domain_key_rotations(tmp_path):
    home = tmp_path / "home"
    with _server(home, "wrapped") as srv:
        blobs = _keys(srv, 60)
        [(first, _)] = _domain_keys(home)

        def rotate_here() -> None:
            done = _cli(home, "domain-key", "rotate", "--batch", "3")
            assert done.returncode == 0, done.stdout + done.stderr
            assert "done: " in done.stdout

        _throughout(srv, blobs, rotate_here)
        [(second, state)] = [k for k in _domain_keys(home) if k[1] != "destroyed"]
        assert second != first and state == "active"

        def rotate_in_the_background() -> None:
            done = _cli(home, "domain-key", "rotate", "--background", "--batch", "3")
            assert done.returncode == 0 and "scheduler rewraps them" in done.stdout
            # The server's scheduler rewraps and destroys the old key by itself.
            wait_for(lambda: dict(_domain_keys(home))[second] == "destroyed", timeout=60)

        _throughout(srv, blobs, rotate_in_the_background)
        alive = [k for k in _domain_keys(home) if k[1] != "destroyed"]
        assert len(alive) == 1 and alive[0][1] == "active" and alive[0][0] not in (first, second)
    assert doctor(home, "--deep").returncode == 0


def test_a_token_mode_server_serves_throughout_a_move_of_the_wraps_onto_the_token(tmp_path):
    home = tmp_path / "home"
    with _server(home, "wrapped") as srv:
        blobs = _keys(srv, 60)
    # The order docs/master-keys.md gives: the servers in the token mode first, then migrate.
    with _server(home, "token") as srv:

        def move() -> None:
            done = _cli(home, "migrate", "--master-keys", "token", "--batch", "4")
            assert done.returncode == 0, done.stdout + done.stderr

        _throughout(srv, blobs, move)
        assert [k for k in _domain_keys(home) if k[1] != "destroyed"] == []
        client = srv.client()
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        blob = client.encrypt(KeyId=key_id, Plaintext=b"after")["CiphertextBlob"]
        assert client.decrypt(CiphertextBlob=blob)["Plaintext"] == b"after"
    with sqlite3.connect(home / "hsmkms.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM wrapped_materials").fetchone()[0] == 0
