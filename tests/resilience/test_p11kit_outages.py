"""A network HSM that goes away and one that hangs: ``p11-kit server`` exports the home's
SoftHSM2 token over a Unix socket, and a real ``hsmkms serve`` loads p11-kit-client.so as its
PKCS#11 module (P11_KIT_SERVER_ADDRESS), as it would a Luna or CloudHSM client library.

* Killed (the server and its per-connection p11-kit-remote, SIGKILL) under load: requests that
  need the token answer a 5xx AWS error at once, never hang; /health says 503; started again
  on the same socket, hsmkms serves within 5 s without a restart.
* SIGSTOPped (a hung HSM: the socket stays open, nothing answers): requests that need the
  token answer DependencyTimeoutException after the per-call deadline
  (``token_call_timeout``, 1 s here), and at once while that call is overdue; /health and
  requests that need no token (DescribeKey) keep answering; SIGCONT: serving again within 5 s.
* No acknowledged write is lost: every key a CreateKey answered 200 for is there afterwards
  and encrypts.

p11-kit 0.24 (Debian 12) does not carry CKM_AES_GCM's parameters, so hsmkms runs AES-GCM
from the token's AES-ECB here (hsmkms/hsm/gcm_ecb.py), as it would on any HSM without GCM.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from faults import doctor, wait_for
from loadgen import Client, Load, b64, plaintext, unb64
from server import REPO, ServerProcess

from hsmkms.config import Settings
from hsmkms.home import ensure_home

CLIENT = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
FAULTS = {"KeyUnavailableException", "DependencyTimeoutException", "KMSInternalException"}
DEADLINE = 1.0  # token_call_timeout of the server under test
RECOVERY_LIMIT = 5.0

pytestmark = pytest.mark.skipif(
    not (shutil.which("p11-kit") and os.path.exists(CLIENT)),
    reason="needs Debian's p11-kit and p11-kit-modules (scripts/_setup.sh installs them)",
)


class P11KitServer:
    """``p11-kit server -f`` exporting the home's SoftHSM2 module on ``socket``, in a process
    group of its own (it forks a p11-kit-remote per connection: signals go to the group)."""

    def __init__(self, home: Path, socket: Path) -> None:
        self.home, self.socket = home, socket
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        settings = Settings.load(home=self.home, env={})
        env = {**os.environ, "SOFTHSM2_CONF": str(settings.softhsm_conf_path)}
        self.proc = subprocess.Popen(
            ["p11-kit", "server", "-f", "-n", str(self.socket), "--provider",
             settings.pkcs11_module, "pkcs11:"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_for(self.socket.exists, timeout=10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
            self.proc.wait()


def home_behind_p11kit(tmp_path: Path) -> tuple[Path, P11KitServer]:
    """A new home whose token a p11-kit server (started) serves on a socket."""
    home = tmp_path / "home"
    # The SoftHSM2 token, PINs, credentials. ensure_home points this process's SOFTHSM2_CONF at
    # the new home: put it back, or the session token's next C_Initialize (a re-initialisation
    # in a later test) finds this home's token under the same label, with another PIN.
    saved = os.environ.get("SOFTHSM2_CONF")
    try:
        ensure_home(Settings.load(home=home, env={}))
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved
    hsm = P11KitServer(home, tmp_path / "p11kit.sock")
    hsm.start()
    return home, hsm


@contextmanager
def served_over_p11kit(tmp_path: Path) -> Iterator[tuple[ServerProcess, P11KitServer]]:
    home, hsm = home_behind_p11kit(tmp_path)
    env = {
        "HSMKMS_PKCS11_MODULE": CLIENT,
        "P11_KIT_SERVER_ADDRESS": f"unix:path={hsm.socket}",
        "HSMKMS_TOKEN_CALL_TIMEOUT": str(DEADLINE),
    }
    try:
        with ServerProcess(home, env=env) as srv:
            yield srv, hsm
    finally:
        hsm.kill()


class Mix:
    """Mixed requests on one key; the outcomes no request may get, and acknowledged keys."""

    def __init__(self, srv: ServerProcess) -> None:
        kms = srv.client()
        self.key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        self.sealed = []
        for _ in range(4):
            data = plaintext()
            self.sealed.append(
                (data, kms.encrypt(KeyId=self.key_id, Plaintext=data)["CiphertextBlob"])
            )
        self.wrong: list[str] = []
        self.created: list[str] = []
        self.lock = threading.Lock()

    def work(self, client: Client, stop: threading.Event) -> None:
        pick = random.random()
        if pick < 0.35:
            data, blob = random.choice(self.sealed)
            answer = client.call("Decrypt", {"CiphertextBlob": b64(blob)})
            good = answer.status == 200 and unb64(answer.json["Plaintext"]) == data
            self._check("Decrypt", answer, good or _fault(answer))
        elif pick < 0.6:
            answer = client.call("Encrypt", {"KeyId": self.key_id, "Plaintext": b64(plaintext())})
            self._check("Encrypt", answer, answer.status == 200 or _fault(answer))
        elif pick < 0.75:
            answer = client.call("GenerateDataKey", {"KeyId": self.key_id, "KeySpec": "AES_256"})
            self._check("GenerateDataKey", answer, answer.status == 200 or _fault(answer))
        elif pick < 0.95:
            answer = client.call("DescribeKey", {"KeyId": self.key_id})  # the store only
            self._check("DescribeKey", answer, answer.status == 200)
        else:
            answer = client.call("CreateKey", {})
            self._check("CreateKey", answer, answer.status == 200 or _fault(answer))
            if answer.status == 200:
                with self.lock:
                    self.created.append(answer.json["KeyMetadata"]["KeyId"])

    def _check(self, op: str, answer: object, ok: bool) -> None:
        if not ok:
            with self.lock:
                self.wrong.append(f"{op}: {answer!r}")

    def check_nothing_lost(self, srv: ServerProcess) -> None:
        kms = srv.client()
        for data, blob in self.sealed:
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == data
        for key_id in self.created:  # every acknowledged CreateKey: its record and material
            assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
            kms.encrypt(KeyId=key_id, Plaintext=b"still here")


def _fault(answer: object) -> bool:
    status = getattr(answer, "status", 0)
    code = getattr(answer, "error", (None, None))[0]
    return status >= 500 and code in FAULTS


def _healthy(srv: ServerProcess) -> bool:
    return srv.get("/health").status == 200


# p11-kit 0.24 carries no CKM_AES_KEY_WRAP_PAD or GCM parameters: the wrapped mode cannot run
# through it (it refuses to start, docs/master-keys.md), so this runs in the token mode only.
@pytest.mark.token_objects
def test_a_killed_network_hsm_is_a_5xx_at_once_and_hsmkms_recovers_when_it_returns(tmp_path):
    with served_over_p11kit(tmp_path) as (srv, hsm):
        mix = Mix(srv)
        with Load(srv, clients=8, work=mix.work) as load:
            time.sleep(1.0)
            gone = time.monotonic()
            hsm.kill()
            noticed = wait_for(lambda: not _healthy(srv), timeout=5)
            time.sleep(2.0)
            back = time.monotonic()
            hsm.start()
            healthy = wait_for(lambda: _healthy(srv), timeout=10)
            time.sleep(1.0)
        outcomes = load.outcomes
        assert srv.proc is not None and srv.proc.poll() is None, "the server died"
        assert mix.wrong == [], mix.wrong[:10]
        assert all(o.status for o in outcomes), "a request got no answer"
        assert max(o.seconds for o in outcomes) < DEADLINE + 1.0, "a request waited too long"
        during = [o for o in outcomes if gone + noticed < o.started < back]
        faults = [o for o in during if o.status >= 500]
        assert faults and {o.code for o in faults} <= FAULTS
        assert any(o.status == 200 for o in during if o.op == "DescribeKey")
        assert healthy < RECOVERY_LIMIT
        settled = [o for o in outcomes if o.started > back + healthy + 0.2]
        assert settled and all(o.status == 200 for o in settled), "not recovered for good"
        mix.check_nothing_lost(srv)
        print(
            f"\np11-kit server killed for 2 s under 8 clients: {len(outcomes)} requests, "
            f"{len(faults)} 5xx while away ({sorted({o.code for o in faults})}), slowest "
            f"answer {max(o.seconds for o in outcomes):.2f} s; health 503 after {noticed:.2f} s, "
            f"200 again {healthy:.2f} s after the restart; {len(mix.created)} keys created, "
            "all there"
        )
        assert "Traceback" not in srv.log(), srv.log()[-3000:]
    done = doctor(tmp_path / "home")  # on the home's SoftHSM2 token itself: store and token agree
    assert done.returncode == 0, done.stdout + done.stderr


# p11-kit 0.24 carries no CKM_AES_KEY_WRAP_PAD or GCM parameters: the wrapped mode cannot run
# through it (it refuses to start, docs/master-keys.md), so this runs in the token mode only.
@pytest.mark.token_objects
def test_a_hung_network_hsm_is_dependency_timeout_while_health_and_metadata_answer(tmp_path):
    with served_over_p11kit(tmp_path) as (srv, hsm):
        mix = Mix(srv)
        health: list[tuple[float, float, int]] = []  # (started, seconds, status)

        def probe(stop: threading.Event) -> None:
            while not stop.is_set():
                started = time.monotonic()
                status = srv.get("/health").status
                health.append((started, time.monotonic() - started, status))
                time.sleep(0.05)

        with Load(srv, clients=8, work=mix.work) as load:
            prober = threading.Thread(target=probe, args=(load.stop,), daemon=True)
            prober.start()
            time.sleep(1.0)
            stopped = time.monotonic()
            hsm.signal(signal.SIGSTOP)
            time.sleep(DEADLINE + 2.0)
            resumed = time.monotonic()
            hsm.signal(signal.SIGCONT)
            healthy = wait_for(lambda: _healthy(srv), timeout=10)
            time.sleep(1.0)
        prober.join(5)
        outcomes = load.outcomes
        assert srv.proc is not None and srv.proc.poll() is None, "the server died"
        assert mix.wrong == [], mix.wrong[:10]
        assert all(o.status for o in outcomes), "a request got no answer"
        assert max(o.seconds for o in outcomes) < DEADLINE + 1.0, "a request waited too long"
        hung = [o for o in outcomes if stopped + 0.1 < o.started < resumed]
        timeouts = [o for o in hung if o.code == "DependencyTimeoutException"]
        assert timeouts, "no request timed out while the HSM hung"
        assert {o.code for o in hung if o.status >= 500} <= FAULTS
        # What needs no token kept answering, and promptly.
        described = [o for o in hung if o.op == "DescribeKey"]
        assert described and all(o.status == 200 for o in described)
        assert max(o.seconds for o in described) < DEADLINE + 0.5
        during = [h for h in health if stopped + DEADLINE + 0.2 < h[0] < resumed]
        assert during and all(h[2] == 503 for h in during), "health did not say so"
        assert max(h[1] for h in health) < DEADLINE + 0.5, "/health waited behind the HSM"
        assert healthy < RECOVERY_LIMIT
        settled = [o for o in outcomes if o.started > resumed + healthy + 0.2]
        assert settled and all(o.status == 200 for o in settled), "not recovered for good"
        mix.check_nothing_lost(srv)
        first_timeout = min(o.started + o.seconds for o in timeouts) - stopped
        print(
            f"\np11-kit server stopped for {resumed - stopped:.1f} s under 8 clients: "
            f"{len(hung)} requests meanwhile, {len(timeouts)} DependencyTimeoutException (the "
            f"first {first_timeout:.2f} s after SIGSTOP), DescribeKey 200 throughout (slowest "
            f"{max(o.seconds for o in described):.3f} s), /health slowest "
            f"{max(h[1] for h in health):.3f} s; 200 again {healthy:.2f} s after SIGCONT; "
            f"{len(mix.created)} keys created, all there"
        )


def test_the_wrapped_mode_refuses_to_start_on_a_token_that_cannot_wrap(tmp_path: Path):
    """p11-kit 0.24 carries neither CKM_AES_KEY_WRAP_PAD's nor CKM_AES_GCM's parameters: a
    server in the wrapped mode says so at start, not on its first CreateKey."""
    home, hsm = home_behind_p11kit(tmp_path)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))}
        done = subprocess.run(
            [sys.executable, "-m", "hsmkms", "serve", "--home", str(home), "--port", "0",
             "--master-keys", "wrapped"],
            env={**env, "HSMKMS_PKCS11_MODULE": CLIENT,
                 "P11_KIT_SERVER_ADDRESS": f"unix:path={hsm.socket}"},
            capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        )  # fmt: skip
    finally:
        hsm.kill()
    assert done.returncode != 0, done.stdout
    assert "CKM_AES_KEY_WRAP_PAD" in done.stderr and "Traceback" not in done.stderr, done.stderr
