"""The deletion sweep and CancelKeyDeletion, interleaved step by step (issue 13, item 4).

The sweep claims a due key in one transaction before it destroys anything, so exactly one of
the two wins: a cancel that committed first keeps the key (the sweep's claim finds it
Disabled), and a cancel that comes after the claim is refused. Neither answers 200 for a key
that is then destroyed. The interleavings are forced through the store's methods, not timed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from helpers import raises

from hsmkms.service import keys

LATER = timedelta(hours=1)  # the sweep runs "an hour later": the waiting period has ended


def _scheduled_key(library, service) -> tuple[str, bytes]:
    key_id = library.create_key()["KeyMetadata"]["KeyId"]
    blob = library.encrypt(KeyId=key_id, Plaintext=b"keep me")["CiphertextBlob"]
    library.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    # Due within the sweep's "an hour later", not yet now: a cancel is still allowed.
    service.store.update_key(key_id, deletion_date=datetime.now(UTC) + timedelta(minutes=5))
    return key_id, blob


def test_a_cancel_committed_after_the_sweep_read_the_key_keeps_it(library, service, monkeypatch):
    key_id, blob = _scheduled_key(library, service)
    real_due = service.store.keys_due_for_deletion
    answers = []

    def due_then_cancel(at: datetime):
        found = real_due(at)
        # Between the sweep's read and its first destroy, the owner cancels: acknowledged.
        answers.append(library.cancel_key_deletion(KeyId=key_id))
        return found

    monkeypatch.setattr(service.store, "keys_due_for_deletion", due_then_cancel)
    deleted = keys.sweep(service, datetime.now(UTC) + LATER)
    monkeypatch.undo()

    assert answers and answers[0]["KeyId"].endswith(key_id)
    assert key_id not in deleted
    assert library.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    library.enable_key(KeyId=key_id)
    assert library.decrypt(CiphertextBlob=blob)["Plaintext"] == b"keep me"


def test_a_cancel_that_decided_before_the_claim_and_writes_after_it_is_refused(
    library, service, monkeypatch
):
    key_id, _blob = _scheduled_key(library, service)
    real_update = service.store.update_key
    claimed = []

    def claim_then_update(kid: str, **changes):
        if not claimed:  # the cancel has decided; the sweep claims before it writes
            claimed.append(service.store.claim_for_deletion(kid, datetime.now(UTC) + LATER))
        return real_update(kid, **changes)

    monkeypatch.setattr(service.store, "update_key", claim_then_update)
    with raises("KMSInvalidStateException", "is being deleted"):
        library.cancel_key_deletion(KeyId=key_id)
    monkeypatch.undo()
    assert claimed == [True]
    # Still shown as AWS shows it while the sweep finishes: PendingDeletion.
    assert library.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert key_id in keys.sweep(service, datetime.now(UTC) + LATER)
    with raises("NotFoundException"):
        library.describe_key(KeyId=key_id)


def test_a_key_claimed_by_a_sweep_that_died_is_claimed_and_deleted_by_the_next(library, service):
    key_id, _blob = _scheduled_key(library, service)
    assert service.store.claim_for_deletion(key_id, datetime.now(UTC) + LATER)
    # The first sweep crashed here; the next one finds the claimed key and finishes it.
    assert key_id in keys.sweep(service, datetime.now(UTC) + LATER)
    with raises("NotFoundException"):
        library.describe_key(KeyId=key_id)


def test_a_claim_refuses_a_key_that_is_not_due_or_not_pending_deletion(library, service):
    key_id, _blob = _scheduled_key(library, service)
    assert not service.store.claim_for_deletion(key_id, datetime.now(UTC))  # not due yet
    library.cancel_key_deletion(KeyId=key_id)
    assert not service.store.claim_for_deletion(key_id, datetime.now(UTC) + LATER)


@pytest.mark.parametrize("operation", ["EnableKey", "DisableKey", "UpdateKeyDescription"])
def test_a_claimed_key_refuses_every_state_change(library, service, operation):
    key_id, _blob = _scheduled_key(library, service)
    assert service.store.claim_for_deletion(key_id, datetime.now(UTC) + LATER)
    params = {"KeyId": key_id}
    if operation == "UpdateKeyDescription":
        params["Description"] = "x"
    with raises("KMSInvalidStateException"):
        library.call(operation, params)
    keys.sweep(service, datetime.now(UTC) + LATER)
