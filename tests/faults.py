"""Tools of the fault tests: ``hsmkms doctor`` and direct token access in processes of their own
(SoftHSM2 reads SOFTHSM2_CONF once per process, and this one's belongs to the test session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server import REPO


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))}
    env.update(extra)
    return env


def doctor(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``hsmkms doctor --home HOME ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "hsmkms", "doctor", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=clean_env(),
        check=False,
    )


def doctor_report(home: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = doctor(home, "--json", *args)
    assert done.returncode in (0, 1), f"doctor exit {done.returncode}: {done.stderr}"
    return done.returncode, json.loads(done.stdout)


_TOKEN_PRELUDE = r"""
import json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from hsmkms.config import Settings
from hsmkms.home import use_home
from hsmkms.hsm import open_token
settings = use_home(Settings.load(home=Path(sys.argv[1]), env={}))
tok = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin())
out = {}
"""


def on_token(home: Path, code: str, timeout: float = 60) -> dict[str, Any]:
    """Run ``code`` with ``tok`` (the home's token, logged in) in a process of its own;
    whatever it puts in ``out`` comes back."""
    script = _TOKEN_PRELUDE + code + "\ntok.close()\nprint(json.dumps(out))\n"
    done = subprocess.run(
        [sys.executable, "-c", script, str(home)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


_LIBRARY_PRELUDE = r"""
import json, sys
from hsmkms.kms import KMS
kms = KMS(home=sys.argv[1], master_keys=sys.argv[2])
"""


def in_library(
    home: Path, mode: str, code: str, *args: str, stdin: str = "", timeout: float = 120
) -> Any:
    """Run ``code`` with ``kms`` (the library on ``home`` in master-key ``mode``; ``args``
    follow in sys.argv) in a process of its own; its last line of output, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", _LIBRARY_PRELUDE + code, str(home), mode, *args],
        input=stdin, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=clean_env(),
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def token_dir(home: Path) -> Path:
    [found] = (home / "tokens").iterdir()
    return found


def wait_for(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until ``condition()`` held; AssertionError after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started
