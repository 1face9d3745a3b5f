"""Wildcards in a key policy cannot freeze the server (issue 13, item 1): the patterns that
made one Encrypt take 14.5 s (a Deny on one's own key with ``"Resource": "*?*?*?*?*?*?*?#"``)
and 3 s to hours (another account's caller, with no permission at all, sending a long context
value against ``StringNotLike kms:EncryptionContext:path "*/*/*/*.log"``) answer in
milliseconds over HTTP, and ``GET /health`` answers within 100 ms all the while.

An encryption context over 8,192 bytes (keys and values, UTF-8) is refused before any policy
sees it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from helpers import policy, raises
from principals import Principals

ATTACK_SECONDS = 1.5  # how long the attacker keeps sending, while /health is polled
SLOW = 0.5  # an answer slower than this is the regression (before: 3 s to hours)
HEALTH_BUDGET = 0.1


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Principals]:
    found, srv = Principals.for_server(tmp_path_factory.mktemp("policy-redos"))
    yield found
    srv.stop()


def impatient(p: Principals, name: str) -> Any:
    """A client of ``name`` that gives up after a few seconds (the unfixed server took hours)."""
    ident = p.identities[name]
    srv = p.server
    return boto3.client(
        "kms",
        endpoint_url=srv.url,
        region_name=srv.region,
        aws_access_key_id=ident.access_key_id,
        aws_secret_access_key=ident.secret_access_key,
        config=Config(retries={"max_attempts": 1}, read_timeout=5, connect_timeout=5),
    )


def admin_allow(p: Principals) -> dict[str, Any]:
    return {
        "Sid": "admin",
        "Effect": "Allow",
        "Principal": {"AWS": p.root("admin")},
        "Action": "kms:*",
        "Resource": "*",
    }


def health_during(p: Principals, attack: Callable[[], None]) -> tuple[list[float], list[float]]:
    """Run ``attack`` repeatedly for ATTACK_SECONDS in a thread while polling /health; the
    durations of each attack call and of each /health answer."""
    attacks: list[float] = []
    health: list[float] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def attacker() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                attack()
            except BaseException as exc:  # reported by the test
                failures.append(exc)
                return
            finally:
                attacks.append(time.perf_counter() - t0)

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    end = time.monotonic() + ATTACK_SECONDS
    while time.monotonic() < end:
        conn = p.server.connection(5)
        t0 = time.perf_counter()
        conn.request("GET", "/health")
        status = conn.getresponse().status
        health.append(time.perf_counter() - t0)
        conn.close()
        assert status == 200
        time.sleep(0.02)
    stop.set()
    thread.join(10)
    if failures:
        raise failures[0]
    return attacks, health


def test_a_deny_with_many_wildcards_on_ones_own_key_answers_in_milliseconds(p):
    key = p["admin"].create_key()["KeyMetadata"]["KeyId"]
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:Encrypt",
        "Resource": "*?*?*?*?*?*?*?#",
    }
    p["admin"].put_key_policy(KeyId=key, PolicyName="default", Policy=policy(admin_allow(p), deny))
    client = impatient(p, "admin")

    def attack() -> None:
        client.encrypt(KeyId=key, Plaintext=b"x")

    attacks, health = health_during(p, attack)
    assert len(attacks) >= 3
    assert max(attacks) < SLOW, attacks
    assert max(health) < HEALTH_BUDGET, health


def test_another_accounts_long_context_value_against_a_string_not_like_answers_at_once(p):
    key = p["admin"].create_key()["KeyMetadata"]["Arn"]
    guard = {
        "Sid": "only-logs",
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["kms:Encrypt", "kms:Decrypt"],
        "Resource": "*",
        "Condition": {"StringNotLike": {"kms:EncryptionContext:path": "*/*/*/*.log"}},
    }
    p["admin"].put_key_policy(KeyId=key, PolicyName="default", Policy=policy(admin_allow(p), guard))
    bob = impatient(p, "bob")  # account B: no permission on the key at all
    value = "/" * (8192 - len("path"))  # the largest context AWS lets through

    def attack() -> None:
        try:
            bob.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"path": value})
        except ReadTimeoutError:
            raise AssertionError("the server took over 5 s to answer") from None
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "AccessDeniedException"
            return
        raise AssertionError("bob was allowed")

    attacks, health = health_during(p, attack)
    assert len(attacks) >= 3
    assert max(attacks) < SLOW, attacks
    assert max(health) < HEALTH_BUDGET, health
    # The key's own admin, inside the guard, is not slowed either.
    t0 = time.perf_counter()
    p["admin"].encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"path": "a/b/c/d.log"})
    assert time.perf_counter() - t0 < SLOW


def test_an_encryption_context_over_8192_bytes_is_refused_before_any_policy_sees_it(p):
    key = p["admin"].create_key()["KeyMetadata"]["KeyId"]
    client = impatient(p, "admin")
    at_limit = {"path": "é" * ((8192 - 4) // 2)}  # 8,192 bytes in UTF-8
    blob = client.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext=at_limit)
    assert client.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext=at_limit)
    over = at_limit | {"x": "y"}  # two bytes more
    for call in (
        lambda: client.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext=over),
        lambda: client.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext=over),
        lambda: client.generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext=over),
        lambda: client.re_encrypt(
            CiphertextBlob=blob["CiphertextBlob"],
            SourceEncryptionContext=at_limit,
            DestinationKeyId=key,
            DestinationEncryptionContext=over,
        ),
    ):
        with raises("ValidationException") as info:
            call()
        assert "8192 bytes" in info.value.response["Error"]["Message"]
