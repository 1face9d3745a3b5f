"""Shared fixtures: one real SoftHSM2 token per test session, under a temporary home.

SoftHSM2 reads SOFTHSM2_CONF when the library is initialised, and a process loads the
PKCS#11 library once, so every in-process test shares this one token and home.

The map of the suite (docs/testing.md):

    unit/hsm, unit/store, unit/service, unit/api, unit/   one layer at a time
    features/     the two-face suite: each behaviour through the library and over HTTP
    clients/      real clients: boto3 on the raw wire, the AWS CLI, the JS SDK, the ESDK
    resilience/   faults, races, soaks, fuzzing, slow clients

Everything under clients/ and resilience/ is marked ``slow``, and so is any other test marked
so by hand; ``scripts/test -m "not slow"`` runs the rest in under a minute.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from hsmkms.config import Settings
from hsmkms.home import ensure_home

# The server launcher and the SigV4 signer the tests share with the benchmark live in bench/
# at the repository's root, which is not installed (tests/server.py imports from there).
# ``HSMKMS_TEST_MASTER_KEYS=wrapped`` runs the suite in the wrapped master-key mode (a CI
# leg): every home the tests make, in this process (Settings.load, even with an explicit env)
# and in the servers they start (the environment), keeps its materials wrapped in the store.
# A test's own config file or override still wins.
MASTER_KEYS = os.environ.get("HSMKMS_TEST_MASTER_KEYS", "token")
if MASTER_KEYS != "token":
    os.environ["HSMKMS_MASTER_KEYS"] = MASTER_KEYS
    _load = Settings.load.__func__  # type: ignore[attr-defined]

    def _load_in_mode(cls, config_file=None, env=None, **overrides):  # type: ignore[no-untyped-def]
        if env is not None:
            env = {"HSMKMS_MASTER_KEYS": MASTER_KEYS, **env}
        return _load(cls, config_file, env, **overrides)

    Settings.load = classmethod(_load_in_mode)  # type: ignore[method-assign,assignment]

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


SLOW_GROUPS = ("clients", "resilience")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).resolve().parent
    on_postgres = os.environ.get("HSMKMS_TEST_STORE") == "postgresql"
    for item in items:
        group = item.path.resolve().relative_to(tests).parts[0]
        if group in SLOW_GROUPS:
            item.add_marker(pytest.mark.slow)
        if MASTER_KEYS != "token" and item.get_closest_marker("token_objects"):
            item.add_marker(
                pytest.mark.skip(reason="the token mode's own: checks token objects themselves")
            )
        if on_postgres and item.get_closest_marker("sqlite_home"):
            item.add_marker(
                pytest.mark.skip(
                    reason="reads the session home's SQLite file, or opens the "
                    "home in a new process (the PostgreSQL leg's store is not there)"
                )
            )


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hsmkms-home")


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster for the session (tests/postgres.py)."""
    from postgres import cluster

    with cluster() as made:
        yield made


@pytest.fixture(scope="session")
def settings(home: Path, request: pytest.FixtureRequest) -> Settings:
    """The session home's settings. ``HSMKMS_TEST_STORE=postgresql`` puts its store in a
    throwaway PostgreSQL database instead of the home's SQLite file (the CI's second leg)."""
    os.environ.pop("HSMKMS_PIN", None)
    extra = {}
    if os.environ.get("HSMKMS_TEST_STORE") == "postgresql":
        extra["store"] = request.getfixturevalue("postgres").database()
    s = Settings.load(home=home, env={}, **extra)
    ensure_home(s)
    _second_token(s)
    return s


CLUSTER_TOKEN = "hsmkms-cluster"  # a second token, the AWS_CLOUDHSM custom key store tests'


def _second_token(s: Settings) -> None:
    """A second SoftHSM2 token beside the session's, made before the PKCS#11 library is loaded
    in this process (SoftHSM2 finds tokens at C_Initialize); its user PIN in <home>/cluster.pin."""
    import secrets
    import subprocess

    pin_file = s.home / "cluster.pin"
    if pin_file.exists():
        return
    pin = secrets.token_hex(12)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            CLUSTER_TOKEN,
            "--so-pin",
            secrets.token_hex(12),
            "--pin",
            pin,
        ],  # fmt: skip
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(s.softhsm_conf_path)},
    )
    pin_file.write_text(pin)
    pin_file.chmod(0o600)


@pytest.fixture(scope="session")
def token(settings: Settings):
    from hsmkms.hsm import open_token

    tok = open_token(settings.pkcs11_module, settings.token_label, settings.read_pin())
    yield tok
    tok.close()


@pytest.fixture(scope="session")
def service(settings: Settings, token):
    """The operation layer over the session's token and a SQLite store in the home."""
    from hsmkms.compose import build_service
    from hsmkms.store import open_store

    svc = build_service(settings, token, open_store(settings.store_path))
    yield svc
    svc.pool.close()
    svc.store.close()


@pytest.fixture(scope="session")
def library(service):
    """The in-process library face, acting as the home's admin."""
    from hsmkms.kms import KMS

    return KMS.from_service(service)


@pytest.fixture(scope="session", params=["library", "http"])
def kms(request: pytest.FixtureRequest):
    """Every face of hsmkms a user calls with boto3's names: the library, and boto3 over HTTP.

    Tests written against this fixture run once per face with the same assertions."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def token_pairs_kms(settings: Settings, token, service):
    """The library face with keypair_source = "token": data key pairs made on the HSM."""
    from hsmkms.compose import build_service
    from hsmkms.kms import KMS

    svc = build_service(settings.replace(keypair_source="token"), token, service.store)
    yield KMS.from_service(svc)
    svc.pool.close()


# -- a real server -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """One ``python -m hsmkms serve`` per test session: its own temporary home (token, store,
    credentials), a free port, healthy before the first test; stopped at the end, and its log
    printed if any test failed (see tests/server.py)."""
    from server import ServerProcess

    srv = ServerProcess(tmp_path_factory.mktemp("hsmkms-server"))
    srv.start()
    yield srv
    srv.stop()
    if request.session.testsfailed:
        # Straight to the terminal: output of a session fixture's teardown is otherwise captured.
        text = f"--- hsmkms server log ({srv.log_path}) ---\n{srv.log()[-20000:]}"
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(text)
        else:
            print(text)


@pytest.fixture(scope="session")
def http(server):
    """boto3's KMS client against the session's server: the face to add to ``kms``'s params
    (``params=["library", "http"]``) so the operation tests also run over the wire."""
    return server.client()


# -- several principals in two accounts ---------------------------------------------------------
@pytest.fixture(scope="session", params=["library", "http"])
def principals(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Principals of two accounts (see tests/principals.py), each with a client of one face:
    the library acting as them, and boto3 over HTTP against a server that trusts them all."""
    from principals import Principals

    if request.param == "library":
        yield Principals.for_library(request.getfixturevalue("library"))
        return
    found, srv = Principals.for_server(tmp_path_factory.mktemp("hsmkms-principals"))
    yield found
    srv.stop()
