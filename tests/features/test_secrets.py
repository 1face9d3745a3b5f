"""A whole session with known secrets — the token PINs, the secret access key, plaintexts,
data keys, private keys, random bytes — then a search for each of them, raw, base64 and hex,
in the server's log (debug logging and access logs on), every answer's body (errors
included), ``hsmkms doctor``'s output, the SQLite store (with its WAL), the audit trail (an
HMAC-keyed chain, in its file and on stdout) and every other file of the state directory: none
may be found, the PIN, credential and audit key files excepted. The state directory is 0700;
the PIN and credential files 0600, and so is every file hsmkms writes."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from botocore.exceptions import ClientError
from faults import clean_env, doctor
from loadgen import Client, b64
from server import REPO, Response, ServerProcess

from hsmkms.audit.chain import audit_files, verify
from hsmkms.home import Identity

SECRET_FILES = {"user.pin", "so.pin", "credentials", "audit.key"}
AUDIT = ("--audit-file", "audit.jsonl", "--audit-key-file", "audit.key", "--audit-stdout")


def _forms(secret: bytes) -> list[bytes]:
    """How a secret could appear: itself, base64 (as JSON carries it), hex (as logs might)."""
    forms = [secret, base64.b64encode(secret), secret.hex().encode()]
    return [f for f in forms if len(f) >= 8]


def test_no_secret_is_written_anywhere(tmp_path: Path):
    home = tmp_path / "home"
    make = "import sys; from hsmkms.config import Settings; from hsmkms.home import ensure_home; "
    make += "ensure_home(Settings.load(home=sys.argv[1], env={}))"
    subprocess.run(
        [sys.executable, "-c", make, str(home)], check=True, timeout=60, cwd=REPO, env=clean_env()
    )
    user_pin = (home / "user.pin").read_text().strip()
    so_pin = (home / "so.pin").read_text().strip()

    server = ServerProcess(
        home,
        extra_args=("--log-level", "debug", "--access-log", *AUDIT),
        env={"HSMKMS_PIN": user_pin},  # the PIN from the environment, not the file
    )
    secrets: dict[str, bytes] = {"user PIN": user_pin.encode(), "SO PIN": so_pin.encode()}
    answers: list[Response] = []
    with server as srv:
        ident = srv.identity
        secrets["secret access key"] = ident.secret_access_key.encode()
        client = Client(srv)

        def call(op: str, params: dict) -> Response:
            answer = client.call(op, params)
            answers.append(answer)
            return answer

        key_id = call("CreateKey", {"Description": "secrets"}).json["KeyMetadata"]["KeyId"]
        other = call("CreateKey", {}).json["KeyMetadata"]["KeyId"]
        call("CreateAlias", {"AliasName": "alias/secrets", "TargetKeyId": key_id})
        for i in range(5):
            marker = f"PLAINTEXT-MARKER-{i}-".encode() + os.urandom(16)
            secrets[f"plaintext {i}"] = marker
            blob = call(
                "Encrypt",
                {
                    "KeyId": "alias/secrets",
                    "Plaintext": b64(marker),
                    "EncryptionContext": {"purpose": "secrets"},
                },
            ).json["CiphertextBlob"]
            call("Decrypt", {"CiphertextBlob": blob, "EncryptionContext": {"purpose": "secrets"}})
            moved = call(
                "ReEncrypt",
                {
                    "CiphertextBlob": blob,
                    "DestinationKeyId": other,
                    "SourceEncryptionContext": {"purpose": "secrets"},
                },
            )
            call("Decrypt", {"CiphertextBlob": moved.json["CiphertextBlob"]})
            data_key = call("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256"}).json
            secrets[f"data key {i}"] = base64.b64decode(data_key["Plaintext"])
            call("Decrypt", {"CiphertextBlob": data_key["CiphertextBlob"]})
            for spec in ("ECC_NIST_P256", "RSA_2048"):
                pair = call("GenerateDataKeyPair", {"KeyId": key_id, "KeyPairSpec": spec}).json
                secrets[f"{spec} private key {i}"] = base64.b64decode(pair["PrivateKeyPlaintext"])
                call("Decrypt", {"CiphertextBlob": pair["PrivateKeyCiphertextBlob"]})
            random_bytes = call("GenerateRandom", {"NumberOfBytes": 32}).json["Plaintext"]
            secrets[f"random {i}"] = base64.b64decode(random_bytes)
        # Failures that carry a secret in the request: the answers must not echo it.
        leak = secrets["plaintext 0"]
        call("Encrypt", {"KeyId": key_id, "Plaintext": b64(leak * 200)})  # too long
        call("Encrypt", {"KeyId": "alias/nope", "Plaintext": b64(leak)})  # no such key
        call("DisableKey", {"KeyId": other})
        call("Encrypt", {"KeyId": other, "Plaintext": b64(leak)})  # disabled
        call("Encrypt", {"KeyId": key_id, "Plaintext": leak.hex()})  # not base64
        call("Decrypt", {"CiphertextBlob": b64(leak + bytes(60))})  # not a blob
        broken = b'{"KeyId": "%s", "Plaintext": "%s' % (key_id.encode(), b64(leak).encode())
        answers.append(srv.post("Encrypt", body=broken))  # not JSON
        forged = Identity(
            ident.access_key_id,
            "forged-" + ident.secret_access_key[7:],
            ident.account_id,
            ident.principal_arn,
        )
        answers.append(srv.post("GenerateRandom", {"NumberOfBytes": 8}, identity=forged))
        client.close()
        # The library face's errors too: a boto3 ClientError's message.
        try:
            srv.client().encrypt(KeyId=other, Plaintext=leak)
        except ClientError as exc:
            answers.append(Response(400, {}, json.dumps(exc.response["Error"]).encode()))
        checked = doctor(home, "--deep")
        assert checked.returncode == 0, checked.stderr
        assert server.proc is not None
    secrets["audit key"] = (home / "audit.key").read_bytes().strip()
    trail_files, _ = audit_files([home / "audit.jsonl"])
    verified = verify(trail_files, key=secrets["audit key"])
    assert verified.ok and verified.events >= 50, verified.breaks
    assert all(a.status for a in answers)
    assert any(a.status >= 400 for a in answers)

    haystacks: dict[str, bytes] = {
        # Successes carry plaintexts by design (Decrypt, GenerateDataKey); errors must not.
        "error answers": b"\n".join(a.body for a in answers if a.status != 200),
        "doctor": (checked.stdout + checked.stderr).encode(),
    }
    assert '"POST / HTTP/1.1" 200' in server.log()  # access logs were on
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        if path.name not in SECRET_FILES:
            haystacks[str(path.relative_to(home))] = path.read_bytes()
    assert "hsmkms.sqlite3" in haystacks and "server.log" in haystacks
    assert key_id.encode() in haystacks["hsmkms.sqlite3"]  # the search sees what is there
    trail = haystacks["audit.jsonl"]
    assert key_id.encode() in trail and b'"errorCode":"DisabledException"' in trail
    assert trail.count(b"\n") >= 50 and b'"alg":"hmac-sha256"' in trail
    assert trail.splitlines()[0] in haystacks["server.log"]  # stdout: the server's log
    assert any(name.startswith("tokens/") for name in haystacks)
    found = [
        (what, where)
        for what, secret in secrets.items()
        for form in _forms(secret)
        for where, data in haystacks.items()
        if form in data
    ]
    assert found == [], found

    # Who may read the state directory, and what hsmkms writes into it.
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in SECRET_FILES | {"hsmkms.sqlite3", "softhsm2.conf", "audit.jsonl"}:
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    loose = [
        str(p.relative_to(home))
        for p in home.rglob("*")
        if p.name != "server.log" and stat.S_IMODE(p.stat().st_mode) & 0o077
    ]
    assert loose == [], f"readable by group or others: {loose}"
