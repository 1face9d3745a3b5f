"""A refused PIN is tried once, never again: at start (``hsmkms serve`` exits saying which PIN
and how to fix it) and at run time (a token re-initialised with another PIN while hsmkms
runs). A real HSM locks its token after a few wrong PINs; SoftHSM2 does not, so these tests
count the C_Login calls themselves. Each runs in a process of its own."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from faults import clean_env
from server import REPO

# Counts every C_Login of the process, whoever makes it.
COUNT_LOGINS = r"""
import json, sys
from hsmkms.hsm import native
logins = []
_login = native.Cryptoki.login
def login(self, session, pin):
    rv = _login(self, session, pin)
    logins.append(rv)
    return rv
native.Cryptoki.login = login
"""

RUNTIME = (
    COUNT_LOGINS
    + r"""
import os, subprocess, time
from pathlib import Path
from hsmkms.config import Settings
from hsmkms.home import ensure_home, softhsm_util
from hsmkms.hsm import LoginFailed, TokenError, open_token

settings = Settings.load(home=Path(sys.argv[1]), env={})
ensure_home(settings)
tok = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin(),
                 reinit_interval=0.05)
mid = os.urandom(32)
tok.create_master_key(mid, "pin-test")
tok.encrypt(mid, bytes(12), b"x", b"")
# An HSM administrator re-initialises the token under the same label with another PIN.
[token_dir] = (settings.home / "tokens").iterdir()
token_dir.rename(settings.home / "old-token")
subprocess.run([softhsm_util(), "--init-token", "--free", "--label", settings.token_label,
                "--so-pin", "so-other", "--pin", "user-other"], check=True, capture_output=True)
out = {"logins at open": len(logins), "calls": []}
for _ in range(20):
    try:
        tok.encrypt(mid, bytes(12), b"x", b"")
        out["calls"].append("ok")
    except TokenError as exc:
        out["calls"].append(type(exc).__name__)
    time.sleep(0.06)  # past the re-initialisation interval every time
status = tok.status()
out["status ok"], out["status detail"] = status.ok, status.detail
out["logins"] = len(logins)
print(json.dumps(out))
"""
)

SERVE = (
    COUNT_LOGINS
    + r"""
from hsmkms.cli import main
code = main(["serve", "--home", sys.argv[1], "--port", sys.argv[2]])
print(json.dumps({"exit": code, "logins": len(logins)}))
"""
)


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env or clean_env(),
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["stderr"] = done.stderr
    return out  # type: ignore[no-any-return]


def test_a_pin_refused_at_run_time_is_not_tried_again(tmp_path: Path):
    out = _run(RUNTIME, str(tmp_path / "home"))
    assert out["logins at open"] == 1
    assert out["calls"] == ["LoginFailed"] * 20
    assert out["logins"] == 2  # the one at open, and the one refused: never again
    assert out["status ok"] is False
    assert "restart hsmkms with the right PIN" in str(out["status detail"])


def test_serve_with_a_wrong_pin_logs_in_once_and_says_how_to_fix_it(tmp_path: Path):
    home = tmp_path / "home"
    make = "import sys; from hsmkms.config import Settings; from hsmkms.home import ensure_home; "
    make += "ensure_home(Settings.load(home=sys.argv[1], env={}))"
    subprocess.run(
        [sys.executable, "-c", make, str(home)], check=True, timeout=60, cwd=REPO, env=clean_env()
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        out = _run(SERVE, str(home), port, env=clean_env(HSMKMS_PIN="not-the-pin"))
        assert (out["exit"], out["logins"]) == (1, 1)
        assert "refused the user PIN from HSMKMS_PIN" in str(out["stderr"])
        assert "Not retried" in str(out["stderr"])
        # The PIN file, when that is where the wrong PIN came from, is named instead.
        (home / "user.pin").write_text("wrong-in-file\n")
        out = _run(SERVE, str(home), port)
        assert (out["exit"], out["logins"]) == (1, 1)
        assert f"PIN file {home / 'user.pin'}" in str(out["stderr"])
