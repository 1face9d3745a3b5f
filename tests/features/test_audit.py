"""The audit trail (issue 18, docs/audit.md): every request the operation layer answers,
allowed, refused or failing, yields one CloudTrail-shaped event in a JSON-lines file, without
plaintext, ciphertext or secrets; each line is hash-chained to the one before, so that
``hsmkms audit verify`` finds a deleted, edited, reordered or cut-off line; with
``audit_required`` a request whose event cannot be written is answered KMSInternalException.

The library face runs over the session's token and store with an audit file of its own; the
wire (boto3 against ``hsmkms serve --workers 2``: one file for both processes) in one slow test.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from helpers import raises
from server import REPO, ServerProcess

from hsmkms import cli
from hsmkms.audit import chain
from hsmkms.audit.files import TrailFile
from hsmkms.audit.sinks import AuditTrail
from hsmkms.identity import Caller
from hsmkms.kms import KMS

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_SECOND = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
STRANGER = Caller(
    "999988887777",
    "arn:aws:iam::999988887777:user/mallory",
    "AKIASTRANGER0000000",
    "192.0.2.7",
    True,
)
NEVER = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _forms(secret: bytes) -> list[bytes]:
    return [secret, base64.b64encode(secret), secret.hex().encode()]


def _audited(settings, token, service, directory: Path, **audit: Any) -> Any:
    from hsmkms.compose import build_service

    path = directory / "audit.jsonl"
    changes = {"audit_file": str(path), **audit}
    return build_service(settings.replace(**changes), token, service.store)


def _release(svc: Any) -> None:
    svc.audit.close()
    svc.pool.close()
    svc.usage.close()


@pytest.fixture(scope="module")
def trail(settings, token, service, tmp_path_factory):
    """(the library face with an audit file, the file)."""
    directory = tmp_path_factory.mktemp("audit")
    svc = _audited(settings, token, service, directory)
    yield KMS.from_service(svc), directory / "audit.jsonl"
    _release(svc)


class Calls:
    """Each call made, in order (one event each), and every secret it saw or made."""

    def __init__(self, kms: KMS) -> None:
        self.kms = kms
        self.made: list[tuple[str, str | None]] = []  # (operation, errorCode or None)
        self.secrets: dict[str, bytes] = {}

    def __call__(self, operation: str, kms: KMS | None = None, **params: Any) -> Any:
        from hsmkms import errors

        method = getattr(kms or self.kms, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        try:
            answer = method(**params)
        except errors.KMSError as exc:
            self.made.append((operation, exc.code))
            return exc
        self.made.append((operation, None))
        for name, value in {**params, **answer}.items():
            if isinstance(value, bytes) and len(value) >= 8:
                self.secrets[f"{operation}.{name}"] = value
        return answer


def _every_family(calls: Calls) -> dict[str, Any]:
    """Allowed, refused and failing requests of every family of operations."""
    kms = calls.kms
    made = calls("CreateKey", Description="audited", Tags=[{"TagKey": "team", "TagValue": "a"}])
    key, arn = made["KeyMetadata"]["KeyId"], made["KeyMetadata"]["Arn"]
    calls("DescribeKey", KeyId=key)
    calls("DescribeKey", KeyId="alias/audit-nothing-here")  # refused: NotFound
    alias = f"alias/audit-{key[:8]}"
    calls("CreateAlias", AliasName=alias, TargetKeyId=key)
    calls("ListAliases", KeyId=key)
    plain = b"AUDIT-PLAINTEXT-" + os.urandom(16)
    context = {"tenant": "t-42"}
    blob = calls("Encrypt", KeyId=alias, Plaintext=plain, EncryptionContext=context)
    calls("Decrypt", CiphertextBlob=blob["CiphertextBlob"], EncryptionContext=context)
    calls("Decrypt", CiphertextBlob=blob["CiphertextBlob"])  # failing: InvalidCiphertext
    calls("Encrypt", kms.as_caller(STRANGER), KeyId=arn, Plaintext=plain)  # refused: denied
    calls("GenerateDataKey", KeyId=key, KeySpec="AES_256", EncryptionContext=context)
    other = calls("CreateKey")["KeyMetadata"]["KeyId"]
    calls(
        "ReEncrypt",
        CiphertextBlob=blob["CiphertextBlob"],
        SourceEncryptionContext=context,
        DestinationKeyId=other,
    )
    calls("GenerateRandom", NumberOfBytes=32)
    calls("GenerateDataKeyPair", KeyId=key, KeyPairSpec="ECC_NIST_P256")
    grant = calls(
        "CreateGrant",
        KeyId=key,
        GranteePrincipal="arn:aws:iam::111122223333:role/reader",
        Operations=["Decrypt"],
    )
    calls("ListGrants", KeyId=key)
    signer = calls("CreateKey", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    signer_id = signer["KeyMetadata"]["KeyId"]
    sig = calls("Sign", KeyId=signer_id, Message=b"to sign", SigningAlgorithm="ECDSA_SHA_256")
    calls(
        "Verify",
        KeyId=signer_id,
        Message=b"to sign",
        Signature=sig["Signature"],
        SigningAlgorithm="ECDSA_SHA_256",
    )
    calls("GetPublicKey", KeyId=signer_id)
    mac_key = calls("CreateKey", KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    mac_id = mac_key["KeyMetadata"]["KeyId"]
    calls("GenerateMac", KeyId=mac_id, Message=b"to mac", MacAlgorithm="HMAC_SHA_256")
    external = calls("CreateKey", Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    parameters = calls(
        "GetParametersForImport",
        KeyId=external,
        WrappingAlgorithm="RSAES_OAEP_SHA_256",
        WrappingKeySpec="RSA_2048",
    )
    material = os.urandom(32)
    calls.secrets["imported material"] = material
    public = serialization.load_der_public_key(parameters["PublicKey"])
    oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    calls(
        "ImportKeyMaterial",
        KeyId=external,
        ImportToken=parameters["ImportToken"],
        EncryptedKeyMaterial=public.encrypt(material, oaep),  # type: ignore[union-attr]
        **NEVER,
    )
    primary = calls("CreateKey", MultiRegion=True)["KeyMetadata"]["KeyId"]
    calls("ReplicateKey", KeyId=primary, ReplicaRegion="us-west-2")
    calls("DisableKey", KeyId=other)
    calls("Encrypt", KeyId=other, Plaintext=plain)  # failing: DisabledException
    calls("ScheduleKeyDeletion", KeyId=other, PendingWindowInDays=7)
    return {"key": key, "arn": arn, "grant": grant, "plain": plain}


@pytest.fixture(scope="module")
def recorded(trail):
    kms, path = trail
    calls = Calls(kms)
    made = _every_family(calls)
    return calls, made, _events(path), path


def test_every_request_allowed_refused_or_failing_yields_one_event_in_order(recorded):
    calls, _, events, _ = recorded
    assert [(e["eventName"], e.get("errorCode")) for e in events] == calls.made
    codes = {code for _, code in calls.made if code}
    assert {"NotFoundException", "AccessDeniedException"} <= codes  # refused
    assert {"InvalidCiphertextException", "DisabledException"} <= codes  # failing
    assert len({e["eventID"] for e in events}) == len(events)


def test_an_event_has_cloudtrails_fields(recorded, trail):
    _, made, events, _ = recorded
    admin = trail[0].caller
    for e in events:
        assert e["eventVersion"] == "1.08" and e["eventSource"] == "kms.amazonaws.com"
        assert e["eventType"] == "AwsApiCall" and e["eventCategory"] == "Management"
        assert e["managementEvent"] is True and ISO_SECOND.match(e["eventTime"])
        assert UUID.match(e["requestID"]) and UUID.match(e["eventID"])
        who = e["userIdentity"]
        assert who["arn"] in (admin.principal_arn, STRANGER.principal_arn)
        assert e["recipientAccountId"] == who["accountId"]
        assert e["awsRegion"] == "us-east-1"
    create = events[0]
    assert create["userIdentity"] == {
        "type": "IAMUser",
        "principalId": create["userIdentity"]["principalId"],
        "arn": admin.principal_arn,
        "accountId": admin.account_id,
        "userName": admin.principal_arn.rsplit("/", 1)[1],
        "accessKeyId": admin.access_key_id,
    }
    assert create["userIdentity"]["principalId"].startswith("AIDA")
    assert create["readOnly"] is False
    assert create["requestParameters"] == {
        "description": "audited",
        "tags": [{"tagKey": "team", "tagValue": "a"}],
    }
    meta = create["responseElements"]["keyMetadata"]
    assert meta["keyId"] == made["key"] and meta["aWSAccountId"] == admin.account_id
    assert re.match(
        r"^[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d\d:\d\d [AP]M$", meta["creationDate"]
    )
    assert create["resources"] == [
        {"accountId": admin.account_id, "type": "AWS::KMS::Key", "ARN": made["arn"]}
    ]


def _first(events: list[dict], name: str, failed: bool = False) -> dict:
    return next(e for e in events if e["eventName"] == name and ("errorCode" in e) == failed)


def test_a_cryptographic_call_is_read_only_and_names_its_key_material(recorded, trail):
    _, made, events, _ = recorded
    material = trail[0].describe_key(KeyId=made["key"])["KeyMetadata"]["CurrentKeyMaterialId"]
    encrypt = _first(events, "Encrypt")
    assert encrypt["readOnly"] is True and encrypt["responseElements"] is None
    assert encrypt["requestParameters"] == {
        "keyId": f"alias/audit-{made['key'][:8]}",
        "encryptionContext": {"tenant": "t-42"},
    }
    assert encrypt["additionalEventData"] == {"keyMaterialId": material}
    assert encrypt["resources"][0]["ARN"] == made["arn"]
    decrypt = _first(events, "Decrypt")
    assert decrypt["requestParameters"] == {"encryptionContext": {"tenant": "t-42"}}
    assert decrypt["additionalEventData"] == {"keyMaterialId": material}
    moved = _first(events, "ReEncrypt")["additionalEventData"]
    assert moved["sourceKeyMaterialId"] == material and moved["destinationKeyMaterialId"]
    pair = _first(events, "GenerateDataKeyPair")
    assert pair["requestParameters"]["keyPairSpec"] == "ECC_NIST_P256"
    assert _first(events, "GenerateRandom")["requestParameters"] == {"numberOfBytes": 32}
    signed = _first(events, "Sign")["requestParameters"]
    assert signed["signingAlgorithm"] == "ECDSA_SHA_256" and "message" not in signed
    assert "signature" not in _first(events, "Verify")["requestParameters"]
    assert _first(events, "GenerateMac")["additionalEventData"]["keyMaterialId"]


def test_refused_and_failing_requests_carry_the_error(recorded):
    _, made, events, _ = recorded
    missing = _first(events, "DescribeKey", failed=True)
    assert missing["errorCode"] == "NotFoundException" and "errorMessage" in missing
    assert "resources" not in missing and "additionalEventData" not in missing
    denied = _first(events, "Encrypt", failed=True)
    assert denied["errorCode"] == "AccessDeniedException"
    assert denied["userIdentity"]["arn"] == STRANGER.principal_arn
    assert denied["sourceIPAddress"] == "192.0.2.7"
    assert denied["recipientAccountId"] == STRANGER.account_id
    bad = _first(events, "Decrypt", failed=True)
    assert bad["errorCode"] == "InvalidCiphertextException"
    assert bad["responseElements"] is None
    disabled = [e for e in events if e.get("errorCode") == "DisabledException"]
    assert len(disabled) == 1 and disabled[0]["eventName"] == "Encrypt"


def test_management_calls_answer_in_response_elements_without_secrets(recorded):
    _, made, events, _ = recorded
    grant = _first(events, "CreateGrant")
    assert grant["responseElements"] == {"grantId": made["grant"]["GrantId"]}
    assert made["grant"]["GrantToken"] not in json.dumps(events)
    deletion = _first(events, "ScheduleKeyDeletion")["responseElements"]
    assert deletion["keyState"] == "PendingDeletion" and deletion["pendingWindowInDays"] == 7
    replica = _first(events, "ReplicateKey")
    assert replica["responseElements"]["replicaKeyMetadata"]["arn"].startswith(
        "arn:aws:kms:us-west-2:"
    )
    arns = [r["ARN"] for r in replica["resources"]]
    assert any(":us-west-2:" in a for a in arns) and any(":us-east-1:" in a for a in arns)
    imported = _first(events, "ImportKeyMaterial")
    assert "importToken" not in imported["requestParameters"]
    assert "encryptedKeyMaterial" not in imported["requestParameters"]
    assert imported["additionalEventData"]["keyMaterialId"]
    assert _first(events, "GetParametersForImport")["responseElements"] is None
    assert _first(events, "DescribeKey")["responseElements"] is None  # read-only


def test_no_plaintext_ciphertext_or_key_appears_in_the_audit_file(recorded):
    calls, made, _, path = recorded
    data = path.read_bytes()
    assert made["key"].encode() in data  # the search sees what is there
    secrets = {**calls.secrets, "plaintext": made["plain"]}
    assert len(secrets) > 15
    found = [what for what, secret in secrets.items() for f in _forms(secret) if f in data]
    assert found == []
    assert os.stat(path).st_mode & 0o077 == 0


def test_the_chain_of_the_file_verifies(recorded):
    path = recorded[3]
    events = _events(path)
    report = chain.verify([path])
    assert report.ok, report.breaks
    assert report.events == len(events) and report.first_seq == 1
    assert [e["hsmkmsChain"]["seq"] for e in events] == list(range(1, len(events) + 1))


# -- the chain, line by line ------------------------------------------------------------------
def _write(path: Path, n: int, max_bytes: int = 0, key: bytes | None = None) -> AuditTrail:
    sink = AuditTrail(
        "us-east-1",
        file=TrailFile(path, max_bytes, key),
        fsync_every=0,
    )
    for i in range(n):
        sink.write(json.dumps({"eventName": "Encrypt", "n": i}, separators=(",", ":")).encode())
    return sink


def test_verify_names_a_deleted_an_edited_a_reordered_and_a_cut_off_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 6).close()
    lines = path.read_bytes().splitlines(keepends=True)

    def check(variant: list[bytes]) -> list[str]:
        path.write_bytes(b"".join(variant))
        return chain.verify([path]).breaks

    assert check(lines) == []
    assert check(lines[:2] + lines[3:]) == [f"{path}:3: seq 3 is missing before seq 4 (deleted)"]
    edited = lines[4].replace(b'"n":4', b'"n":5')
    assert check(lines[:4] + [edited] + lines[5:]) == [
        f"{path}:5: seq 5 was changed after it was written (its hash does not match its content)"
    ]
    swapped = check(lines[:2] + [lines[3], lines[2]] + lines[4:])
    assert swapped and "seq 4" in swapped[0]
    assert check(lines[:5] + [lines[5][:40]]) == [
        f"{path}:6: the last line is cut short (a crash mid-write?)"
    ]
    assert check(lines[1:]) == [f"{path}:1: seq 1 is missing before seq 2 (deleted)"]
    assert chain.verify([path], partial=True).ok  # the rest of the chain holds


def _recomputed(line: bytes, key: bytes | None, old: bytes, new: bytes) -> bytes:
    """``line`` edited, its hash made again over the edit (with ``key``, or plain SHA-256)."""
    link = chain.parse(line.rstrip(b"\n"))
    assert link is not None
    body = link.body.replace(old, new)
    return body + b',"hash":"' + chain.Chain(key).digest(body).encode() + b'"}}\n'


def test_a_plain_chain_catches_a_recomputed_line_by_the_next_one_but_not_the_last(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 3).close()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + _recomputed(lines[1], None, b'"n":1', b'"n":7') + lines[2])
    assert chain.verify([path]).breaks == [
        f"{path}:3: seq 3 does not follow the line before it (that one was replaced)"
    ]
    path.write_bytes(lines[0] + lines[1] + _recomputed(lines[2], None, b'"n":2', b'"n":7'))
    assert chain.verify([path]).ok  # the limit of a plain chain: hence the HMAC key


def test_a_keyed_chain_cannot_be_recomputed_without_its_key(tmp_path):
    path = tmp_path / "audit.jsonl"
    key = b"k" * 32
    _write(path, 3, key=key).close()
    assert chain.verify([path], key=key).ok
    plain = chain.verify([path])
    assert not plain.ok and "give the key" in plain.breaks[0]
    lines = path.read_bytes().splitlines(keepends=True)
    forged = _recomputed(lines[2], b"a guess at the key.............", b'"n":2', b'"n":7')
    path.write_bytes(lines[0] + lines[1] + forged)
    assert chain.verify([path], key=key).breaks == [
        f"{path}:3: seq 3 was changed after it was written (its hash does not match its content)"
    ]


def test_a_rotated_trail_continues_its_chain_across_files(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 40, max_bytes=1000).close()
    rotated = sorted(tmp_path.glob("audit.jsonl.[0-9]*"))
    assert len(rotated) >= 3
    files, skipped = chain.audit_files([tmp_path])
    assert files[-1] == path and skipped == []
    report = chain.verify(files)
    assert report.ok and report.events == 40 and report.files == len(rotated) + 1
    assert all(p.stat().st_size <= 1000 for p in rotated)
    rotated[1].unlink()  # a whole file of the middle removed
    files, _ = chain.audit_files([tmp_path])
    assert "missing" in chain.verify(files).breaks[0]


def test_a_new_writer_continues_the_chain_a_previous_one_left(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 3).close()
    _write(path, 2).close()  # another process, or the same after a restart
    report = chain.verify([path])
    assert report.ok and report.events == 5


def test_a_line_written_by_a_writer_that_died_before_sharing_it_is_followed(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 3).close()
    last = chain.parse(path.read_bytes().splitlines()[-1])
    assert last is not None
    orphan = chain.Chain(None, last.seq, last.hash).line(b'{"eventName":"Decrypt"}')[0]
    with open(path, "ab") as fh:
        fh.write(orphan)  # in the file, not in the shared state
    _write(path, 1).close()
    lock = path.with_name(path.name + ".lock")
    lock.write_bytes(os.urandom(4096))  # a torn state: the file's last line is read instead
    _write(path, 1).close()
    report = chain.verify([path])
    assert report.ok and report.events == 6, report.breaks


def test_a_file_deleted_by_hand_is_begun_again_and_the_chain_goes_on(tmp_path):
    path = tmp_path / "audit.jsonl"
    sink = _write(path, 3)
    kept = path.read_bytes()
    path.unlink()
    sink.write(b'{"eventName":"Encrypt"}')
    sink.close()
    assert chain.verify([path]).breaks == [
        f"{path}:1: seq 1 to 3 is missing before seq 4 (deleted)"
    ]
    assert chain.verify([path], partial=True).ok
    (tmp_path / "audit.jsonl.000000000003").write_bytes(kept)
    assert chain.verify(chain.audit_files([tmp_path])[0]).ok


def test_audit_verify_on_the_command_line_exits_1_on_a_break(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    _write(path, 4).close()
    assert cli.main(["audit", "verify", str(path)]) == 0
    assert "OK: 4 events" in capsys.readouterr().out
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[2] + lines[3])
    assert cli.main(["audit", "verify", str(tmp_path)]) == 1
    assert "seq 2 is missing" in capsys.readouterr().out


def test_stdout_gets_the_same_chained_lines_as_the_file(tmp_path):
    import io

    path = tmp_path / "audit.jsonl"
    out = io.StringIO()
    sink = AuditTrail(
        "us-east-1",
        file=TrailFile(path, 0, None),
        stream=out,
    )
    for i in range(3):
        sink.write(json.dumps({"eventName": "Encrypt", "n": i}).encode())
    sink.close()
    assert out.getvalue().encode() == path.read_bytes()


def test_the_audit_settings_come_from_serve_flags_and_variables(tmp_path):
    from hsmkms.audit import command
    from hsmkms.config import ConfigError, Settings

    args = cli.build_parser().parse_args(
        ["serve", "--audit-file", "trail/audit.jsonl", "--audit-required", "--audit-fsync", "0"]
    )
    settings = Settings.load(env={}, home=tmp_path, **command.serve_overrides(args))
    assert settings.audit_path == tmp_path / "trail/audit.jsonl"
    assert settings.audit_required and settings.audit_fsync == 0 and not settings.audit_stdout
    env = {"HSMKMS_AUDIT_STDOUT": "true", "HSMKMS_AUDIT_MAX_BYTES": "1000"}
    settings = Settings.load(env=env, home=tmp_path)
    assert settings.audit_stdout and settings.audit_max_bytes == 1000
    assert settings.audit_path is None
    with pytest.raises(ConfigError, match="audit_max_bytes"):
        Settings.load(env={"HSMKMS_AUDIT_MAX_BYTES": "-1"}, home=tmp_path)


# -- audit_required ---------------------------------------------------------------------------
def test_a_required_trail_that_cannot_write_answers_500_and_recovers(
    settings, token, service, tmp_path
):
    path = tmp_path / "audit.jsonl"
    path.symlink_to("/dev/full")  # every write: ENOSPC
    svc = _audited(settings, token, service, tmp_path, audit_required=True)
    kms = KMS.from_service(svc)
    try:
        with raises("KMSInternalException", "audit event could not be written") as info:
            kms.generate_random(NumberOfBytes=8)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        with raises("KMSInternalException"):  # a refusal is not answered unaudited either
            kms.describe_key(KeyId="alias/audit-nothing-here")
        path.unlink()  # the disk has room again
        # Known broken, the trail refuses before running; the refusal's own event is the
        # write that shows the trail works again, and the next request is answered.
        with raises("KMSInternalException", "Nothing was done"):
            kms.generate_random(NumberOfBytes=8)
        assert len(kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
        assert [e["eventName"] for e in _events(path)] == ["GenerateRandom", "GenerateRandom"]
    finally:
        _release(svc)


def test_a_broken_required_trail_refuses_before_a_request_runs(tmp_path):
    from hsmkms import errors
    from hsmkms.audit import sinks
    from hsmkms.service.core import Request

    path = tmp_path / "audit.jsonl"
    path.symlink_to("/dev/full")
    sink = AuditTrail("us-east-1", file=TrailFile(path, 0, None), required=True)
    req = Request("GenerateRandom", {"NumberOfBytes": 8}, STRANGER)
    sink.admit(req)  # not known broken yet
    with pytest.raises(errors.KMSInternalException, match="Its answer is withheld"):
        sink.record(req, None, {"Plaintext": b"12345678"})
    with pytest.raises(errors.KMSInternalException) as refused:
        sink.admit(req)
    assert refused.value.message == sinks.REFUSED_BEFORE  # "Nothing was done"
    with pytest.raises(errors.KMSInternalException) as still:
        sink.record(req, refused.value)  # the refusal's own event cannot be written either
    assert still.value.message == sinks.REFUSED_BEFORE
    path.unlink()
    sink.record(req, refused.value)  # written: the trail works again
    sink.admit(req)
    assert _events(path)[0]["errorCode"] == "KMSInternalException"
    sink.close()


def test_a_trail_not_required_drops_the_event_and_answers(settings, token, service, tmp_path):
    path = tmp_path / "audit.jsonl"
    path.symlink_to("/dev/full")
    svc = _audited(settings, token, service, tmp_path)
    try:
        assert len(KMS.from_service(svc).generate_random(NumberOfBytes=8)["Plaintext"]) == 8
        assert svc.audit.dropped == 1
    finally:
        _release(svc)


# -- several processes, the wire --------------------------------------------------------------
WRITER = """
import json, sys, time
from pathlib import Path
from hsmkms.audit.files import TrailFile
from hsmkms.audit.sinks import AuditTrail
path, n, name = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sink = AuditTrail("us-east-1", file=TrailFile(path, 20000, None))
(path.parent / name).touch()
while not (path.parent / "go").exists():
    time.sleep(0.001)
for i in range(n):
    sink.write(json.dumps({"eventName": "Encrypt", "writer": name, "n": i}).encode())
sink.close()
"""


@pytest.mark.slow
def test_two_processes_appending_to_one_file_keep_one_chain(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "audit.jsonl"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), "2000", name], cwd=REPO)
        for name in "ab"
    ]
    deadline = time.monotonic() + 30
    while not all((logs / name).exists() for name in "ab") and time.monotonic() < deadline:
        time.sleep(0.01)
    (logs / "go").touch()
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    for name in ("a", "b", "go"):
        (logs / name).unlink()
    files, _ = chain.audit_files([logs])
    report = chain.verify(files)
    assert report.ok, report.breaks[:5]
    assert report.events == 4000 and report.last_seq == 4000 and len(files) > 10
    turns = [e["writer"] for f in files for e in _events(f)]
    switches = sum(1 for x, y in zip(turns, turns[1:], strict=False) if x != y)
    assert switches > 10, "the two writers did not write at the same time"


def _verify_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hsmkms", "audit", "verify", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


@pytest.mark.slow
def test_over_http_the_event_names_the_request_id_boto3_saw(tmp_path):
    home = tmp_path / "home"
    with ServerProcess(home, workers=2, extra_args=("--audit-file", "audit.jsonl")) as srv:
        kms = srv.client()
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        encrypted = kms.encrypt(KeyId=key, Plaintext=b"over the wire")
        request_id = encrypted["ResponseMetadata"]["RequestId"]
        with raises("NotFoundException"):
            kms.describe_key(KeyId="alias/nothing-here")
        deadline, last = time.monotonic() + 10, {}
        while time.monotonic() < deadline:  # the other worker sees the use once it is flushed
            last = kms.get_key_last_usage(KeyId=key)["KeyLastUsage"]
            if last.get("KmsRequestId") == request_id:
                break
            time.sleep(0.2)
        assert last.get("KmsRequestId") == request_id
    path = home / "audit.jsonl"
    events = _events(path)
    encrypt = next(e for e in events if e["requestID"] == request_id)
    assert encrypt["eventName"] == "Encrypt" and encrypt["eventID"] == last["CloudTrailEventId"]
    assert encrypt["sourceIPAddress"] == "127.0.0.1"
    assert encrypt["userAgent"].startswith("Boto3/")
    assert any(e.get("errorCode") == "NotFoundException" for e in events)
    assert os.stat(path).st_mode & 0o077 == 0

    ok = _verify_cli(str(path))
    assert ok.returncode == 0 and f"OK: {len(events)} events" in ok.stdout, ok.stdout + ok.stderr
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    deleted = _verify_cli(str(path))
    assert deleted.returncode == 1 and "seq 2 is missing before seq 3" in deleted.stdout
    edited = lines[1].replace(b'"eventName":"Encrypt"', b'"eventName":"Decrypt"')
    assert edited != lines[1]
    path.write_bytes(b"".join(lines[:1] + [edited] + lines[2:]))
    changed = _verify_cli(str(home))
    assert changed.returncode == 1 and "seq 2 was changed" in changed.stdout
