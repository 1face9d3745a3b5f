"""Quick operations run on the event loop, slow ones on worker threads, and a token in trouble
sends everything back to the threads (api/app.py, service/quick.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from test_api_app import ALICE, FakeService, post, run

from hsmkms import errors
from hsmkms.api import create_app
from hsmkms.config import Settings
from hsmkms.kms import KMS, Caller
from hsmkms.service import quick


class QuickService(FakeService):
    """Says which operations are quick; records the thread each call ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.fail_next: Exception | None = None
        self.block_inline = False

    def runs_quickly(self, operation: str, params: dict[str, Any]) -> bool:
        return operation == "GenerateRandom"

    def dispatch(self, operation: str, params: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self.threads.append(threading.current_thread().name)
        if self.block_inline and quick.NO_WAIT.get():
            raise quick.WouldBlock()
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        return super().dispatch(operation, params, caller)


@pytest.fixture
def fake() -> QuickService:
    return QuickService()


def make_app(service: QuickService, **settings: Any) -> Any:
    return create_app(
        KMS.from_service(service), {ALICE.access_key_id: ALICE}, Settings.load(env={}, **settings)
    )


@pytest.fixture
def app(fake: QuickService):
    application = make_app(fake)
    yield application
    application.pool.shutdown()


def test_a_quick_operation_runs_on_the_event_loop(app, fake):
    assert post(app, "GenerateRandom", {"NumberOfBytes": 4}).status == 200
    assert fake.threads == ["MainThread"]


def test_a_slow_operation_runs_on_a_worker_thread(app, fake):
    post(app, "ListKeys", {})
    assert fake.threads[0].startswith("hsmkms-op")


def test_a_call_that_would_wait_runs_again_on_a_thread(app, fake):
    fake.block_inline = True
    assert post(app, "GenerateRandom", {"NumberOfBytes": 4}).status == 200
    assert fake.threads[0] == "MainThread"
    assert fake.threads[1].startswith("hsmkms-op")


def test_after_a_token_failure_inline_calls_go_to_threads_for_a_while(app, fake):
    fake.fail_next = errors.KeyUnavailableException("the HSM is away")
    assert post(app, "GenerateRandom", {"NumberOfBytes": 4}).status == 500
    assert post(app, "GenerateRandom", {"NumberOfBytes": 4}).status == 200
    assert fake.threads[0] == "MainThread"
    assert fake.threads[1].startswith("hsmkms-op")


def test_a_client_error_inline_changes_nothing(app, fake):
    fake.fail_next = errors.NotFoundException("no such key")
    assert post(app, "GenerateRandom", {"NumberOfBytes": 4}).status == 400
    post(app, "GenerateRandom", {"NumberOfBytes": 4})
    assert fake.threads == ["MainThread", "MainThread"]


def test_inline_calls_can_be_turned_off(fake):
    application = make_app(fake, api_inline="false")
    try:
        post(application, "GenerateRandom", {"NumberOfBytes": 4})
    finally:
        application.pool.shutdown()
    assert fake.threads[0].startswith("hsmkms-op")


def test_metrics_show_the_key_pair_pool_stock(fake, tmp_path):
    class Pool:
        size = 4

        def stock(self) -> dict[str, int]:
            return {"RSA_2048": 3, "RSA_4096": 0}

    fake.pool = Pool()
    token = tmp_path / "operator.token"  # /metrics needs the operator token (api/operator.py)
    token.write_text("t" * 32)
    token.chmod(0o600)
    application = make_app(fake, operator_token_file=str(token))
    try:
        bearer = {"Authorization": "Bearer " + "t" * 32}
        text = run(application, "GET", "/metrics", headers=bearer)[0].body.decode()
    finally:
        application.pool.shutdown()
    assert 'hsmkms_keypair_pool_stock{spec="RSA_2048"} 3' in text
    assert 'hsmkms_keypair_pool_stock{spec="RSA_4096"} 0' in text


# -- the real operation layer's answer ------------------------------------------------------------
@pytest.mark.parametrize(
    ("operation", "params", "expected"),
    [
        ("GenerateDataKey", {"KeyId": "k"}, True),
        ("Decrypt", {"CiphertextBlob": b"x"}, True),
        ("GenerateDataKeyPair", {"KeyPairSpec": "ECC_NIST_P256"}, True),
        ("GenerateDataKeyPair", {"KeyPairSpec": "RSA_2048"}, False),  # no pool in the suite
        ("GenerateDataKeyPairWithoutPlaintext", {"KeyPairSpec": "RSA_4096"}, False),
        ("CreateKey", {}, False),  # a store write
        ("DisableKey", {"KeyId": "k"}, False),
    ],
)
def test_which_operations_the_service_calls_quick(library, operation, params, expected):
    assert library.service.runs_quickly(operation, params) is expected


def test_an_rsa_pair_is_never_generated_on_the_event_loop(library):
    key = library.create_key()["KeyMetadata"]["KeyId"]
    assert library.try_quick("GenerateDataKeyPair", {"KeyId": key, "KeyPairSpec": "RSA_2048"}) is (
        None
    )
    no_wait = quick.NO_WAIT.set(True)
    try:
        with pytest.raises(quick.WouldBlock):
            library.service.key_pair("RSA_2048")
    finally:
        quick.NO_WAIT.reset(no_wait)


def test_a_quick_call_answers_as_call_does(library):
    key = library.create_key()["KeyMetadata"]["KeyId"]
    answer = library.try_quick("GenerateDataKey", {"KeyId": key, "NumberOfBytes": 16})
    assert answer is not None and len(answer["Plaintext"]) == 16
    assert library.try_quick("CreateKey", {}) is None


def test_two_slow_inline_calls_in_a_row_send_calls_to_threads(app, fake, monkeypatch):
    import hsmkms.api.app as app_module

    monkeypatch.setattr(app_module, "INLINE_SLOW", -1.0)  # every call counts as slow
    for _ in range(3):
        post(app, "GenerateRandom", {"NumberOfBytes": 4})
    assert fake.threads[:2] == ["MainThread", "MainThread"]
    assert fake.threads[2].startswith("hsmkms-op")


def test_a_slow_private_key_goes_to_a_thread_at_once_and_a_fast_one_stays_inline(library):
    """An RSA or ML-DSA Sign whose key record is cached is routed to a thread before it
    starts, instead of stopping inline at WouldBlock and running its checks twice; a P-256 or
    HMAC key stays on the event loop. An alias or an uncached key is decided inline as before
    (its RSA step still raises WouldBlock there)."""
    made = {
        spec: library.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        for spec in ("RSA_2048", "ML_DSA_44", "ECC_NIST_P256")
    }
    service = library.service
    for spec, meta in made.items():
        library.describe_key(KeyId=meta["KeyId"])
        service.store.get_key(meta["KeyId"])  # as a data-plane request caches it
        slow = spec != "ECC_NIST_P256"
        for name in (meta["KeyId"], meta["Arn"]):
            assert service.runs_quickly("Sign", {"KeyId": name}) is not slow, (spec, name)
    assert service.runs_quickly("Sign", {"KeyId": "alias/none"}) is True
    assert service.runs_quickly("ReEncrypt", {"SourceKeyId": made["RSA_2048"]["Arn"]}) is False
