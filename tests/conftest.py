"""Shared fixtures: one real SoftHSM2 token per test session, under a temporary home.

SoftHSM2 reads SOFTHSM2_CONF when the library is initialised, and a process loads the
PKCS#11 library once, so every in-process test shares this one token and home.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hsmkms.config import Settings
from hsmkms.home import ensure_home


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hsmkms-home")


@pytest.fixture(scope="session")
def settings(home: Path) -> Settings:
    os.environ.pop("HSMKMS_PIN", None)
    s = Settings.load(home=home, env={})
    ensure_home(s)
    return s


@pytest.fixture(scope="session")
def token(settings: Settings):
    from hsmkms.hsm import open_token

    tok = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin())
    yield tok
    tok.close()
