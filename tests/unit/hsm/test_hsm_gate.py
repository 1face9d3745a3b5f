"""hsm/gate.py: calls share the gate; a re-initialisation waits for them and goes first."""

from __future__ import annotations

import threading
import time

from hsmkms.hsm.gate import Gate


def test_many_enter_at_once_and_the_exclusive_one_waits_for_them_to_leave() -> None:
    gate = Gate()
    gate.enter()
    gate.enter()
    got = threading.Event()

    def exclusive() -> None:
        gate.enter_exclusive()
        got.set()
        gate.leave_exclusive()

    t = threading.Thread(target=exclusive)
    t.start()
    assert not got.wait(0.1)
    gate.leave()
    assert not got.wait(0.1)
    gate.leave()
    assert got.wait(2)
    t.join()


def test_a_waiting_exclusive_goes_before_new_entries() -> None:
    gate = Gate()
    gate.enter()
    order: list[str] = []

    def exclusive() -> None:
        gate.enter_exclusive()
        order.append("exclusive")
        gate.leave_exclusive()

    def late() -> None:
        gate.enter()
        order.append("late")
        gate.leave()

    writer = threading.Thread(target=exclusive)
    writer.start()
    time.sleep(0.05)  # the writer is waiting now
    reader = threading.Thread(target=late)
    reader.start()
    time.sleep(0.05)
    assert order == []  # the late reader does not slip past the waiting writer
    gate.leave()
    writer.join(2)
    reader.join(2)
    assert order == ["exclusive", "late"]
