"""A token opened without preload (the parent of several server workers) looks its keys up on
first use, and still refuses a second key with an existing material id."""

from __future__ import annotations

import os

import pytest

from hsmkms.hsm import TokenError, open_token


def test_a_token_opened_without_preload_finds_its_keys_on_first_use(settings, token):
    mid = os.urandom(32)
    token.create_master_key(mid, "preload-test")
    lazy = open_token(
        settings.pkcs11_module, settings.token_label, settings.read_pin(), preload=False
    )
    try:
        sealed = lazy.encrypt(mid, bytes(12), b"secret", b"aad")
        assert token.decrypt(mid, bytes(12), sealed, b"aad") == b"secret"
        with pytest.raises(TokenError, match="already exists"):
            lazy.create_master_key(mid, "another label")
    finally:
        lazy.close()
