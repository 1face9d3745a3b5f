"""Token loss and return, login and label failures: each in a process of its own.

SoftHSM2 reads SOFTHSM2_CONF once per process, and these tests take the token away, so
each runs a script in a subprocess on a fresh home (and token) under pytest's tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PRELUDE = r"""
import glob, json, logging, os, sys, time
from pathlib import Path
from hsmkms.config import Settings
from hsmkms.home import ensure_home
from hsmkms.hsm import (IntegrityError, KeyNotFound, LoginFailed, TokenError,
                        TokenUnavailable, open_token)

settings = Settings.load(home=Path(sys.argv[1]), env={})
ensure_home(settings)  # sets SOFTHSM2_CONF for this process before the library loads
[token_dir] = glob.glob(str(settings.home / "tokens" / "*"))
# Out of tokens/: SoftHSM2 takes every directory in tokens/ for a token, renamed or not.
away = str(settings.home / "away")
out = {}

def outcome(call):
    try:
        call()
        return "ok"
    except TokenError as exc:
        return type(exc).__name__

class Count(logging.Handler):
    reinits = 0
    def emit(self, record):
        if "re-initialising" in record.getMessage():
            Count.reinits += 1
logging.getLogger("hsmkms.hsm").addHandler(Count())
logging.getLogger("hsmkms.hsm").setLevel(logging.INFO)
"""

LOSS = (
    PRELUDE
    + r"""
how = sys.argv[2]
tok = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin(),
                 reinit_interval=0.3)
mid = os.urandom(32)
tok.create_master_key(mid, "survivor")
iv = bytes(12)
ct = tok.encrypt(mid, iv, b"before", b"aad")
bad = ct[:-1] + bytes([ct[-1] ^ 1])

if how == "move":
    os.rename(token_dir, away)
else:
    os.chmod(token_dir, 0)

out["encrypt while away"] = outcome(lambda: tok.encrypt(mid, iv, b"x", b"aad"))
out["decrypt while away"] = outcome(lambda: tok.decrypt(mid, iv, ct, b"aad"))
out["tampered decrypt while away"] = outcome(lambda: tok.decrypt(mid, iv, bad, b"aad"))
out["has while away"] = outcome(lambda: tok.has_master_key(mid))
out["status while away"] = tok.status().ok
out["status detail"] = tok.status().detail
# A token that stays away must not cause a storm of re-initialisations.
storm_start, storm_reinits = time.monotonic(), Count.reinits
calls = 0
while time.monotonic() - storm_start < 1.0:
    outcome(lambda: tok.encrypt(mid, iv, b"x", b"aad"))
    calls += 1
out["storm calls"] = calls
out["storm reinits"] = Count.reinits - storm_reinits

if how == "move":
    os.rename(away, token_dir)
else:
    os.chmod(token_dir, 0o700)

deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    if outcome(lambda: tok.encrypt(mid, iv, b"x", b"aad")) == "ok":
        break
    time.sleep(0.05)
out["recovered after s"] = round(time.monotonic() - (deadline - 10), 2)
out["decrypt after return"] = tok.decrypt(mid, iv, ct, b"aad").decode()
out["tampered decrypt after return"] = outcome(lambda: tok.decrypt(mid, iv, bad, b"aad"))
out["status after return"] = tok.status().ok
out["random after return"] = len(tok.random(16))
tok.destroy_master_key(mid)
tok.close()
print(json.dumps(out))
"""
)

STATUS_RECOVERS = (
    PRELUDE
    + r"""
tok = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin(),
                 reinit_interval=0.2)
os.rename(token_dir, away)
out["status while away"] = tok.status().ok
os.rename(away, token_dir)
deadline = time.monotonic() + 10
while not tok.status().ok and time.monotonic() < deadline:
    time.sleep(0.05)
# /health alone brought the process back: no other call was made.
out["status after return"] = tok.status().ok
print(json.dumps(out))
"""
)

OPENING = (
    PRELUDE
    + r"""
try:
    open_token(settings.pkcs11_module, settings.token_label, "wrong-pin")
except LoginFailed as exc:
    out["wrong pin"] = "LoginFailed"
try:
    open_token(settings.pkcs11_module, "no-such-label", settings.read_pin())
except TokenUnavailable as exc:
    out["missing label"] = str(exc)
try:
    open_token("/nonexistent/libpkcs11.so", settings.token_label, settings.read_pin())
except TokenUnavailable as exc:
    out["missing module"] = str(exc)
# The failed login left nothing behind: the right PIN works in the same process.
tok = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin())
out["right pin after wrong"] = tok.status().ok
out["reinits"] = Count.reinits
tok.close()
print(json.dumps(out))
"""
)

FORK = (
    PRELUDE
    + r"""
tok = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin())
mid = os.urandom(32)
tok.create_master_key(mid, "forked")
ct = tok.encrypt(mid, bytes(12), b"parent", b"")
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    child = {}
    child["inherited token"] = outcome(lambda: tok.encrypt(mid, bytes(12), b"x", b""))
    tok.close()
    own = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin())
    child["own token"] = own.decrypt(mid, bytes(12), ct, b"").decode()
    own.close()
    os.write(write, json.dumps(child).encode())
    os._exit(0)
os.close(write)
_, status = os.waitpid(pid, 0)
out["child"] = json.loads(os.read(read, 65536) or b"{}")
out["child exit"] = status
# The child's C_Finalize and logout did not touch the parent's library or login.
out["parent after child"] = tok.decrypt(mid, bytes(12), ct, b"").decode()
tok.destroy_master_key(mid)
print(json.dumps(out))
"""
)


def run(script: str, home: Path, *args: str, timeout: float = 60) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTHSM2_CONF", "HSMKMS_PIN")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("how", ["move", "chmod"])
@pytest.mark.slow  # seconds of a process or a token: kept out of the fast subset
def test_a_lost_token_is_unavailable_and_the_process_recovers_when_it_returns(
    tmp_path: Path, how: str
) -> None:
    if how == "chmod" and os.geteuid() == 0:
        pytest.skip("root reads a mode-000 directory anyway")
    out = run(LOSS, tmp_path / "home", how)
    assert out["encrypt while away"] == "TokenUnavailable"
    assert out["decrypt while away"] == "TokenUnavailable"
    # A sick token is never reported as a tampered ciphertext.
    assert out["tampered decrypt while away"] == "TokenUnavailable"
    assert out["has while away"] == "TokenUnavailable"
    assert out["status while away"] is False
    assert "unavailable" in str(out["status detail"])
    # Hundreds of calls during the outage, a handful of re-initialisations (0.3 s apart).
    assert int(out["storm calls"]) > 20  # type: ignore[call-overload]
    assert int(out["storm reinits"]) <= 5  # type: ignore[call-overload]
    assert out["decrypt after return"] == "before"
    # ... and once it is back, tampering is an integrity failure again.
    assert out["tampered decrypt after return"] == "IntegrityError"
    assert out["status after return"] is True
    assert out["random after return"] == 16


def test_the_health_check_alone_brings_the_token_back(tmp_path: Path) -> None:
    out = run(STATUS_RECOVERS, tmp_path / "home")
    assert out == {"status while away": False, "status after return": True}


def test_wrong_pin_missing_label_and_missing_module_fail_clearly(tmp_path: Path) -> None:
    out = run(OPENING, tmp_path / "home")
    assert out["wrong pin"] == "LoginFailed"
    assert "'no-such-label'" in str(out["missing label"])
    assert "/nonexistent/libpkcs11.so" in str(out["missing module"])
    assert out["right pin after wrong"] is True
    assert out["reinits"] == 0  # opening never re-initialises: a bad setting is reported


def test_a_forked_child_opens_its_own_token_and_leaves_the_parents_alone(tmp_path: Path) -> None:
    out = run(FORK, tmp_path / "home")
    assert out["child"] == {"inherited token": "TokenError", "own token": "parent"}
    assert out["child exit"] == 0
    assert out["parent after child"] == "parent"
