"""The store's side of the wrapped mode (store/wraps.py), on both backends: a wrap is written
only under the active domain key, a retiring key retires only once nothing is under it, and a
rewrap moves only what is still under the old key."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from hsmkms.store import Conflict, open_store
from hsmkms.store.wraps import Rewrap, WrappedMaterialRecord


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path):
    if request.param == "sqlite":
        location = str(tmp_path / "s.sqlite3")
    else:
        location = request.getfixturevalue("postgres").database()
    s = open_store(location)
    yield s
    s.close()


def _wrap(mid: str, domain: str) -> WrappedMaterialRecord:
    return WrappedMaterialRecord(
        material_id=mid, key_id="k", spec="SYMMETRIC_DEFAULT", use=None, domain_id=domain,
        mechanism="AES_KEY_WRAP_PAD", wrapped=os.urandom(40), public_key=None,
        created_at=datetime.now(UTC),
    )  # fmt: skip


def _id() -> str:
    return os.urandom(32).hex()


def test_wraps_go_under_the_active_domain_key_only(store):
    d1, d2 = _id(), _id()
    assert store.put_wrap(_wrap(_id(), d1)) is False  # no such domain key yet
    store.add_domain_key(d1, datetime.now(UTC))
    m1 = _id()
    assert store.put_wrap(_wrap(m1, d1))
    with pytest.raises(Conflict):
        store.put_wrap(_wrap(m1, d1))
    store.add_domain_key(d2, datetime.now(UTC))
    states = {k.domain_id: k.state for k in store.domain_keys()}
    assert states == {d1: "retiring", d2: "active"}
    assert store.put_wrap(_wrap(_id(), d1)) is False  # retiring: nothing new under it
    assert store.get_wrap(m1).wrapped and store.count_wraps(d1) == 1


def test_a_first_domain_key_is_added_only_where_none_is_active(store):
    d1, d2 = _id(), _id()
    assert store.add_domain_key(d1, datetime.now(UTC), first=True)
    assert not store.add_domain_key(d2, datetime.now(UTC), first=True)  # another won
    assert {k.domain_id: k.state for k in store.domain_keys()} == {d1: "active"}
    assert store.add_domain_key(d2, datetime.now(UTC))  # a rotation adds whatever is active
    assert {k.domain_id: k.state for k in store.domain_keys()} == {d1: "retiring", d2: "active"}


def test_a_retiring_key_retires_once_nothing_is_under_it(store):
    d1, d2 = _id(), _id()
    store.add_domain_key(d1, datetime.now(UTC))
    mids = sorted(_id() for _ in range(5))
    for m in mids:
        assert store.put_wrap(_wrap(m, d1))
    store.add_domain_key(d2, datetime.now(UTC))
    assert not store.retire_domain_key(d1)
    page = store.wraps(domain_id=d1, limit=3)
    assert [w.material_id for w in page] == mids[:3]
    moves = [Rewrap(w.material_id, d1, d2, w.mechanism, b"\x00" * 40) for w in page]
    assert store.rewrap(moves) == 3
    assert store.rewrap(moves) == 0  # compare-and-set: already moved
    assert store.count_wraps(d1) == 2 and store.count_wraps(d2) == 3
    rest = store.wraps(domain_id=d1, after=page[-1].material_id)
    assert store.rewrap([Rewrap(w.material_id, d1, d2, w.mechanism, b"1" * 40) for w in rest]) == 2
    assert store.retire_domain_key(d1)
    assert not store.retire_domain_key(d2)  # active, not retiring
    store.set_domain_key_state(d1, "destroyed")
    assert [k.domain_id for k in store.domain_keys()] == [d2]
    assert store.delete_wrap(mids[0]) and not store.delete_wrap(mids[0])
    assert store.get_wrap(mids[0]) is None and store.count_wraps() == 4
