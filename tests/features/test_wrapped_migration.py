"""Moving a home between the master-key modes (``hsmkms migrate``) and rotating the wrapped
mode's domain key (``hsmkms domain-key``): hsmkms/modes/migrate.py, hsmkms/cli_masterkeys.py,
docs/master-keys.md.

In process, each test has a store of its own on the session's token (as test_wrapped_mode.py
does), and puts the token back as it found it: its materials' token objects and its domain keys
are destroyed at the end. The command line runs in processes of its own on fresh homes (the
token layer loads the PKCS#11 library once per process). Kills in the middle of a run are
tests/resilience/test_wrapped_interrupts.py."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from faults import clean_env, in_library
from helpers import offline_verify
from server import REPO

from hsmkms import hsm
from hsmkms.modes import TokenObjects, WrappedMaterials, migrate
from hsmkms.modes.token_objects import material_label, parse_material_label

SIGNING = {"RSA_2048": "RSASSA_PSS_SHA_256", "ECC_NIST_P256": "ECDSA_SHA_256"}


class Own:
    """A store of its own on the session's token, and library faces over it in either mode."""

    def __init__(self, settings: Any, token: Any, path: Path) -> None:
        from hsmkms.store import open_store

        self.settings, self.token = settings, token
        self.store = open_store(str(path))
        self._services: list[Any] = []

    def kms(self, mode: str) -> Any:
        from hsmkms.compose import build_service
        from hsmkms.kms import KMS

        svc = build_service(self.settings.replace(master_keys=mode), self.token, self.store)
        self._services.append(svc)
        return KMS.from_service(svc)

    def masters(self, new_materials: str) -> WrappedMaterials:
        return WrappedMaterials(self.token, self.store, new_materials=new_materials)

    def material(self, key_id: str) -> str:
        return self.store.get_key(key_id).current_material_id

    def unload(self) -> None:
        """Forget this process's unwrapped copies: the next use reads the wrap again."""
        for mid in self.store.all_material_ids():
            self.token.wrapping.unload(bytes.fromhex(mid))

    def close(self) -> None:
        for svc in self._services:
            svc.pool.close()
        self.unload()
        for mid in self.store.all_material_ids():
            if self.token.has_master_key(bytes.fromhex(mid)):
                self.token.destroy_master_key(bytes.fromhex(mid))
        for key in self.store.domain_keys():
            try:
                self.token.destroy_master_key(bytes.fromhex(key.domain_id))
            except hsm.KeyNotFound:
                pass
        self.store.close()


@pytest.fixture
def own(settings, token, tmp_path):
    made = Own(settings, token, tmp_path / "own.sqlite3")
    yield made
    made.close()


def _make_everything(kms: Any) -> dict[str, Any]:
    """A key of each kind the wrapped mode wraps, and what each made: a ciphertext, a MAC,
    signatures, a shared secret, an RSA ciphertext."""
    new = kms.create_key
    made: dict[str, Any] = {}
    sym = new()["KeyMetadata"]["KeyId"]
    made["sym"] = (sym, kms.encrypt(KeyId=sym, Plaintext=b"symmetric")["CiphertextBlob"])
    mac_key = new(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]["KeyId"]
    mac = kms.generate_mac(KeyId=mac_key, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
    made["mac"] = (mac_key, mac)
    for spec, algorithm in SIGNING.items():
        key = new(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
        signature = kms.sign(KeyId=key, Message=b"m", SigningAlgorithm=algorithm)["Signature"]
        made[spec] = (key, signature)
    agree = new(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]["KeyId"]
    peer = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    shared = kms.derive_shared_secret(KeyId=agree, KeyAgreementAlgorithm="ECDH", PublicKey=peer)
    made["ecdh"] = (agree, peer, shared["SharedSecret"])
    rsa = new(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=rsa, Plaintext=b"rsa", EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    made["rsa"] = (rsa, blob["CiphertextBlob"])
    return made


def _check_everything(kms: Any, made: dict[str, Any]) -> None:
    assert kms.decrypt(CiphertextBlob=made["sym"][1])["Plaintext"] == b"symmetric"
    mac_key, mac = made["mac"]
    assert kms.verify_mac(KeyId=mac_key, Message=b"m", Mac=mac, MacAlgorithm="HMAC_SHA_256")[
        "MacValid"
    ]
    for spec, algorithm in SIGNING.items():
        key, old = made[spec]
        public = serialization.load_der_public_key(kms.get_public_key(KeyId=key)["PublicKey"])
        offline_verify(public, algorithm, b"m", old)
        fresh = kms.sign(KeyId=key, Message=b"m", SigningAlgorithm=algorithm)["Signature"]
        offline_verify(public, algorithm, b"m", fresh)
    agree, peer, shared = made["ecdh"]
    again = kms.derive_shared_secret(KeyId=agree, KeyAgreementAlgorithm="ECDH", PublicKey=peer)
    assert again["SharedSecret"] == shared
    rsa, blob = made["rsa"]
    plain = kms.decrypt(KeyId=rsa, CiphertextBlob=blob, EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert plain["Plaintext"] == b"rsa"


def _key_ids(made: dict[str, Any]) -> list[str]:
    return [entry[0] for entry in made.values()]


# -- wrapped -> token ------------------------------------------------------------------------


def test_wrapped_to_token_moves_every_material_and_what_they_made_still_verifies(own, token):
    made = _make_everything(own.kms("wrapped"))
    [domain] = [k.domain_id for k in own.store.domain_keys()]
    materials = {own.material(k): k for k in _key_ids(made)}
    steps: list[int] = []
    counts = migrate.to_token(
        own.masters("token"), own.store, batch=2, progress=lambda c: steps.append(c.left)
    )
    assert counts.moved == len(materials) == counts.to_move and counts.left == 0
    assert not counts.failed and counts.resumed == counts.remade == 0
    assert counts.domain_keys_destroyed == 1 and counts.domain_keys_left == 0
    assert steps[:3] == [len(materials) - 2, len(materials) - 4, len(materials) - 6]
    assert own.store.count_wraps() == 0 and own.store.domain_keys() == []
    assert not token.has_master_key(bytes.fromhex(domain))
    own.unload()  # the unwrapped copies: from now on the token objects serve
    labels = dict(token.list_master_keys())
    for mid, key_id in materials.items():
        label = labels[bytes.fromhex(mid)]  # a token object, labelled as the token mode's
        assert parse_material_label(label, bytes.fromhex(mid)).key_id == key_id
    tokened = own.kms("token")
    assert isinstance(tokened.service.masters.home, TokenObjects)  # no wrap left to serve
    _check_everything(tokened, made)
    new = tokened.create_key()["KeyMetadata"]["KeyId"]
    assert own.store.get_wrap(own.material(new)) is None
    assert token.has_master_key(bytes.fromhex(own.material(new)))


def test_a_move_resumes_whatever_an_interruption_left(own, token, monkeypatch):
    monkeypatch.setattr(migrate, "RECHECK_SECONDS", 0.01)
    kms = own.kms("wrapped")
    keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(4)]
    blobs = {k: kms.encrypt(KeyId=k, Plaintext=k.encode())["CiphertextBlob"] for k in keys}
    masters = own.masters("token")
    wraps = [own.store.get_wrap(own.material(k)) for k in keys]
    # Killed after the token object was made, before the wrap was deleted.
    w = wraps[0]
    mid = bytes.fromhex(w.material_id)
    assert masters.wrapping.store(
        mid, material_label(w.key_id, mid, w.created_at), bytes.fromhex(w.domain_id),
        hsm.Wrapped(w.mechanism, w.wrapped), w.spec, w.use,
    )  # fmt: skip
    # Killed inside C_UnwrapKey: an object with the material's id that does not hold its key
    # (SoftHSM2 writes the id before the value); here another key under the same id.
    w = wraps[1]
    mid = bytes.fromhex(w.material_id)
    own.unload()
    token.create_master_key(mid, material_label(w.key_id, mid, w.created_at))
    counts = migrate.to_token(masters, own.store, batch=1)
    assert (counts.moved, counts.resumed, counts.remade, counts.failed) == (4, 1, 1, {})
    assert own.store.count_wraps() == 0 and own.store.domain_keys() == []
    own.unload()
    tokened = own.kms("token")
    for key_id, blob in blobs.items():
        assert tokened.decrypt(CiphertextBlob=blob)["Plaintext"] == key_id.encode()
    again = migrate.to_token(masters, own.store, batch=1)  # nothing left: nothing done
    assert (again.moved, again.to_move, again.domain_keys_destroyed) == (0, 0, 0)


def test_a_move_that_would_overfill_the_token_is_refused_up_front(own):
    kms = own.kms("wrapped")
    for _ in range(3):
        kms.create_key()
    masters = own.masters("token")
    room = len(masters.objects.inventory()) + 3  # the session's token holds other keys too
    with pytest.raises(migrate.MigrationRefused, match=f"token_max_objects = {room - 1}"):
        migrate.to_token(masters, own.store, max_objects=room - 1)
    assert own.store.count_wraps() == 3 and len(own.store.domain_keys()) == 1
    assert migrate.to_token(masters, own.store, max_objects=room).moved == 3


def test_doctor_in_depth_finds_the_moved_materials_sealed(own, token):
    from hsmkms.compose import master_keys
    from hsmkms.service import doctor

    kms = own.kms("wrapped")
    kms.create_key()
    kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    migrate.to_token(own.masters("token"), own.store)
    masters = master_keys(own.settings.replace(master_keys="token"), token, own.store)
    report = doctor.check(own.store, masters, deep=True)
    assert not report.missing and not report.unsealed


# -- token -> wrapped ------------------------------------------------------------------------


def test_token_to_wrapped_keeps_the_token_objects_and_wraps_what_comes_next(own, token):
    tokened = own.kms("token")
    sym = tokened.create_key()["KeyMetadata"]["KeyId"]
    blob = tokened.encrypt(KeyId=sym, Plaintext=b"before")["CiphertextBlob"]
    mac_key = tokened.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")
    mac_id = mac_key["KeyMetadata"]["KeyId"]
    mac = tokened.generate_mac(KeyId=mac_id, Message=b"m", MacAlgorithm="HMAC_SHA_384")["Mac"]
    done = migrate.to_wrapped(own.masters("wrapped"), own.store)
    assert done.made and done.rotation is None and done.wraps == 0
    assert done.stay["token"] == 2  # (the session's other keys count as this store's orphans)
    [active] = own.store.domain_keys()
    assert active.domain_id == done.domain_id and active.state == "active"
    wrapped = own.kms("wrapped")
    assert wrapped.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before"
    assert wrapped.verify_mac(KeyId=mac_id, Message=b"m", Mac=mac, MacAlgorithm="HMAC_SHA_384")[
        "MacValid"
    ]
    new = wrapped.create_key()["KeyMetadata"]["KeyId"]
    assert own.store.get_wrap(own.material(new)).domain_id == done.domain_id
    old_material = own.material(sym)
    wrapped.rotate_key_on_demand(KeyId=sym)  # the key's next material is a wrap
    assert own.store.get_wrap(own.material(sym)) is not None
    assert own.store.get_wrap(old_material) is None and token.has_master_key(
        bytes.fromhex(old_material)
    )
    assert wrapped.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before"
    again = migrate.to_wrapped(own.masters("wrapped"), own.store)
    assert not again.made and again.domain_id == done.domain_id and again.wraps == 2


# -- domain-key rotation ---------------------------------------------------------------------


def test_a_rotation_rewraps_everything_and_destroys_the_old_key_decrypting_throughout(own, token):
    kms = own.kms("wrapped")
    keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(5)]
    blobs = {k: kms.encrypt(KeyId=k, Plaintext=k.encode())["CiphertextBlob"] for k in keys}
    masters = own.masters("wrapped")
    old = masters.active_domain()
    seen = []

    def decrypt_all(rotation: migrate.Rotation) -> None:
        seen.append(rotation.left)
        own.unload()  # each decryption unwraps again, under whichever key the wrap is now
        for key_id, blob in blobs.items():
            assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == key_id.encode()

    rotation = migrate.rotate(masters, own.store, batch=2, progress=decrypt_all)
    assert rotation.made and rotation.finished and rotation.previous == [old]
    assert (rotation.moved, rotation.destroyed, rotation.left) == (5, 1, 0)
    assert seen == [3, 1, 0, 0]  # three batches, then the old key destroyed
    assert [(k.domain_id, k.state) for k in own.store.domain_keys()] == [
        (rotation.domain_id, "active")
    ]
    assert own.store.count_wraps(rotation.domain_id) == 5
    assert not token.has_master_key(bytes.fromhex(old))
    decrypt_all(rotation)


def test_a_rotation_left_unfinished_is_resumed_not_started_again(own):
    kms = own.kms("wrapped")
    for _ in range(4):
        kms.create_key()
    masters = own.masters("wrapped")
    old = masters.active_domain()
    first = migrate.rotate(masters, own.store, background=True)  # the new key, no rewrap
    assert first.made and first.previous == [old] and first.left == 4 and not first.finished
    masters.rewrap_step(batch=1)  # as far as a server's scheduler got
    status = {k.domain_id: k for k in migrate.domain_status(masters, own.store)}
    assert (status[old].state, status[old].wraps, status[old].on_token) == ("retiring", 3, True)
    assert (status[first.domain_id].state, status[first.domain_id].wraps) == ("active", 1)
    again = migrate.rotate(masters, own.store, batch=2)
    assert not again.made and again.domain_id == first.domain_id and again.previous == [old]
    assert again.finished and again.moved == 3 and again.destroyed == 1
    assert [k.domain_id for k in own.store.domain_keys()] == [first.domain_id]
    status = {k.domain_id: k for k in migrate.domain_status(masters, own.store)}
    assert old not in status and status[first.domain_id].wraps == 4


# -- the command line --------------------------------------------------------------------------


def test_the_commands_refuse_bad_usage_with_exit_2(tmp_path, capsys):
    from hsmkms.cli import main

    assert main(["migrate", "--master-keys", "token", "--home", str(tmp_path / "no")]) == 2
    assert "no hsmkms home" in capsys.readouterr().err
    assert main(["domain-key", "rotate", "--batch", "0", "--home", str(tmp_path)]) == 2
    assert "--batch" in capsys.readouterr().err
    for argv in (["migrate"], ["migrate", "--master-keys", "tokens"], ["domain-key"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hsmkms", *args, "--home", str(home)],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=clean_env(**env), check=False,
    )  # fmt: skip


_MAKE = r"""
out = {}
for i in range(int(sys.argv[3])):
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    out[key] = kms.encrypt(KeyId=key, Plaintext=key.encode())["CiphertextBlob"].hex()
print(json.dumps(out))
"""
_CHECK = r"""
blobs = json.loads(sys.stdin.read())
for key, blob in blobs.items():
    assert kms.decrypt(CiphertextBlob=bytes.fromhex(blob))["Plaintext"] == key.encode(), key
store = kms.service.store
print(json.dumps({"wraps": store.count_wraps(), "domain_keys": len(store.domain_keys()),
                  "mode": type(kms.service.masters.home).__name__}))
"""


def _library(home: Path, mode: str, code: str, *args: str, stdin: str = "") -> Any:
    return in_library(home, mode, code, *args, stdin=stdin)


@pytest.mark.slow  # processes on a fresh home: seconds
def test_the_commands_on_a_home_their_output_and_exit_codes(tmp_path):
    home = tmp_path / "home"
    blobs = _library(home, "wrapped", _MAKE, "6")
    status = _cli(home, "domain-key", "status")
    assert status.returncode == 0 and " active " in status.stdout and "6 wraps" in status.stdout
    rotated = _cli(home, "domain-key", "rotate", "--batch", "2")
    assert rotated.returncode == 0, rotated.stderr
    assert "made and active; 6 wraps to rewrap" in rotated.stdout
    assert "rewrapped 2 (4 left)" in rotated.stdout and "done: 6 wraps rewrapped" in rotated.stdout
    background = _cli(home, "domain-key", "rotate", "--background")
    assert background.returncode == 0 and "scheduler rewraps them" in background.stdout
    resumed = _cli(home, "domain-key", "rotate")
    assert resumed.returncode == 0 and "a rotation is unfinished: resuming it" in resumed.stdout
    state = json.loads(_cli(home, "domain-key", "status", "--json").stdout)
    assert [(k["state"], k["wraps"]) for k in state["domain_keys"]] == [("active", 6)]
    # Held by another run: exit 3, nothing done.
    with open(home / "master-keys.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = _cli(home, "migrate", "--master-keys", "token")
    assert busy.returncode == 3 and "another hsmkms migrate" in busy.stderr
    full = _cli(home, "migrate", "--master-keys", "token", HSMKMS_TOKEN_MAX_OBJECTS="3")
    assert full.returncode == 1 and "token_max_objects = 3" in full.stderr
    moved = _cli(home, "migrate", "--master-keys", "token", "--batch", "4")
    assert moved.returncode == 0, moved.stderr
    assert "moved 4 of 6 (2 wraps left)" in moved.stdout
    assert "domain keys destroyed: 1" in moved.stdout and 'master_keys = "token"' in moved.stdout
    after = _library(home, "token", _CHECK, stdin=json.dumps(blobs))
    assert after == {"wraps": 0, "domain_keys": 0, "mode": "TokenObjects"}
    assert "no domain key" in _cli(home, "domain-key", "status").stdout
    refused = _cli(home, "domain-key", "rotate")
    assert refused.returncode == 1 and "has no domain key" in refused.stderr
    unable = _cli(
        home, "migrate", "--master-keys", "wrapped",
        HSMKMS_TOKEN_MECHANISMS_OFF="AES_KEY_WRAP_PAD,AES_GCM",
    )  # fmt: skip
    assert unable.returncode == 1 and "cannot keep key materials wrapped" in unable.stderr
    assert "no domain key" in _cli(home, "domain-key", "status").stdout
    back = _cli(home, "migrate", "--master-keys", "wrapped")
    assert back.returncode == 0 and "6 made as token objects (the token mode)" in back.stdout
    after = _library(home, "wrapped", _CHECK, stdin=json.dumps(blobs))
    assert after == {"wraps": 0, "domain_keys": 1, "mode": "WrappedMaterials"}
    wrong = _cli(home, "domain-key", "status", "--token-label", "no-such-token")
    assert wrong.returncode == 3 and "cannot open token" in wrong.stderr
    assert os.environ.get("SOFTHSM2_CONF") != str(home / "softhsm2.conf")
