"""The store's change marker (SQLite: ``PRAGMA data_version`` on a connection of its own): it
moves for every commit made anywhere else — another process, another store object, another
thread of this one, this very thread — and stays put while nothing is written."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from hsmkms.store.sqlite import SQLiteStore

WRITE_ELSEWHERE = r"""
import sys
from datetime import UTC, datetime
from hsmkms.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
assert store.acquire_lease("other-process", "them", datetime.now(UTC), 60)
store.close()
"""


def write(store: SQLiteStore, name: str) -> None:
    assert store.acquire_lease(name, "us", datetime.now(UTC), 60)


def test_the_marker_holds_while_nothing_is_written(tmp_path: Path):
    store = SQLiteStore(str(tmp_path / "s.sqlite3"))
    first = store.change_marker()
    store.get_key("none")  # reads change nothing
    store.list_keys("1", "us-east-1", None, 10)
    assert store.change_marker() == first == store.change_marker()
    store.close()


def test_a_commit_by_this_thread_moves_it(tmp_path: Path):
    store = SQLiteStore(str(tmp_path / "s.sqlite3"))
    before = store.change_marker()
    write(store, "same-thread")  # this thread's own connection, not the marker's
    assert store.change_marker() != before
    store.close()


def test_a_commit_by_another_thread_of_this_process_moves_it(tmp_path: Path):
    store = SQLiteStore(str(tmp_path / "s.sqlite3"))
    before = store.change_marker()
    thread = threading.Thread(target=write, args=(store, "other-thread"))
    thread.start()
    thread.join()
    after = store.change_marker()
    assert after != before
    assert store.change_marker() == after
    store.close()


def test_a_commit_through_another_store_or_process_moves_it(tmp_path: Path):
    path = str(tmp_path / "s.sqlite3")
    store = SQLiteStore(path)
    before = store.change_marker()
    other = SQLiteStore(path)
    write(other, "other-store")
    other.close()
    middle = store.change_marker()
    assert middle != before
    done = subprocess.run(
        [sys.executable, "-c", WRITE_ELSEWHERE, path], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert store.change_marker() != middle
    store.close()


def test_a_marker_read_after_reopening_never_equals_one_from_before(tmp_path: Path):
    store = SQLiteStore(str(tmp_path / "s.sqlite3"))
    before = store.change_marker()
    store.close()  # a new marker connection starts its own count
    assert store.change_marker() != before
    store.close()


def test_threads_read_the_marker_while_others_write(tmp_path: Path):
    store = SQLiteStore(str(tmp_path / "s.sqlite3"))
    failures: list[BaseException] = []
    seen: list[object] = []
    writers_done = threading.Event()
    deadline = time.monotonic() + 60

    def reader() -> None:
        # Read for as long as the writers write (a fixed count of reads can all come before
        # the first commit), then once more after the last commit.
        try:
            while True:
                finished = writers_done.is_set() or time.monotonic() > deadline
                seen.append(store.change_marker())
                if finished:
                    break
        except BaseException as exc:
            failures.append(exc)

    def writer(n: int) -> None:
        try:
            for i in range(20):
                write(store, f"w{n}-{i}")
        except BaseException as exc:
            failures.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    writers_done.set()
    for t in readers:
        t.join()
    assert failures == []
    assert len(set(seen)) > 1  # the writes were seen
    last = store.change_marker()
    assert store.change_marker() == last
    store.close()
