"""The operator endpoints (issue 13, item 12): ``GET /health`` answers anyone whether the
service is up and nothing more; its full report and ``GET /metrics`` need the bearer token of
the ``operator_token_file`` setting, and are not served at all without one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_api_app import ALICE, CANARY, FakeService, post, run

from hsmkms.api import create_app
from hsmkms.config import ConfigError, Settings
from hsmkms.kms import KMS

TOKEN = "op-" + "7" * 40


def token_file(directory: Path, text: str = TOKEN + "\n", mode: int = 0o600) -> Path:
    path = directory / "operator.token"
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.fixture
def service() -> FakeService:
    return FakeService()


def make_app(service: FakeService, **settings: Any) -> Any:
    return create_app(
        KMS.from_service(service), {ALICE.access_key_id: ALICE}, Settings.load(env={}, **settings)
    )


@pytest.fixture
def app(service: FakeService, tmp_path: Path):
    """An app with an operator token configured."""
    application = make_app(service, operator_token_file=str(token_file(tmp_path)))
    yield application
    application.pool.shutdown()


@pytest.fixture
def bare(service: FakeService):
    """An app without the setting."""
    application = make_app(service)
    yield application
    application.pool.shutdown()


BEARER = {"Authorization": f"Bearer {TOKEN}"}


# -- liveness: anyone, no detail --------------------------------------------------------------
@pytest.mark.parametrize("which", ["app", "bare"])
def test_health_without_a_token_says_only_ok(request, which):
    answer, _ = run(request.getfixturevalue(which), "GET", "/health")
    assert (answer.status, answer.json) == (200, {"ok": True})


def test_health_without_a_token_is_503_with_no_detail_when_not_ok(app, service):
    service.health_report = {"ok": False, "token": {"ok": False, "detail": "SoftHSM gone"}}
    answer, _ = run(app, "GET", "/health")
    assert (answer.status, answer.json) == (503, {"ok": False})


def test_health_without_a_token_is_503_when_the_check_itself_fails(app, service):
    service.health_report = RuntimeError(CANARY)
    answer, _ = run(app, "GET", "/health")
    assert (answer.status, answer.json) == (503, {"ok": False})


def test_head_health_is_liveness_too(app):
    answer, _ = run(app, "HEAD", "/health")
    assert answer.status == 200


# -- the full report and the metrics, with the token ------------------------------------------
def test_health_with_the_token_is_the_full_report(app):
    answer, _ = run(app, "GET", "/health", headers=BEARER)
    assert (answer.status, answer.json) == (200, {"ok": True, "token": {"ok": True}})


def test_health_with_the_token_is_503_with_the_reason(app, service):
    service.health_report = {"ok": False, "token": {"ok": False, "detail": "gone"}}
    answer, _ = run(app, "GET", "/health", headers=BEARER)
    assert answer.status == 503
    assert answer.json["token"]["detail"] == "gone"


def test_health_with_the_token_names_a_failed_check_by_its_type_only(app, service):
    service.health_report = RuntimeError(CANARY)
    answer, _ = run(app, "GET", "/health", headers=BEARER)
    assert (answer.status, answer.json) == (503, {"ok": False, "error": "RuntimeError"})


def test_metrics_with_the_token_count_requests_by_operation_and_code(app):
    post(app, "GenerateRandom", {"NumberOfBytes": 4})
    post(app, "GenerateRandom", {"NumberOfBytes": 4})
    post(app, "Encrypt", {"KeyId": "k", "Plaintext": "eA=="})
    answer, _ = run(app, "GET", "/metrics", headers=BEARER)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.body.decode()
    assert 'hsmkms_requests_total{operation="GenerateRandom",code="OK"} 2' in text
    assert 'hsmkms_requests_total{operation="Encrypt",code="NotFoundException"} 1' in text
    assert 'hsmkms_request_seconds_total{operation="GenerateRandom"}' in text


def test_the_bearer_scheme_is_case_insensitive(app):
    answer, _ = run(app, "GET", "/metrics", headers={"Authorization": f"bearer {TOKEN}"})
    assert answer.status == 200


# -- refusals ------------------------------------------------------------------------------------
def test_metrics_without_a_token_are_401_saying_what_is_needed(app):
    post(app, "GenerateRandom", {"NumberOfBytes": 4})
    answer, _ = run(app, "GET", "/metrics")
    assert answer.status == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="hsmkms operator"'
    assert answer.json == {
        "error": "Unauthorized",
        "message": "GET /metrics needs 'Authorization: Bearer <token>' with the token of the "
        "operator_token_file setting.",
    }
    assert b"GenerateRandom" not in answer.body


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + TOKEN[:-1],
        "Bearer " + TOKEN + "x",
        "Bearer",
        "Basic " + TOKEN,
        TOKEN,
        "AWS4-HMAC-SHA256 Credential=AKIAALICE/20240101/us-east-1/kms/aws4_request",
    ],
)
@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_a_wrong_token_is_401_on_both_and_shows_no_detail(app, service, authorization, path):
    service.health_report = {"ok": True, "token": {"manufacturer": CANARY}}
    answer, _ = run(app, "GET", path, headers={"Authorization": authorization})
    assert answer.status == 401
    assert answer.json["error"] == "Unauthorized"
    assert "is not the operator token" in answer.json["message"]
    assert CANARY not in answer.body.decode()


@pytest.mark.parametrize("path", ["/health", "/metrics"])
def test_without_the_setting_no_detail_and_no_metrics_are_served(bare, service, path):
    service.health_report = {"ok": True, "token": {"manufacturer": CANARY}}
    answer, _ = run(bare, "GET", path, headers=BEARER)
    assert answer.status == 401
    what = {"/health": "The full report of GET /health", "/metrics": "GET /metrics"}[path]
    assert answer.json == {
        "error": "Unauthorized",
        "message": f"{what} is not served: no operator_token_file is configured.",
    }
    assert CANARY not in answer.body.decode()


def test_without_the_setting_metrics_are_401_even_without_a_header(bare):
    answer, _ = run(bare, "GET", "/metrics")
    assert answer.status == 401
    assert "no operator_token_file is configured" in answer.json["message"]


# -- the setting ---------------------------------------------------------------------------------
def test_the_token_file_must_not_be_readable_by_others(tmp_path):
    path = token_file(tmp_path, mode=0o640)
    settings = Settings.load(env={}, operator_token_file=str(path))
    with pytest.raises(ConfigError, match="readable by others: run chmod 600"):
        settings.read_operator_token()


def test_an_app_refuses_to_start_on_a_token_file_readable_by_others(service, tmp_path):
    path = token_file(tmp_path, mode=0o604)
    with pytest.raises(ConfigError, match="readable by others"):
        make_app(service, operator_token_file=str(path))


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "is empty"),
        ("short\n", "shorter than 16 characters"),
        ("two words of a long token\n", "one line of visible ASCII"),
        ("é" * 20, "one line of visible ASCII"),
    ],
)
def test_a_token_that_is_no_bearer_token_is_refused(tmp_path, text, complaint):
    path = token_file(tmp_path, text)
    with pytest.raises(ConfigError, match=complaint):
        Settings.load(env={}, operator_token_file=str(path)).read_operator_token()


def test_a_missing_token_file_is_refused(tmp_path):
    settings = Settings.load(env={}, operator_token_file=str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="cannot read the operator token file"):
        settings.read_operator_token()


def test_the_setting_comes_from_the_environment_and_toml_too(tmp_path):
    path = str(token_file(tmp_path))
    env = Settings.load(env={"HSMKMS_OPERATOR_TOKEN_FILE": path})
    assert env.read_operator_token() == TOKEN
    toml = tmp_path / "hsmkms.toml"
    toml.write_text(f'operator_token_file = "{path}"\n')
    assert Settings.load(toml, env={}).read_operator_token() == TOKEN


def test_no_setting_is_no_token():
    assert Settings.load(env={}).read_operator_token() is None


def test_serve_refuses_to_start_on_a_token_file_readable_by_others(tmp_path, capsys):
    from hsmkms.cli import EXIT_USAGE, main

    path = token_file(tmp_path, mode=0o644)
    home = tmp_path / "home"
    args = ["serve", "--home", str(home), "--operator-token-file", str(path)]
    code = main([*args, "--pkcs11-module", str(tmp_path / "none.so")])  # else: fails fast
    assert code == EXIT_USAGE
    assert f"the operator token file {path} is readable by others" in capsys.readouterr().err
    assert not home.exists()  # refused before anything was made
