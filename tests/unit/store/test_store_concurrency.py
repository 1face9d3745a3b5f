"""The store's invariants under concurrent writers, on both backends: SQLite (one writer at a
time) and PostgreSQL (serializable transactions, a method run again when PostgreSQL aborts its
transaction). Threads stand in for nodes: each PostgreSQL connection is a session of its own."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from hsmkms.store import KeyRecord, MaterialRecord, StateChanged, open_store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def location(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "s.sqlite3")
    return request.getfixturevalue("postgres").database()


def _key(region: str = "us-east-1", key_id: str | None = None, **kw) -> KeyRecord:
    now = datetime.now(UTC)
    return KeyRecord(
        key_id=key_id or str(uuid.uuid4()),
        account_id="111122223333",
        region=region,
        key_usage="ENCRYPT_DECRYPT",
        key_spec="SYMMETRIC_DEFAULT",
        origin="AWS_KMS",
        key_manager="CUSTOMER",
        state="Enabled",
        created_at=now,
        policy="{}",
        **kw,
    )


def _material(key_id: str, rotation_type: str | None = None) -> MaterialRecord:
    return MaterialRecord(uuid.uuid4().hex * 2, key_id, datetime.now(UTC), rotation_type)


def _together(n: int, fn) -> list:
    barrier = threading.Barrier(n)

    def run(i: int):
        barrier.wait()
        return fn(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_one_state_transition_wins_a_race(location):
    store = open_store(location)
    try:
        key = _key()
        store.create_key(key, _material(key.key_id), {})

        def flip(i: int) -> str:
            try:
                store.update_key(
                    key.ref, if_state=("Enabled",), state="Disabled", description=str(i)
                )
                return "won"
            except StateChanged:
                return "lost"

        outcomes = _together(8, flip)
        assert outcomes.count("won") == 1, outcomes
        assert store.get_key(key.ref).state == "Disabled"
    finally:
        store.close()


def test_on_demand_rotations_stop_at_their_limit_under_a_race(location):
    store = open_store(location)
    try:
        key = _key()
        store.create_key(key, _material(key.key_id), {})
        results = _together(8, lambda i: store.add_on_demand_rotation(
            _material(key.key_id, "ON_DEMAND"), 3))  # fmt: skip
        assert results.count(True) == 3, results
        on_demand = [m for m in store.materials(key.key_id) if m.rotation_type == "ON_DEMAND"]
        assert len(on_demand) == 3
    finally:
        store.close()


def test_the_last_record_of_a_multi_region_key_takes_its_materials_once(location):
    store = open_store(location)
    try:
        key_id = f"mrk-{uuid.uuid4().hex}"
        regions = ["us-east-1", "us-west-2", "eu-west-1", "ap-south-1"]
        primary = _key(regions[0], key_id, multi_region=True, primary_region=regions[0])
        store.create_key(primary, _material(key_id), {})
        for region in regions[1:]:
            store.create_replica(_key(region, key_id, multi_region=True,
                                      primary_region=regions[0]), {"r": region})  # fmt: skip
        assert [k.region for k in store.keys_in_family(key_id)] == sorted(regions)
        _together(4, lambda i: store.delete_key(f"{key_id}~{regions[i]}"))
        assert store.keys_in_family(key_id) == []
        assert store.materials(key_id) == [] and store.was_deleted(key_id)
    finally:
        store.close()


def test_shared_properties_reach_every_record(location):
    store = open_store(location)
    try:
        key_id = f"mrk-{uuid.uuid4().hex}"
        first = _material(key_id)
        store.create_key(_key("us-east-1", key_id, multi_region=True,
                              primary_region="us-east-1", current_material_id=first.material_id),
                         first, {})  # fmt: skip
        store.create_replica(_key("us-west-2", key_id, multi_region=True,
                                  primary_region="us-east-1"), {})  # fmt: skip
        store.update_key(f"{key_id}~us-east-1", rotation_enabled=True, rotation_period_days=90,
                         description="primary only")  # fmt: skip
        replica = store.get_key(f"{key_id}~us-west-2")
        assert replica.rotation_enabled and replica.rotation_period_days == 90
        assert replica.description == ""
        assert store.add_on_demand_rotation(_material(key_id, "ON_DEMAND"), 10)
        current = {k.current_material_id for k in store.keys_in_family(key_id)}
        assert len(current) == 1 and current != {first.material_id}
        store.set_primary_region(key_id, "us-west-2")
        assert {k.primary_region for k in store.keys_in_family(key_id)} == {"us-west-2"}
        assert store.get_key(key_id).region == "us-west-2"  # a bare id names the primary
    finally:
        store.close()


def test_a_batch_of_last_uses_leaves_the_change_marker_as_it_was(location):
    """Every process's cache of key records watches the marker: last-use batches (every few
    seconds per process) must not empty them; a key write must."""
    from hsmkms.store import KeyUsageRecord

    store = open_store(location)
    try:
        key = _key()
        store.create_key(key, _material(key.key_id), {})
        marker = store.change_marker()
        now = datetime.now(UTC)
        store.usage_store().record_key_usage([KeyUsageRecord(key.ref, "Encrypt", now, "r", "e")])
        assert store.usage_store().get_key_usage(key.ref).operation == "Encrypt"
        assert store.change_marker() == marker
        store.update_key(key.ref, description="changed")
        assert store.change_marker() != marker
    finally:
        store.close()
