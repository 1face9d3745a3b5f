"""The shared token buckets of the request quotas (hsmkms/service/quota_buckets.py): the
arithmetic on a clock the test moves, slots that collide, a file that is not one, and two
processes (spawned, as the server's workers are) drawing on one bucket."""

from __future__ import annotations

import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest

from hsmkms.service.quota_buckets import HEADER_SIZE, SLOT, Bucket, SharedBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drain(buckets: SharedBuckets, bucket: Bucket, limit: int = 10_000) -> int:
    """Tokens taken one by one until the bucket refuses."""
    taken = 0
    while taken < limit and buckets.take([bucket]):
        taken += 1
    return taken


def test_a_bucket_holds_one_second_and_refills_at_its_rate(tmp_path: Path):
    clock = Clock()
    with SharedBuckets(tmp_path / "q.bin", clock=clock) as buckets:
        five = Bucket.named("a/us-east-1/CreateKey", 5)
        assert drain(buckets, five) == 5
        clock.now += 0.39  # 1.95 tokens
        assert drain(buckets, five) == 1
        clock.now += 60  # idle: full, never more
        assert buckets.level(five) == 5
        assert drain(buckets, five) == 5
        slow = Bucket.named("a/us-east-1/RSA_4096 in China", 0.1)  # one in each 10 s
        assert slow.capacity == 1
        assert drain(buckets, slow) == 1
        clock.now += 9.9
        assert not buckets.take([slow])
        clock.now += 0.2
        assert buckets.take([slow])


def test_a_take_of_several_buckets_takes_from_all_or_none(tmp_path: Path):
    clock = Clock()
    with SharedBuckets(tmp_path / "q.bin", clock=clock) as buckets:
        one, many = Bucket.named("one", 1), Bucket.named("many", 100)
        assert buckets.take([one, many])
        assert not buckets.take([one, many])
        assert buckets.level(many) == 99  # the refused take left it alone
        buckets.give([one, many])
        assert buckets.level(one) == 1
        buckets.give([one, many])  # never beyond the capacity
        assert (buckets.level(one), buckets.level(many)) == (1, 100)
        three = Bucket.named("three", 3)
        assert buckets.take([three, three])  # a repeated bucket gives a token each time
        assert not buckets.take([many, three, three])
        assert (buckets.level(many), buckets.level(three)) == (100, 1)


def test_colliding_buckets_probe_and_refilled_slots_are_reused(tmp_path: Path):
    clock = Clock()
    with SharedBuckets(tmp_path / "q.bin", slots=4, clock=clock) as buckets:
        names = [Bucket.named(f"bucket-{i}", 2) for i in range(4)]
        for b in names:
            assert buckets.take([b])
        assert [buckets.level(b) for b in names] == [1, 1, 1, 1]  # four slots, four buckets
        # A fifth while all four are refilling: the least recently used one is given up.
        clock.now += 0.1
        fifth = Bucket.named("bucket-4", 2)
        assert drain(buckets, fifth) == 2
        assert sorted(buckets.level(b) for b in names) == pytest.approx([1.2, 1.2, 1.2, 2])
        # Once a bucket has refilled its slot is free again, and a full bucket is no loss.
        clock.now += 1
        assert all(drain(buckets, b) == 2 for b in [*names, fifth])


def test_another_instance_in_the_process_shares_the_buckets(tmp_path: Path):
    path = tmp_path / "q.bin"
    with SharedBuckets(path) as a:
        b = SharedBuckets(path)
        bucket = Bucket.named("shared", 3)
        assert a.take([bucket]) and b.take([bucket])
        b.close()  # closes nothing the first one uses
        assert drain(a, bucket) == 1
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_that_is_not_a_bucket_file_is_rewritten_and_nonsense_reads_full(tmp_path: Path):
    path = tmp_path / "q.bin"
    path.write_bytes(b"not a bucket file")
    bucket = Bucket.named("x", 4)
    with SharedBuckets(path) as buckets:
        assert drain(buckets, bucket) == 4
        # A slot whose numbers make no sense (a half-written slot, a clock of another boot).
        data = path.read_bytes()
        offset = next(
            HEADER_SIZE + i * SLOT.size
            for i in range(8192)
            if data[HEADER_SIZE + i * SLOT.size :][:16] == bucket.key
        )
        with open(path, "r+b") as raw:
            raw.seek(offset)
            raw.write(SLOT.pack(bucket.key, float("nan"), time.monotonic() + 1e6, 4.0, 4.0))
        # (closing `raw` dropped this process's record locks on the file: no one held one)
        assert buckets.level(bucket) == 4


def _drain_in_child(path: str, name: str, rate: float, start: float, out: multiprocessing.Queue):
    buckets = SharedBuckets(path)
    bucket = Bucket.named(name, rate)
    while time.time() < start:
        time.sleep(0.001)
    taken = attempts = 0
    for _ in range(400):
        attempts += 1
        taken += buckets.take([bucket])
    buckets.close()
    out.put((os.getpid(), taken, attempts))


@pytest.mark.slow
def test_two_processes_share_one_bucket_not_one_each(tmp_path: Path):
    path = str(tmp_path / "q.bin")
    rate = 50.0
    SharedBuckets(path).close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 3.0  # both children started and importing by then
    children = [
        ctx.Process(target=_drain_in_child, args=(path, "burst", rate, start, out)) for _ in "ab"
    ]
    for child in children:
        child.start()
    results = [out.get(timeout=60) for _ in children]
    elapsed = time.time() - start
    for child in children:
        child.join(timeout=30)
    total = sum(taken for _, taken, _ in results)
    # One bucket: its capacity, plus what it refilled while they drew on it; not two.
    assert rate <= total <= rate + rate * elapsed + 1, (results, elapsed)
    assert total < 2 * rate


def _hold_the_lock_and_die(path: str) -> None:
    from hsmkms.service import quota_buckets

    buckets = quota_buckets.SharedBuckets(path)
    f = buckets._file
    assert f is not None
    f.lock_file()
    os._exit(0)  # dies holding the file lock


@pytest.mark.slow
def test_a_process_that_dies_holding_the_lock_leaves_the_file_usable(tmp_path: Path):
    path = str(tmp_path / "q.bin")
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_hold_the_lock_and_die, args=(path,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    with SharedBuckets(path) as buckets:
        assert buckets.take([Bucket.named("after", 1)])
