"""AWS KMS's request quotas on demand (setting ``quotas``, docs/quotas.md): token buckets per
(account, Region), shared by every process on a home, answering ThrottlingException (HTTP
400, AWS's message) once a bucket is empty; off by default.

Rates are checked as counts over a window, never as timings: a burst of calls against a
fresh bucket lets through at least its capacity (one second of its rate) and at most its
capacity plus what it refilled while the burst lasted (rate x elapsed). Each test draws on
buckets of its own Region, so that no test sees another's tokens. Both faces: the library
(``hsmkms.KMS`` over the session's token) and boto3 over HTTP to a server with two workers.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import raises
from server import ServerProcess

from hsmkms.config import ConfigError, Settings
from hsmkms.identity import Caller
from hsmkms.kms import KMS

CREATE_ALIAS, SYMMETRIC, P256_PAIRS = 3, 20, 2
PROFILE = (
    f"CreateAlias={CREATE_ALIAS},symmetric={SYMMETRIC},"
    f"GenerateDataKeyPair:ECC_NIST_P256={P256_PAIRS}"
)
MESSAGE = (
    "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
)
# Accounts of this module alone (the session's store is shared with every other test).
ACCOUNT_A, ACCOUNT_B = (f"7{uuid.uuid4().int % 10**11:011d}" for _ in "ab")


def root(account: str, region: str) -> Caller:
    return Caller(account, f"arn:aws:iam::{account}:root", secure_transport=True, region=region)


def metered_service(settings: Settings, token: Any, store: Any, home: Path, quotas: str) -> Any:
    """An operation layer over the session's token and store with ``quotas``, its buckets in
    ``home`` (the session's home holds no bucket file: each test module has its own)."""
    from hsmkms.compose import build_service

    return build_service(settings.replace(home=home, quotas=quotas), token, store)


def release(svc: Any) -> None:
    """Close what the layer owns alone (the token and store are the session's)."""
    svc.pool.close()
    svc.quotas.close()


class Face:
    """Clients of one face by (Region, account)."""

    def __init__(self, name: str, client: Callable[[str, str], Any], server: Any = None):
        self.name = name
        self.client = client
        self.server = server


@pytest.fixture(scope="module")
def library_face(settings, token, service, tmp_path_factory) -> Iterator[Face]:
    svc = metered_service(
        settings, token, service.store, tmp_path_factory.mktemp("quota-home"), PROFILE
    )
    yield Face("library", lambda region, account: KMS.from_service(svc, root(account, region)))
    release(svc)


@pytest.fixture(scope="module")
def http_face(tmp_path_factory) -> Iterator[Face]:
    """A server with two workers and two accounts' identities (admin of A, admin of B)."""
    import boto3
    from botocore.config import Config

    from hsmkms.home import PROFILE as DEFAULT
    from hsmkms.home import new_identity, write_credentials

    home = tmp_path_factory.mktemp("quota-server")
    identities = {ACCOUNT_A: new_identity(ACCOUNT_A), ACCOUNT_B: new_identity(ACCOUNT_B)}
    write_credentials(
        home / "credentials", {DEFAULT: identities[ACCOUNT_A], "b": identities[ACCOUNT_B]},
        "us-east-1",
    )  # fmt: skip
    srv = ServerProcess(home, workers=2, extra_args=("--quotas", PROFILE))

    def client(region: str, account: str) -> Any:
        ident = identities[account]
        return boto3.client(
            "kms",
            endpoint_url=srv.url,
            region_name=region,
            aws_access_key_id=ident.access_key_id,
            aws_secret_access_key=ident.secret_access_key,
            # No retry: botocore retries ThrottlingException (max_attempts=1 is one retry).
            config=Config(retries={"total_max_attempts": 1}),
        )

    with srv:
        yield Face("http", client, srv)


@pytest.fixture(params=["library", pytest.param("http", marks=pytest.mark.slow)])
def face(request: pytest.FixtureRequest) -> Face:
    return request.getfixturevalue(f"{request.param}_face")


def burst(calls: list[Callable[[], Any]]) -> tuple[int, float]:
    """(calls that succeeded, seconds the burst took); every refusal is AWS's throttling."""
    ok = 0
    started = time.monotonic()
    for call in calls:
        try:
            call()
            ok += 1
        except ClientError as exc:
            error = exc.response["Error"]
            assert (error["Code"], error["Message"]) == ("ThrottlingException", MESSAGE)
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    return ok, time.monotonic() - started


def within(ok: int, capacity: float, rate: float, elapsed: float) -> bool:
    """A fresh bucket lets a burst through at least its capacity, at most that plus what it
    refilled meanwhile."""
    return capacity <= ok <= capacity + rate * elapsed


# -- both faces ---------------------------------------------------------------------------------
def test_a_burst_gets_the_shared_symmetric_quota_and_no_more(face):
    kms = face.client("eu-west-3", ACCOUNT_A)
    key = kms.create_key()["KeyMetadata"]["KeyId"]  # CreateKey has no quota in this profile
    started = time.monotonic()
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]  # the bucket's first token
    calls = [
        lambda: kms.encrypt(KeyId=key, Plaintext=b"quota"),
        lambda: kms.decrypt(CiphertextBlob=blob),
        lambda: kms.generate_data_key(KeyId=key, KeySpec="AES_256"),
        lambda: kms.generate_random(NumberOfBytes=16),  # no key: the symmetric quota still
    ] * 15
    ok, _ = burst(calls)
    elapsed = time.monotonic() - started
    assert within(1 + ok, SYMMETRIC, SYMMETRIC, elapsed), (ok, elapsed)


def test_a_throttled_create_alias_changes_nothing(face):
    kms = face.client("ap-south-1", ACCOUNT_A)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    names = [f"alias/quota-{uuid.uuid4().hex[:12]}" for _ in range(8)]
    made: list[str] = []

    def create(name: str) -> None:
        kms.create_alias(AliasName=name, TargetKeyId=key)
        made.append(name)

    ok, elapsed = burst([lambda n=n: create(n) for n in names])
    assert within(ok, CREATE_ALIAS, CREATE_ALIAS, elapsed), (ok, elapsed)
    listed = {a["AliasName"] for a in kms.list_aliases(KeyId=key)["Aliases"]}
    assert listed == set(made)
    for name in set(names) - set(made):
        with raises("NotFoundException"):
            kms.describe_key(KeyId=name)


def test_accounts_and_regions_have_buckets_of_their_own(face):
    a, b = face.client("sa-east-1", ACCOUNT_A), face.client("sa-east-1", ACCOUNT_B)
    a_elsewhere = face.client("ca-central-1", ACCOUNT_A)

    def randoms(kms: Any, n: int) -> list[Callable[[], Any]]:
        return [lambda: kms.generate_random(NumberOfBytes=8)] * n

    started = time.monotonic()
    ok, elapsed = burst(randoms(a, 2 * SYMMETRIC))
    assert within(ok, SYMMETRIC, SYMMETRIC, elapsed)
    assert burst(randoms(b, SYMMETRIC))[0] == SYMMETRIC  # another account: a full bucket
    assert burst(randoms(a_elsewhere, SYMMETRIC))[0] == SYMMETRIC  # another Region: full too
    again, _ = burst(randoms(a, SYMMETRIC))  # A's bucket in sa-east-1 has only refilled since
    assert within(ok + again, SYMMETRIC, SYMMETRIC, time.monotonic() - started)


def test_data_key_pairs_count_per_pair_spec(face):
    kms = face.client("eu-north-1", ACCOUNT_A)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    pairs = [
        lambda: kms.generate_data_key_pair(KeyId=key, KeyPairSpec="ECC_NIST_P256"),
        lambda: kms.generate_data_key_pair_without_plaintext(
            KeyId=key, KeyPairSpec="ECC_NIST_P256"
        ),
    ] * 3
    ok, elapsed = burst(pairs)
    assert within(ok, P256_PAIRS, P256_PAIRS, elapsed), (ok, elapsed)
    # Another spec has no quota in this profile; and pairs took nothing of the symmetric one.
    p384 = [lambda: kms.generate_data_key_pair(KeyId=key, KeyPairSpec="ECC_NIST_P384")] * 3
    assert burst(p384)[0] == 3
    assert burst([lambda: kms.generate_random(NumberOfBytes=8)] * SYMMETRIC)[0] == SYMMETRIC


def test_quotas_off_throttle_nothing(kms):
    """The session's faces run with the default setting: beyond AWS's 5 CreateAlias a second."""
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    names = [f"alias/unmetered-{uuid.uuid4().hex[:12]}" for _ in range(8)]
    for name in names:
        kms.create_alias(AliasName=name, TargetKeyId=key)
    for name in names:
        kms.delete_alias(AliasName=name)


# -- the library face: AWS's profile, refunds, two layers on one home -------------------------
def test_the_aws_profile_has_aws_figures_and_throttles_create_key(
    settings, token, service, tmp_path
):
    svc = metered_service(settings, token, service.store, tmp_path, "aws,DescribeKey=1")
    try:
        rate = svc.quotas.rate
        assert (
            rate("us-east-1", "symmetric") == 100_000 and rate("eu-west-3", "symmetric") == 10_000
        )
        assert rate("us-east-2", "symmetric") == 20_000 and rate("eu-west-3", "rsa") == 1_000
        assert rate("eu-west-3", "GenerateDataKeyPair:RSA_4096") == 1
        assert rate("cn-north-1", "GenerateDataKeyPair:RSA_4096") == 0.1
        assert rate("eu-west-3", "DescribeKey") == 1 and rate("eu-west-3", "Encrypt") is None
        kms = KMS.from_service(svc, root(ACCOUNT_A, "me-south-1"))
        before = len(kms.list_keys(Limit=1000)["Keys"])
        ok, elapsed = burst([kms.create_key] * 8)
        assert within(ok, 5, 5, elapsed), (ok, elapsed)
        assert len(kms.list_keys(Limit=1000)["Keys"]) == before + ok  # a refused one made none
    finally:
        release(svc)


def test_a_refused_request_gives_back_what_it_took_and_a_refund_counts_nothing(
    settings, token, service, tmp_path
):
    from hsmkms.service.core import Request

    svc = metered_service(settings, token, service.store, tmp_path, "Encrypt=10,symmetric=2")
    try:
        kms = KMS.from_service(svc, root(ACCOUNT_A, "af-south-1"))
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        own = svc.quotas._bucket(ACCOUNT_A, "af-south-1", "Encrypt")
        assert burst([lambda: kms.encrypt(KeyId=key, Plaintext=b"x")] * 3)[0] == 2
        # The third was refused at its key's quota: the Encrypt quota got its token back.
        assert 8 <= svc.quotas.buckets.level(own) < 8.5
        # A request that runs again from the start (quick.WouldBlock) is refunded first.
        req = Request("Encrypt", {"KeyId": key}, root(ACCOUNT_A, "af-south-1"))
        svc.quotas.charge(req, None)
        svc.quotas.refund(req)
        assert req.charges == [] and svc.quotas.buckets.level(own) >= 8
    finally:
        release(svc)


def test_two_operation_layers_on_one_home_share_the_buckets(settings, token, service, tmp_path):
    """As two workers, or the library face beside a server, on one home."""
    one = metered_service(settings, token, service.store, tmp_path, PROFILE)
    two = metered_service(settings, token, service.store, tmp_path, PROFILE)
    try:
        layers = [KMS.from_service(svc, root(ACCOUNT_B, "eu-south-1")) for svc in (one, two)]
        calls = [lambda kms=kms: kms.generate_random(NumberOfBytes=8) for kms in layers]
        ok, elapsed = burst(calls * SYMMETRIC)
        assert within(ok, SYMMETRIC, SYMMETRIC, elapsed), (ok, elapsed)
        assert (tmp_path / "quotas.bin").stat().st_mode & 0o777 == 0o600
    finally:
        release(one)
        release(two)


def test_replicate_key_counts_two_create_key_in_the_replica_region(
    settings, token, service, tmp_path
):
    svc = metered_service(settings, token, service.store, tmp_path, "CreateKey=2,ReplicateKey=9")
    try:
        primary = KMS.from_service(svc, root(ACCOUNT_A, "eu-west-2"))
        replica = KMS.from_service(svc, root(ACCOUNT_A, "eu-central-2"))
        key = primary.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
        primary.replicate_key(KeyId=key, ReplicaRegion="eu-central-2")
        with raises("ThrottlingException"):
            replica.create_key()  # the replica's Region had two CreateKey of it
        other = primary.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
        with raises("ThrottlingException"):
            primary.replicate_key(KeyId=other, ReplicaRegion="eu-central-2")
        own = svc.quotas._bucket(ACCOUNT_A, "eu-west-2", "ReplicateKey")
        assert svc.quotas.buckets.level(own) >= 8  # the refused one gave its token back
    finally:
        release(svc)


def test_a_seed_applied_at_start_up_is_not_charged(settings, token, service, tmp_path, capsys):
    """`hsmkms serve --seed` makes its keys before serving: no client's quota pays for them."""
    from hsmkms import seed
    from hsmkms.cli import apply_seed

    svc = metered_service(settings, token, service.store, tmp_path, "CreateKey=1")
    try:
        ids = [str(uuid.uuid4()) for _ in range(3)]
        path = tmp_path / "seed.yaml"
        path.write_text("keys:\n" + "".join(f"  - KeyId: {i}\n" for i in ids))
        apply_seed(KMS.from_service(svc), seed.load(path), ACCOUNT_A)
        assert "3" in capsys.readouterr().out
        kms = KMS.from_service(svc, root(ACCOUNT_A, settings.region))
        assert {kms.describe_key(KeyId=i)["KeyMetadata"]["KeyId"] for i in ids} == set(ids)
        ok, elapsed = burst([kms.create_key] * 3)
        assert within(ok, 1, 1, elapsed), (ok, elapsed)  # while clients' requests are
    finally:
        release(svc)


def test_aws_table_places_every_operation_and_its_names_are_the_settings():
    from hsmkms import model
    from hsmkms.config import parse_quotas
    from hsmkms.service import quota_table as table

    counted = set(table.OPERATIONS) | {"GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"}
    counted |= set().union(*table.SHARED_OPERATIONS.values())
    assert counted == set(model.operations())  # each operation has a quota, or shares one
    assert parse_quotas(dict(table.AWS)).rates == table.AWS  # every name is one the setting takes
    assert set(table.REGIONAL) <= set(table.AWS)


# -- the setting ---------------------------------------------------------------------------------
def test_the_setting_reads_a_profile_a_table_a_text_or_json_and_refuses_nonsense(tmp_path):
    from hsmkms.cli import build_parser, main

    assert Settings.load(env={}, home=tmp_path).quotas == ""  # off by default
    assert Settings.load(env={"HSMKMS_QUOTAS": "aws"}, home=tmp_path).quotas == "aws"
    config = tmp_path / "settings.toml"
    config.write_text(
        '[quotas]\nprofile = "aws"\nCreateKey = 1\nRSA = 50\n"GenerateDataKeyPair:rsa_2048" = 0.5\n'
    )
    loaded = Settings.load(config, env={})
    assert loaded.quotas == "aws,CreateKey=1,rsa=50,GenerateDataKeyPair:RSA_2048=0.5"
    setting = loaded.quota_setting()
    assert setting.profile == "aws" and setting.rates["GenerateDataKeyPair:RSA_2048"] == 0.5
    as_json = json.dumps({"CreateAlias": 3, "ml-dsa": 7})
    assert Settings.load(env={"HSMKMS_QUOTAS": as_json}, home=tmp_path).quotas == (
        "CreateAlias=3,ml-dsa=7"
    )
    args = build_parser().parse_args(["serve", "--quotas", "CreateAlias=3"])
    assert args.quotas == "CreateAlias=3"
    for bad, match in [
        ("Nope=1", "unknown quota 'Nope'"),
        ("CreateKey=0", "positive number"),
        ("CreateKey=-2", "positive number"),
        ("CreateKey=fast", "positive number"),
        ("GenerateDataKeyPair:RSA_1024=1", "names no KeyPairSpec"),
        ("profile=gcp", "unknown profile"),
        ("{not json", "not a JSON object"),
    ]:
        with pytest.raises(ConfigError, match=match):
            Settings.load(env={"HSMKMS_QUOTAS": bad}, home=tmp_path)
    home = tmp_path / "never-made"
    assert main(["serve", "--home", str(home), "--quotas", "Nope=1"]) == 2
    assert not home.exists()  # refused before anything was made


# -- over HTTP only: every worker draws on one bucket ----------------------------------------------
def _workers_of(srv: ServerProcess, conns: list[http.client.HTTPConnection]) -> set[int]:
    """The pids of the worker processes holding ``conns``."""
    psutil = pytest.importorskip("psutil")
    mine = {c.sock.getsockname()[1] for c in conns if c.sock is not None}
    held = set()
    for worker in psutil.Process(srv.proc.pid).children(recursive=True):
        for conn in worker.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == srv.port and conn.raddr:
                if conn.raddr.port in mine:
                    held.add(worker.pid)
    return held


@pytest.mark.slow
def test_every_worker_of_a_server_draws_on_one_bucket(http_face):
    srv: ServerProcess = http_face.server
    region = "ap-northeast-2"

    def call(conn: http.client.HTTPConnection, target_region: str) -> int:
        body = json.dumps({"NumberOfBytes": 8}).encode()
        headers = srv.signed_headers("GenerateRandom", body, region=target_region)
        conn.request("POST", "/", body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            assert answer.status == 400 and json.loads(data)["__type"] == "ThrottlingException"
        return answer.status

    conns = [http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30) for _ in range(16)]
    try:
        for conn in conns:
            assert call(conn, "us-east-1") == 200  # connects it, in another Region's bucket
        assert len(_workers_of(srv, conns)) == 2, "every connection on one worker"
        go = threading.Barrier(len(conns))
        statuses: list[int] = []

        def fire(conn: http.client.HTTPConnection) -> None:
            go.wait()
            statuses.extend(call(conn, region) for _ in range(2 * SYMMETRIC // 4))

        threads = [threading.Thread(target=fire, args=(c,)) for c in conns]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - started
    finally:
        for conn in conns:
            conn.close()
    ok = statuses.count(200)
    assert len(statuses) == 16 * (2 * SYMMETRIC // 4)
    # One bucket for the node: not a bucket per worker (that would let 2 x 20 through).
    assert within(ok, SYMMETRIC, SYMMETRIC, elapsed), (ok, elapsed)
    assert ok < 2 * SYMMETRIC
