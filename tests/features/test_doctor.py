"""``hsmkms doctor`` beside a running server: clean, orphans (reported; old ones fixed), a
deletion in progress (not drift), missing material (drift, exit 1), no token (exit 3)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from faults import doctor, doctor_report, on_token, token_dir
from server import ServerProcess


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    with ServerProcess(tmp_path_factory.mktemp("doctor")) as server:
        yield server


def _lose(srv: ServerProcess, material: str) -> None:
    """The material goes: its token object, or in the wrapped mode (CI's fourth leg) its wrap."""
    with sqlite3.connect(srv.home / "hsmkms.sqlite3") as db:
        gone = db.execute("DELETE FROM wrapped_materials WHERE material_id = ?", (material,))
    if not gone.rowcount:
        on_token(srv.home, f"tok.destroy_master_key(bytes.fromhex({material!r}))")


def _key(srv: ServerProcess) -> tuple[str, str]:
    meta = srv.client().create_key()["KeyMetadata"]
    return meta["KeyId"], meta["CurrentKeyMaterialId"]


def test_a_consistent_home_is_clean_even_in_depth(srv: ServerProcess):
    kms = srv.client()
    for i in range(3):
        key_id, _ = _key(srv)
        kms.create_alias(AliasName=f"alias/doctor-{i}", TargetKeyId=key_id)
    code, report = doctor_report(srv.home, "--deep")
    assert code == 0, report
    assert report["keys"] >= 3 and report["materials"] == report["master_keys"]
    assert report["missing"] == [] and report["orphans"] == [] and report["unsealed"] == []
    assert report["checked_attributes"] is True and report["drift"] is False
    text = doctor(srv.home)
    assert text.returncode == 0 and "ok: every key material" in text.stdout


@pytest.mark.slow  # seconds of a process or a token: kept out of the fast subset
def test_orphans_are_harmless_and_fix_destroys_only_the_old_ones_hsmkms_made(
    srv: ServerProcess,
):
    made = on_token(
        srv.home,
        r"""
import os, uuid
from hsmkms.modes.token_objects import material_label
ids = {}
for name, age in (("old", timedelta(hours=2)), ("young", timedelta(seconds=5))):
    mid = os.urandom(32)
    tok.create_master_key(mid, material_label(str(uuid.uuid4()), mid, datetime.now(UTC) - age))
    ids[name] = mid.hex()
foreign = os.urandom(32)
tok.create_master_key(foreign, "not-ours")
ids["foreign"] = foreign.hex()
out.update(ids)
""",
    )
    code, report = doctor_report(srv.home)
    assert code == 0  # orphans are no drift
    orphans = {o["material_id"]: o for o in report["orphans"]}
    assert set(orphans) == {made["old"], made["young"], made["foreign"]}
    assert orphans[made["old"]]["age_seconds"] >= 7000
    assert orphans[made["foreign"]]["key_id"] is None
    assert orphans[made["foreign"]]["age_seconds"] is None

    code, report = doctor_report(srv.home, "--fix")
    assert code == 0
    destroyed = {o["material_id"] for o in report["orphans"] if o["destroyed"]}
    assert destroyed == {made["old"]}
    left = on_token(
        srv.home,
        f"""
for name, mid in {made!r}.items():
    out[name] = tok.has_master_key(bytes.fromhex(mid))
""",
    )
    assert left == {"old": False, "young": True, "foreign": True}
    # A margin of 0 takes the young one too; an object hsmkms did not label is never touched.
    code, report = doctor_report(srv.home, "--fix", "--min-age", "0")
    assert {o["material_id"] for o in report["orphans"] if o["destroyed"]} == {made["young"]}
    on_token(srv.home, f"tok.destroy_master_key(bytes.fromhex({made['foreign']!r}))")


@pytest.mark.slow  # seconds of a process or a token: kept out of the fast subset
def test_a_deletion_interrupted_after_destroying_the_material_is_not_drift(srv: ServerProcess):
    kms = srv.client()
    key_id, material = _key(srv)
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    # The sweep's first step (the token object), then a crash before the record went.
    with sqlite3.connect(srv.home / "hsmkms.sqlite3") as db:
        db.execute("UPDATE keys SET deletion_date = ? WHERE key_id = ?", (time.time() - 1, key_id))
    _lose(srv, material)
    code, report = doctor_report(srv.home)
    assert code == 0
    [finding] = report["missing"]
    assert finding["key_id"] == key_id and finding["deletion_in_progress"] is True
    assert "deletion in progress" in doctor(srv.home).stdout


@pytest.mark.slow  # seconds of a process or a token: kept out of the fast subset
def test_no_token_is_no_check_and_never_a_new_token(srv: ServerProcess, tmp_path: Path):
    assert doctor(tmp_path / "nowhere").returncode == 2
    directory = token_dir(srv.home)
    away = srv.home / "token-away"
    directory.rename(away)
    try:
        done = doctor(srv.home)
        assert done.returncode == 3, done.stdout + done.stderr
        assert "cannot open token 'hsmkms'" in done.stderr
        assert list((srv.home / "tokens").iterdir()) == []  # nothing initialised in its place
    finally:
        away.rename(directory)


# In the wrapped mode a server keeps its unwrapped copy of a lost wrap until it is evicted:
# tests/features/test_wrapped_mode.py has that mode's missing material.
@pytest.mark.slow  # seconds of a process or a token: kept out of the fast subset
@pytest.mark.token_objects
def test_missing_material_is_drift_and_the_key_is_unavailable_not_a_bad_ciphertext(
    srv: ServerProcess,
):
    kms = srv.client()
    key_id, material = _key(srv)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"before")["CiphertextBlob"]
    on_token(srv.home, f"tok.destroy_master_key(bytes.fromhex({material!r}))")
    done = doctor(srv.home)
    assert done.returncode == 1
    assert f"MISSING: key {key_id}" in done.stdout and "drift" in done.stdout
    code, report = doctor_report(srv.home)
    assert code == 1 and report["drift"] is True
    lost = [m["material_id"] for m in report["missing"] if not m["deletion_in_progress"]]
    assert lost == [material]
    # The server's cached handle is dead now; it must look again and say the key is missing.
    for call in (
        lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x"),
        lambda: kms.decrypt(CiphertextBlob=blob),
    ):
        with pytest.raises(ClientError) as caught:
            call()
        error = caught.value.response
        assert error["Error"]["Code"] == "KeyUnavailableException"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 500
