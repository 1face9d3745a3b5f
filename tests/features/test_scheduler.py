"""The scheduler: due automatic rotations and deletion sweeps, done exactly once by all the
processes that share a store; leases in the store; a short clock (rotation_day_seconds)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import raises

from hsmkms.compose import build_service
from hsmkms.kms import KMS
from hsmkms.service import Service, rotation
from hsmkms.service.scheduler import LEASE, Scheduler

SHORT_DAY = 0.01  # seconds in a rotation day: a 90-day period is 0.9 s
PERIOD = timedelta(seconds=90 * SHORT_DAY)
MS = timedelta(milliseconds=1)


@pytest.fixture
def fast(settings, token, service) -> Iterator[KMS]:
    """The library face over the session's token and store, with 0.01-second rotation days."""
    svc = build_service(settings.replace(rotation_day_seconds=SHORT_DAY), token, service.store)
    yield KMS.from_service(svc)
    svc.pool.close()


def _held(kms: KMS) -> dict[str, str | None]:
    """Material id -> KMS key id of every material held (token objects by their labels, the
    wrapped mode's wraps by their records): both master-key modes."""
    return {mid: held.key_id for mid, held in kms.service.masters.inventory().items()}


@pytest.fixture
def schedulers() -> Iterator[Callable[..., Scheduler]]:
    """Make schedulers (no thread: the test calls tick); each gives its lease up at the end."""
    made: list[Scheduler] = []

    def make(svc: Service, holder: str | None = None) -> Scheduler:
        s = Scheduler(svc, interval=1.0, holder=holder or f"test-{uuid.uuid4().hex[:8]}")
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def _current(kms: KMS, key_id: str) -> str:
    return kms.describe_key(KeyId=key_id)["KeyMetadata"]["CurrentKeyMaterialId"]


# -- leases -------------------------------------------------------------------------------------
def test_a_store_lease_has_one_holder_at_a_time(service):
    store, name = service.store, f"test-{uuid.uuid4()}"
    t0 = datetime.now(UTC)
    s = timedelta(seconds=1)
    assert store.acquire_lease(name, "a", t0, 10)
    assert not store.acquire_lease(name, "b", t0 + 5 * s, 10)
    assert store.acquire_lease(name, "a", t0 + 5 * s, 10)  # a renewal
    lease = store.get_lease(name, t0 + 5 * s)
    assert lease is not None and lease.holder == "a"
    assert abs(lease.acquired_at - t0) < MS  # renewing keeps when it was taken
    assert abs(lease.expires_at - (t0 + 15 * s)) < MS
    assert not store.acquire_lease(name, "b", t0 + 14 * s, 10)
    assert store.acquire_lease(name, "b", t0 + 15 * s, 10)  # expired: taken over
    store.release_lease(name, "a")  # not a's any more: left alone
    lease = store.get_lease(name, t0 + 16 * s)
    assert lease is not None and lease.holder == "b"
    assert abs(lease.acquired_at - (t0 + 15 * s)) < MS
    store.release_lease(name, "b")
    assert store.get_lease(name, t0 + 16 * s) is None
    assert store.acquire_lease(name, "a", t0 + 16 * s, 10)
    assert store.get_lease(name, t0 + 27 * s) is None  # expired leases are nobody's
    store.release_lease(name, "a")


def test_of_many_threads_taking_a_lease_at_once_one_gets_it(service):
    name, at = f"test-{uuid.uuid4()}", datetime.now(UTC)
    barrier = threading.Barrier(8)
    won: list[str] = []

    def take(holder: str) -> None:
        barrier.wait()
        if service.store.acquire_lease(name, holder, at, 30):
            won.append(holder)

    threads = [threading.Thread(target=take, args=(f"h{n}",)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    service.store.release_lease(name, won[0])


def test_only_the_scheduler_holding_the_lease_runs_a_round(service, schedulers):
    a, b = schedulers(service, "a"), schedulers(service, "b")
    at = datetime.now(UTC)
    assert a.tick(at) is not None
    assert b.tick(at) is None
    assert a.tick(at + timedelta(seconds=0.5)) is not None  # renewed until 0.5 s + lease
    assert b.tick(at + timedelta(seconds=a.lease_seconds + 0.4)) is None
    # a stopped renewing (it died, say): once its lease has run out, b takes over.
    assert b.tick(at + timedelta(seconds=a.lease_seconds + 0.6)) is not None
    assert a.tick(at + timedelta(seconds=a.lease_seconds + 0.7)) is None
    b.stop()  # a clean stop gives the lease up: no waiting for it to expire
    assert a.tick(at + timedelta(seconds=a.lease_seconds + 0.7)) is not None


# -- rotation by the scheduler ------------------------------------------------------------------
def test_a_key_rotated_on_demand_and_by_the_scheduler_decrypts_blobs_of_all_four_materials(
    fast, schedulers, token
):
    kid = fast.create_key()["KeyMetadata"]["KeyId"]
    fast.enable_key_rotation(KeyId=kid, RotationPeriodInDays=90)  # every 0.9 s here
    materials: list[str] = []
    blobs: list[bytes] = []

    def encrypt_one() -> None:
        materials.append(_current(fast, kid))
        n = len(blobs)
        blobs.append(fast.encrypt(KeyId=kid, Plaintext=f"blob {n}".encode())["CiphertextBlob"])

    encrypt_one()
    fast.rotate_key_on_demand(KeyId=kid)
    encrypt_one()
    scheduler = schedulers(fast.service)
    for _ in range(2):
        due = fast.get_key_rotation_status(KeyId=kid)["NextRotationDate"]
        assert kid not in scheduler.tick(due - MS).rotated  # not due yet
        assert kid in scheduler.tick(due).rotated
        assert kid not in scheduler.tick(due + MS).rotated  # one rotation per due date
        following = fast.get_key_rotation_status(KeyId=kid)["NextRotationDate"]
        assert abs(following - (due + PERIOD)) < MS  # on time: the schedule keeps its dates
        encrypt_one()

    assert len(set(materials)) == 4  # DescribeKey's CurrentKeyMaterialId moved each time
    for n, (blob, material) in enumerate(zip(blobs, materials, strict=True)):
        out = fast.decrypt(CiphertextBlob=blob)
        assert (out["Plaintext"], out["KeyMaterialId"]) == (f"blob {n}".encode(), material)
    rotations = fast.list_key_rotations(KeyId=kid)["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND", "AUTOMATIC", "AUTOMATIC"]
    assert [r["KeyMaterialId"] for r in rotations] == materials[1:]
    assert set(materials) <= set(_held(fast))


def test_a_missed_rotation_happens_once_and_the_schedule_restarts_from_it(fast, schedulers):
    kid = fast.create_key()["KeyMetadata"]["KeyId"]
    fast.enable_key_rotation(KeyId=kid, RotationPeriodInDays=90)
    due = fast.get_key_rotation_status(KeyId=kid)["NextRotationDate"]
    late = due + 5 * PERIOD  # five due dates went by (the key was disabled, say)
    scheduler = schedulers(fast.service)
    assert kid in scheduler.tick(late).rotated
    assert kid not in scheduler.tick(late).rotated
    following = fast.get_key_rotation_status(KeyId=kid)["NextRotationDate"]
    assert abs(following - (late + PERIOD)) < MS
    assert len(fast.list_key_rotations(KeyId=kid)["Rotations"]) == 1


def test_disabled_and_pending_deletion_keys_are_not_rotated(fast, schedulers):
    disabled = fast.create_key()["KeyMetadata"]["KeyId"]
    doomed = fast.create_key()["KeyMetadata"]["KeyId"]
    for kid in (disabled, doomed):
        fast.enable_key_rotation(KeyId=kid, RotationPeriodInDays=90)
    fast.disable_key(KeyId=disabled)
    fast.schedule_key_deletion(KeyId=doomed, PendingWindowInDays=7)
    scheduler = schedulers(fast.service)
    rotated = scheduler.tick(datetime.now(UTC) + 2 * PERIOD).rotated
    assert disabled not in rotated and doomed not in rotated
    # Re-enabled after its rotation date, the key rotates at once.
    fast.enable_key(KeyId=disabled)
    assert disabled in scheduler.tick(datetime.now(UTC) + 2 * PERIOD).rotated


def test_a_rotation_whose_lease_ran_out_is_not_done_twice_and_leaves_no_orphan(fast, token):
    kid = fast.create_key()["KeyMetadata"]["KeyId"]
    fast.enable_key_rotation(KeyId=kid, RotationPeriodInDays=90)
    store = fast.service.store
    stale = store.get_key(kid)  # two schedulers both read the key while it was due
    assert stale is not None and stale.next_rotation is not None
    at = stale.next_rotation + MS
    assert rotation.rotate_automatic(fast.service, stale, at, "first")
    # The second acts on its stale read, as one whose lease expired mid-round would.
    assert not rotation.rotate_automatic(fast.service, stale, at, "second")
    assert not rotation.rotate_automatic(fast.service, stale, at + PERIOD / 2, "third")
    materials = {m.material_id for m in store.materials(kid)}
    assert len(materials) == 2  # the first material and one rotation
    held = {m for m, key_id in _held(fast).items() if key_id == kid}
    assert held == materials  # the losers destroyed the materials they made


def test_the_store_refuses_a_second_automatic_rotation_for_one_due_date(fast):
    kid = fast.create_key()["KeyMetadata"]["KeyId"]
    fast.enable_key_rotation(KeyId=kid, RotationPeriodInDays=90)
    svc, store = fast.service, fast.service.store
    key = store.get_key(kid)
    assert key is not None and key.next_rotation is not None
    due, much_later = key.next_rotation, key.next_rotation + 10 * PERIOD
    first = svc.new_material(kid, much_later, "AUTOMATIC")
    second = svc.new_material(kid, much_later, "AUTOMATIC")
    try:
        assert store.add_automatic_rotation(first, due, 90, due + PERIOD, much_later)
        # The key is still "due" by much_later's clock: only the due date's record refuses it.
        assert not store.add_automatic_rotation(second, due, 90, due + 2 * PERIOD, much_later)
    finally:
        svc.discard_new_material(second)
    assert _current(fast, kid) == first.material_id
    assert second.material_id not in {m.material_id for m in store.materials(kid)}


# -- on-demand rotation against rotations in progress -----------------------------------------
def test_an_on_demand_rotation_waits_for_the_rotation_in_progress(library, service):
    kid = library.create_key()["KeyMetadata"]["KeyId"]
    name, started = rotation.rotation_lease(kid), datetime.now(UTC)
    assert service.store.acquire_lease(name, "on-demand:another-request", started, 60)
    try:
        status = library.get_key_rotation_status(KeyId=kid)
        assert abs(status["OnDemandRotationStartDate"] - started) < MS
        with raises("ConflictException", "on-demand rotation"):
            library.rotate_key_on_demand(KeyId=kid)
    finally:
        service.store.release_lease(name, "on-demand:another-request")
    assert service.store.acquire_lease(name, "automatic:a-scheduler", started, 60)
    try:
        assert "OnDemandRotationStartDate" not in library.get_key_rotation_status(KeyId=kid)
        with raises("ConflictException", "automatic rotation"):
            library.rotate_key_on_demand(KeyId=kid)
    finally:
        service.store.release_lease(name, "automatic:a-scheduler")
    library.rotate_key_on_demand(KeyId=kid)
    assert "OnDemandRotationStartDate" not in library.get_key_rotation_status(KeyId=kid)


def test_no_on_demand_rotation_within_20_minutes_of_the_automatic_one(library, service):
    kid = library.create_key()["KeyMetadata"]["KeyId"]
    library.enable_key_rotation(KeyId=kid)
    service.store.update_key(kid, next_rotation=datetime.now(UTC) + timedelta(minutes=19))
    with raises("ConflictException", "20 minutes"):
        library.rotate_key_on_demand(KeyId=kid)
    service.store.update_key(kid, next_rotation=datetime.now(UTC) + timedelta(minutes=21))
    library.rotate_key_on_demand(KeyId=kid)


# -- deletion -----------------------------------------------------------------------------------
def test_after_the_waiting_period_no_token_object_of_the_deleted_key_remains(
    fast, schedulers, token
):
    kid = fast.create_key()["KeyMetadata"]["KeyId"]
    blob = fast.encrypt(KeyId=kid, Plaintext=b"bye")["CiphertextBlob"]
    fast.rotate_key_on_demand(KeyId=kid)
    fast.rotate_key_on_demand(KeyId=kid)
    fast.enable_key_rotation(KeyId=kid, RotationPeriodInDays=90)
    scheduler = schedulers(fast.service)
    due = fast.get_key_rotation_status(KeyId=kid)["NextRotationDate"]
    assert kid in scheduler.tick(due).rotated
    store = fast.service.store
    materials = {m.material_id for m in store.materials(kid)}
    assert len(materials) == 4

    def objects_of_the_key() -> set[str]:
        return {m for m, key_id in _held(fast).items() if key_id == kid}

    assert objects_of_the_key() == materials
    fast.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    assert kid not in scheduler.tick(due).deleted  # the waiting period runs
    assert objects_of_the_key() == materials
    store.update_key(kid, deletion_date=datetime.now(UTC) - timedelta(seconds=1))
    assert kid in scheduler.tick(datetime.now(UTC)).deleted
    assert objects_of_the_key() == set()
    assert not materials & set(_held(fast))
    with raises("NotFoundException", "deleted"):
        fast.decrypt(CiphertextBlob=blob)


# -- real server processes on one store ---------------------------------------------------------
_LIST_TOKEN = """
import sys
from pathlib import Path
from hsmkms.config import Settings
from hsmkms.home import ensure_home
from hsmkms.hsm import open_token
s = ensure_home(Settings.load(home=Path(sys.argv[1]), env={}))
t = open_token(s.pkcs11_module, s.token_label, s.read_pin())
for material, label in t.list_master_keys():
    print(material.hex(), label)
t.close()
"""


def token_objects(home: Path) -> dict[str, str]:
    """material id -> label of every master key on the token of ``home``, read by another
    process (this one's PKCS#11 library is bound to the session's token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMKMS_", "SOFTHSM2_"))}
    out = subprocess.run(
        [sys.executable, "-c", _LIST_TOKEN, str(home)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(line.split(" ", 1) for line in out.stdout.splitlines())


def _automatic_rotations(store_path: Path) -> dict[str, list[tuple[float, float]]]:
    """key id -> [(due date, rotation time)] of its automatic rotations, read from the store."""
    with closing(sqlite3.connect(store_path)) as db:
        rows = db.execute(
            "SELECT key_id, rotation_due, created_at FROM key_materials "
            "WHERE rotation_type = 'AUTOMATIC' ORDER BY created_at"
        ).fetchall()
    out: dict[str, list[tuple[float, float]]] = {}
    for key_id, due, created in rows:
        out.setdefault(key_id, []).append((due, created))
    return out


@pytest.mark.token_objects  # lists the servers' token objects in a process of its own
@pytest.mark.slow  # two servers and a run of rotation days: ~5 s
def test_two_servers_on_one_store_rotate_each_due_date_once(tmp_path):
    from server import ServerProcess

    day = 0.004  # a 90-day period is 0.36 s
    period = 90 * day
    env = {"HSMKMS_ROTATION_DAY_SECONDS": str(day), "HSMKMS_SCHEDULER_INTERVAL": "0.05"}
    first = ServerProcess(tmp_path, env=env).start()
    second = ServerProcess(tmp_path, env=env).start()  # the same home: one token, one store
    servers = [first, second]
    try:
        clients = [s.client() for s in servers]
        keys = [clients[0].create_key()["KeyMetadata"]["KeyId"] for _ in range(3)]
        enabled_at = {}
        for kid in keys:
            clients[0].enable_key_rotation(KeyId=kid, RotationPeriodInDays=90)
            status = clients[1].get_key_rotation_status(KeyId=kid)
            assert status["RotationPeriodInDays"] == 90
            enabled_at[kid] = status["NextRotationDate"].timestamp() - period
        time.sleep(4 * period)

        # The leader stops; the other server's scheduler carries on.
        with closing(sqlite3.connect(tmp_path / "hsmkms.sqlite3")) as db:
            (holder,) = db.execute("SELECT holder FROM leases WHERE name = ?", (LEASE,)).fetchone()
        leader = next(s for s in servers if f":{s.proc.pid}:" in holder)  # type: ignore[union-attr]
        follower = next(s for s in servers if s is not leader)
        for kid in keys:  # both list the same rotations (one maybe a rotation behind)
            # A rotation between the two calls also turns the first list's CURRENT material
            # NON_CURRENT in the second: compare what a rotation fixes, not the state.
            short, long = sorted(
                (
                    [{k: v for k, v in r.items() if k != "KeyMaterialState"} for r in listed]
                    for listed in (c.list_key_rotations(KeyId=kid)["Rotations"] for c in clients)
                ),
                key=len,
            )
            assert short and long[: len(short)] == short
        leader.stop()
        stopped_at = time.time()
        # Long enough for the leader's lease (at least 1 s) to lapse on a loaded machine.
        time.sleep(8 * period)
        follower.stop()
        checked_at = time.time()

        rotations = _automatic_rotations(tmp_path / "hsmkms.sqlite3")
        for kid in keys:
            done = rotations[kid]
            dues = [due for due, _ in done]
            assert len(set(dues)) == len(dues)  # one rotation per due date...
            due_dates = int((checked_at - enabled_at[kid]) / period)
            assert 2 <= len(done) <= due_dates  # ...and never more than the due dates passed
            assert all(rotated >= due for due, rotated in done)  # never early
            assert any(rotated > stopped_at for _, rotated in done)  # the follower took over
        for srv in servers:
            assert "scheduler round failed" not in srv.log()

        # The token holds exactly the recorded materials: no loser left an object behind.
        with closing(sqlite3.connect(tmp_path / "hsmkms.sqlite3")) as db:
            recorded = {m for (m,) in db.execute("SELECT material_id FROM key_materials")}
        assert set(token_objects(tmp_path)) == recorded
    finally:
        for srv in servers:
            srv.stop()


@pytest.mark.token_objects  # lists the servers' token objects in a process of its own
@pytest.mark.slow  # seconds of a process or a token: kept out of the fast subset
def test_the_server_scheduler_deletes_a_rotated_key_after_its_waiting_period(tmp_path):
    from server import ServerProcess

    from hsmkms.store import open_store

    env = {"HSMKMS_SCHEDULER_INTERVAL": "0.05"}
    with ServerProcess(tmp_path, env=env) as srv:
        client = srv.client()
        kid = client.create_key()["KeyMetadata"]["KeyId"]
        blob = client.encrypt(KeyId=kid, Plaintext=b"bye")["CiphertextBlob"]
        for _ in range(3):
            client.rotate_key_on_demand(KeyId=kid)
        objects = {m for m, label in token_objects(tmp_path).items() if f":{kid}:" in label}
        assert len(objects) == 4
        client.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
        store = open_store(str(tmp_path / "hsmkms.sqlite3"))
        try:  # the waiting period, fast-forwarded
            store.update_key(kid, deletion_date=datetime.now(UTC) - timedelta(seconds=1))
        finally:
            store.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.describe_key(KeyId=kid)
            except client.exceptions.NotFoundException:
                break
            time.sleep(0.05)
        with raises("NotFoundException", "deleted"):
            client.decrypt(CiphertextBlob=blob)
    left = token_objects(tmp_path)
    assert not objects & set(left)
    assert not any(f":{kid}:" in label for label in left.values())
