"""Bad input, generated (hypothesis): the blob parser, Decrypt of altered blobs, and the request
body of every operation, through the real wire, service, store and token. The answer is
always an AWS error of the 4xx kind (or a success), never a 500, never a hang. Plus 1,000
distinct bit-flipped blobs over HTTP: 1,000 InvalidCiphertextException.

Bounded: a fixed number of examples per property (``HSMKMS_FUZZ_EXAMPLES`` scales them), no
example database (nothing written to the tree), a deadline per example.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from loadgen import Client
from server import ServerProcess

import hsmkms.service  # noqa: F401  (registers the operations' handlers)
from hsmkms import blob as blobfmt
from hsmkms import errors, model
from hsmkms.home import Identity
from hsmkms.service.core import OPERATIONS

SCALE = float(os.environ.get("HSMKMS_FUZZ_EXAMPLES", "1"))
FUZZ = settings(
    max_examples=max(5, int(40 * SCALE)),
    deadline=timedelta(seconds=10),  # an RSA-4096 pair may take a second; a hang takes more
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ACCOUNT = "999988887777"  # the fuzzer's own account: its keys touch no other test's
FUZZER = Identity(
    "AKIAFUZZERFUZZERFUZZ",
    "fuzz-secret-key-0000000000000000000000",
    ACCOUNT,
    f"arn:aws:iam::{ACCOUNT}:user/fuzzer",
)
HOST = "kms.fuzz:443"
AWS_ERRORS = set(errors.ALL) | {"ThrottlingException"}


# -- strategies ----------------------------------------------------------------------------------
# Every code point, lone surrogates included (JSON escapes them; UTF-8 cannot encode them).
any_char = st.characters(codec=None, exclude_categories=())
texts = st.one_of(
    st.text(any_char, max_size=40),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "alias/",
            "alias/aws/x",
            "arn:aws:kms:us-east-1:",
            "🔑" * 300,
            "a" * 2049,
            "%s%n",
            "../../etc/passwd",
            "null",
            "{}",
        ]
    ),
)
huge = st.sampled_from([2049, 8193, 100_000, 600_000]).map(lambda n: "A" * n)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    texts,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
bad_base64 = st.sampled_from(["!", "YQ", "YQ=", "Y===", "====", "YWJj\n", "Y W J j", "-_-_", "é"])


class Material:
    """Values that reach deep: real key ids, aliases, ARNs and blobs of the fuzzer's keys."""

    def __init__(self, kms: Any) -> None:
        self.keys = [kms.create_key()["KeyMetadata"] for _ in range(2)]
        a, b = (k["KeyId"] for k in self.keys)
        kms.create_alias(AliasName="alias/fuzz-a", TargetKeyId=a)
        self.key_ids = [
            a,
            b,
            self.keys[0]["Arn"],
            "alias/fuzz-a",
            f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/fuzz-a",
        ]
        self.blobs = [
            kms.encrypt(KeyId=a, Plaintext=b"fuzz")["CiphertextBlob"],
            kms.encrypt(KeyId=b, Plaintext=b"x" * 100, EncryptionContext={"k": "v"})[
                "CiphertextBlob"
            ],
            kms.generate_data_key_pair(KeyId=a, KeyPairSpec="ECC_NIST_P256")[
                "PrivateKeyCiphertextBlob"
            ],
        ]

    def blob_strings(self) -> st.SearchStrategy[str]:
        raw = st.one_of(
            st.sampled_from(self.blobs),
            st.binary(max_size=300),
            st.sampled_from(self.blobs).flatmap(mutations),
        )
        return st.one_of(raw.map(lambda b: base64.b64encode(b).decode()), bad_base64)


def mutations(blob: bytes) -> st.SearchStrategy[bytes]:
    """Altered copies of a blob: never the blob itself."""
    bits = len(blob) * 8
    flips = st.sets(st.integers(0, bits - 1), min_size=1, max_size=3).map(
        lambda positions: _flip(blob, positions)
    )
    cut = st.integers(1, len(blob) - 1).map(lambda n: blob[:n])  # empty: a ValidationException
    longer = st.binary(min_size=1, max_size=20).map(lambda extra: blob + extra)
    return st.one_of(flips, cut, longer)


def _flip(blob: bytes, positions: set[int]) -> bytes:
    data = bytearray(blob)
    for p in positions:
        data[p // 8] ^= 1 << (p % 8)
    return bytes(data)


def values_for(
    shape: model.Shape, name: str, mat: Material, depth: int = 0
) -> st.SearchStrategy[Any]:
    """Mostly values of the member's type (valid and not), sometimes anything at all."""
    if shape.type == "string":
        choices: list[st.SearchStrategy[Any]] = [texts, huge]
        if shape.enum:
            choices.append(st.sampled_from(shape.enum))
        if "KeyId" in name or name in ("GrantId", "Marker"):
            choices.append(st.sampled_from(mat.key_ids))
        if name == "AliasName":
            choices.append(st.text("abc/_-é", max_size=12).map(lambda s: "alias/" + s))
        if name == "Policy":
            choices.append(st.builds(json.dumps, json_values))
        typed = st.one_of(*choices)
    elif shape.type == "blob":
        typed = mat.blob_strings()
    elif shape.type in ("integer", "long"):
        typed = st.one_of(st.integers(-5, 5000), st.integers(-(2**70), 2**70))
    elif shape.type == "boolean":
        typed = st.booleans()
    elif shape.type == "list" and shape.member is not None and depth < 3:
        typed = st.lists(values_for(shape.member, name, mat, depth + 1), max_size=5)
    elif shape.type == "map":
        typed = st.dictionaries(texts, texts, max_size=5)
    elif shape.type == "structure" and depth < 3:
        typed = st.fixed_dictionaries(
            {}, optional={m: values_for(s, m, mat, depth + 1) for m, s in shape.members.items()}
        )
    else:
        typed = json_values
    return st.one_of(typed, typed, typed, json_values)


def bodies(operation: str, mat: Material) -> st.SearchStrategy[bytes]:
    shape = model.input_shape(operation)
    members = shape.members if shape is not None else {}
    fields = st.fixed_dictionaries(
        {}, optional={m: values_for(s, m, mat) for m, s in members.items()}
    )
    objects = st.tuples(fields, st.dictionaries(texts, json_values, max_size=2)).map(
        lambda t: {**t[1], **t[0]}
    )
    as_json = st.one_of(objects, objects, objects, json_values).map(
        lambda v: json.dumps(v).encode()
    )
    broken = st.one_of(
        st.binary(max_size=200),
        st.sampled_from([b"", b"{", b'{"a":', b"[" * 5000, b'{"KeyId": "\\ud800"}', b"\xff\xfe"]),
    )
    return st.one_of(as_json, as_json, as_json, broken)


# -- the app, in-process, as the fuzzer ------------------------------------------------------------
class Wire:
    """The real ASGI app over the session's token and store; requests signed as the fuzzer."""

    def __init__(self, service: Any) -> None:
        from hsmkms.api import create_app
        from hsmkms.kms import KMS, Caller

        self.kms = KMS.from_service(
            service, Caller(ACCOUNT, FUZZER.principal_arn, FUZZER.access_key_id)
        )
        self.app = create_app(self.kms, {FUZZER.access_key_id: FUZZER}, service.settings)
        self.loop = asyncio.new_event_loop()
        self.credentials = Credentials(FUZZER.access_key_id, FUZZER.secret_access_key)

    def post(self, operation: str, body: bytes) -> tuple[int, Any]:
        headers = {
            "Content-Type": "application/x-amz-json-1.1",
            "Host": HOST,
            "X-Amz-Target": f"TrentService.{operation}",
        }
        request = AWSRequest(method="POST", url=f"https://{HOST}/", data=body, headers=headers)
        SigV4Auth(self.credentials, "kms", "us-east-1").add_auth(request)
        sent: list[dict[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "client": ("192.0.2.9", 40000),
            "headers": [(k.lower().encode(), v.encode()) for k, v in request.headers.items()],
        }
        self.loop.run_until_complete(asyncio.wait_for(self.app(scope, receive, send), timeout=30))
        data = b"".join(m.get("body", b"") for m in sent[1:])
        return sent[0]["status"], json.loads(data) if data else None


@pytest.fixture(scope="module")
def wire(service: Any) -> Iterator[Wire]:
    w = Wire(service)
    yield w
    pool = getattr(w.app, "pool", None)
    if pool is not None:
        pool.shutdown()
    w.loop.close()


def _check(status: int, answer: Any, context: str) -> None:
    assert status != 500 and status < 500, f"{context} -> {status} {answer}"
    if status != 200:
        assert 400 <= status < 500, f"{context} -> {status} {answer}"
        assert isinstance(answer, dict) and answer.get("__type") in AWS_ERRORS, (context, answer)


# -- the blob parser -----------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=400))
def test_the_blob_parser_takes_any_bytes(data: bytes):
    try:
        parsed = blobfmt.parse(data)
    except blobfmt.MalformedBlob:
        return
    assert parsed.header == data[: len(parsed.header)]
    assert len(parsed.iv) == blobfmt.IV_LEN and len(parsed.tag) == blobfmt.TAG_LEN
    assert len(parsed.material_id) == blobfmt.MATERIAL_LEN


@FUZZ
@given(st.binary(max_size=200), st.sampled_from([blobfmt.KIND_SEALED, blobfmt.KIND_WRAPPED, 7]))
def test_the_blob_parser_takes_any_body_behind_a_valid_prefix(rest: bytes, kind: int):
    data = bytes([blobfmt.MAGIC, blobfmt.VERSION, kind]) + bytes(48) + rest
    try:
        parsed = blobfmt.parse(data)
    except blobfmt.MalformedBlob:
        return
    parsed.aad({"k": "v"})  # and the AAD of whatever parsed can be computed


# -- Decrypt of altered blobs --------------------------------------------------------------------
@pytest.fixture(scope="module")
def material(wire: Wire) -> Material:
    return Material(wire.kms)


@FUZZ
@given(data=st.data())
def test_an_altered_blob_never_decrypts_and_is_invalid_ciphertext(
    wire: Wire, material: Material, data: st.DataObject
):
    original = data.draw(st.sampled_from(material.blobs))
    altered = data.draw(mutations(original))
    assume(altered != original)
    context = {"k": "v"} if original is material.blobs[1] else None
    with pytest.raises(errors.InvalidCiphertextException):
        wire.kms.decrypt(
            CiphertextBlob=altered, **({"EncryptionContext": context} if context else {})
        )


def test_a_blob_of_another_key_is_incorrect_key_and_a_transplant_is_invalid(
    wire: Wire, material: Material
):
    a, b = (k["KeyId"] for k in material.keys)
    blob_b = material.blobs[1]
    with pytest.raises(errors.IncorrectKeyException):
        wire.kms.decrypt(CiphertextBlob=blob_b, KeyId=a, EncryptionContext={"k": "v"})
    # B's body under A's header: A's key, B's material, the tag of neither.
    header_a = material.blobs[0][: blobfmt.PREFIX_LEN]
    for transplant in (
        header_a + blob_b[blobfmt.PREFIX_LEN :],
        blob_b[:3] + header_a[3:19] + blob_b[19:],
    ):
        with pytest.raises(errors.InvalidCiphertextException):
            wire.kms.decrypt(CiphertextBlob=transplant, EncryptionContext={"k": "v"})
    for context in (None, {}, {"k": "V"}, {"k": "v", "x": "y"}, {"K": "v"}, {"k": "v\x00"}):
        with pytest.raises(errors.InvalidCiphertextException):
            wire.kms.decrypt(
                CiphertextBlob=blob_b,
                **({"EncryptionContext": context} if context is not None else {}),
            )


# -- every operation's request body --------------------------------------------------------------
IMPLEMENTED = sorted(OPERATIONS)
UNIMPLEMENTED = sorted(model.operations() - set(IMPLEMENTED))[:5]


@pytest.mark.parametrize("operation", IMPLEMENTED + UNIMPLEMENTED)
def test_any_request_body_is_answered_with_a_4xx_aws_error_or_success(
    wire: Wire, material: Material, operation: str
):
    @FUZZ
    @given(body=bodies(operation, material))
    def run(body: bytes) -> None:
        status, answer = wire.post(operation, body)
        _check(status, answer, f"{operation} {body[:300]!r}")

    run()


# -- over HTTP: 1,000 distinct bit flips ---------------------------------------------------------
def test_a_thousand_bit_flipped_blobs_are_a_thousand_invalid_ciphertext_exceptions(
    server: ServerProcess,
):
    kms = server.client()
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(
        KeyId=key_id, Plaintext=os.urandom(128), EncryptionContext={"purpose": "bit flips"}
    )["CiphertextBlob"]
    positions = random.sample(range(len(blob) * 8), 1000)  # distinct, header to tag
    flipped = [base64.b64encode(_flip(blob, {p})).decode() for p in positions]
    assert len(set(flipped)) == 1000
    answers: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def send(part: list[str]) -> None:
        client = Client(server)
        for text in part:
            answer = client.call(
                "Decrypt", {"CiphertextBlob": text, "EncryptionContext": {"purpose": "bit flips"}}
            )
            with lock:
                answers.append((answer.status, answer.error[0]))
        client.close()

    threads = [threading.Thread(target=send, args=(flipped[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(answers) == 1000
    assert answers == [(400, "InvalidCiphertextException")] * 1000
