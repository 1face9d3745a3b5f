"""Master keys: sealed in the token, found by CKA_ID, and kept honest across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hsmkms.hsm import KeyNotFound, LoginFailed, TokenError, open_token

IV = bytes(12)

# Another process on the same token (same SOFTHSM2_CONF, inherited from this one).
OTHER_PROCESS = r"""
import json, os, sys
from hsmkms.hsm import open_token
tok = open_token(sys.argv[1], sys.argv[2], os.environ["HSMKMS_TEST_PIN"])
mid = bytes.fromhex(sys.argv[4])
if sys.argv[3] in ("destroy", "replace"):
    tok.destroy_master_key(mid)
if sys.argv[3] == "replace":
    tok.create_master_key(mid, "replaced")
print(json.dumps({"has": tok.has_master_key(mid)}))
tok.close()
"""


def other_process(settings, action: str, mid: bytes) -> dict[str, object]:
    env = dict(os.environ, HSMKMS_TEST_PIN=settings.read_pin())
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            OTHER_PROCESS,
            settings.pkcs11_module,
            settings.token_label,
            action,
            mid.hex(),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_master_key_is_sealed_its_value_unreadable_and_unwrappable(token) -> None:
    mid = os.urandom(32)
    token.create_master_key(mid, "alias/sealed:material-1")
    try:
        check = token.check_master_key(mid)
        assert check.value_readable is False  # CKA_VALUE answers CKR_ATTRIBUTE_SENSITIVE
        assert check.wrappable is False  # C_WrapKey answers CKR_KEY_UNEXTRACTABLE
        assert check.sensitive and check.always_sensitive
        assert not check.extractable and check.never_extractable
        assert check.token and check.private and not check.modifiable
        assert check.encrypt and check.decrypt and check.wrap and check.unwrap
        assert check.bits == 256
        assert check.label == "alias/sealed:material-1"
        assert check.sealed
    finally:
        token.destroy_master_key(mid)


def test_create_has_list_destroy(token) -> None:
    mid = os.urandom(32)
    assert not token.has_master_key(mid)
    token.create_master_key(mid, "listed")
    assert token.has_master_key(mid)
    assert (mid, "listed") in token.list_master_keys()
    token.destroy_master_key(mid)
    assert not token.has_master_key(mid)
    assert mid not in dict(token.list_master_keys())
    with pytest.raises(KeyNotFound):
        token.destroy_master_key(mid)


def test_creating_the_same_material_id_twice_is_refused(token) -> None:
    mid = os.urandom(32)
    token.create_master_key(mid, "once")
    try:
        with pytest.raises(TokenError):
            token.create_master_key(mid, "twice")
        token.create_master_key(mid, "once")  # a retry of the same creation is no error
        assert [m for m, _ in token.list_master_keys()].count(mid) == 1
    finally:
        token.destroy_master_key(mid)


def test_a_key_destroyed_by_another_process_is_reported_missing(token, settings) -> None:
    mid = os.urandom(32)
    token.create_master_key(mid, "doomed")
    token.encrypt(mid, IV, b"x", b"")  # the handle is cached now
    assert other_process(settings, "destroy", mid) == {"has": False}
    with pytest.raises(KeyNotFound):
        token.encrypt(mid, IV, b"x", b"")
    with pytest.raises(KeyNotFound):
        token.decrypt(mid, IV, bytes(17), b"")
    assert not token.has_master_key(mid)
    assert token.status().ok


def test_a_key_replaced_by_another_process_is_found_again(token, settings) -> None:
    mid = os.urandom(32)
    token.create_master_key(mid, "original")
    token.encrypt(mid, IV, b"x", b"")
    assert other_process(settings, "replace", mid) == {"has": True}
    # The cached handle died with the old object; one search finds the new one.
    out = token.encrypt(mid, IV, b"x", b"")
    assert token.decrypt(mid, IV, out, b"") == b"x"
    assert dict(token.list_master_keys())[mid] == "replaced"
    token.destroy_master_key(mid)


def test_a_key_created_by_another_process_is_found_on_first_use(token, settings) -> None:
    mid = os.urandom(32)
    env = dict(os.environ, HSMKMS_TEST_PIN=settings.read_pin())
    code = (
        "import os,sys; from hsmkms.hsm import open_token;"
        "t=open_token(sys.argv[1], sys.argv[2], os.environ['HSMKMS_TEST_PIN']);"
        "t.create_master_key(bytes.fromhex(sys.argv[3]), 'born elsewhere'); t.close()"
    )
    subprocess.run(
        [sys.executable, "-c", code, settings.pkcs11_module, settings.token_label, mid.hex()],
        env=env,
        check=True,
        timeout=60,
    )
    assert token.has_master_key(mid)
    token.destroy_master_key(mid)


def test_a_second_open_in_the_same_process_shares_the_login(token, settings) -> None:
    mid = os.urandom(32)
    token.create_master_key(mid, "shared")
    second = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin())
    try:
        out = second.encrypt(mid, IV, b"shared", b"")
        assert token.decrypt(mid, IV, out, b"") == b"shared"
    finally:
        second.close()
    # Closing the second did not log the process out.
    assert token.status().ok
    assert token.decrypt(mid, IV, out, b"") == b"shared"
    with pytest.raises(LoginFailed):
        open_token(settings.pkcs11_module, settings.token_label, "not-the-pin")
    assert token.status().ok
    token.destroy_master_key(mid)
