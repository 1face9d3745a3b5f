"""What a run sends: the workloads by the names the table shows, the fixture each server
needs for them, and the rows the cells fill."""

from __future__ import annotations

import base64
import itertools
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from bench.load import TARGET_PREFIX, Connection, Endpoint, Result, Workload, error_name
from hsmkms.specs import SUPPORTED_PAIR_SPECS, DataKeyPairSpec, DataKeySpec, Family

T = TypeVar("T")

AES_256 = DataKeySpec.AES_256
P256 = DataKeyPairSpec.ECC_NIST_P256
RSA_SPECS = tuple(s for s in SUPPORTED_PAIR_SPECS if s.family is Family.RSA)
EC_SPECS = tuple(s for s in SUPPORTED_PAIR_SPECS if s.family is Family.EC)
PAIR_SPECS = tuple(s for s in SUPPORTED_PAIR_SPECS if s.family is not Family.RSA)  # EC, Ed25519
MIX = f"Mix 80% Decrypt, 15% GenerateDataKey, 5% GenerateDataKeyPair {P256}"
PEERS = ("hsmkms", "moto")


@dataclass(frozen=True)
class Asymmetric:
    """A workload on an asymmetric or HMAC KMS key (issue 14): the operation, the key it needs
    (KeySpec, KeyUsage) and the algorithm; the message is ``MESSAGE`` (32 bytes, RAW)."""

    operation: str
    key_spec: str
    key_usage: str
    algorithm: str

    @property
    def name(self) -> str:
        return f"{self.operation} {self.key_spec} {self.algorithm}"

    @property
    def key_parts(self) -> tuple[str, str, str]:
        return self.key_spec, self.key_usage, self.algorithm

    @property
    def slot(self) -> str:
        """The fixture's key for it: one key per (spec, usage), shared by Sign and Verify."""
        return f"{self.key_spec} {self.key_usage}"


# RSASSA_PSS_SHA_256 for RSA: PSS is what new designs pick, and its cost on the token is
# PKCS1's (the private-key step is the same c^d mod n; only the padding differs).
ASYMMETRIC = (
    Asymmetric("Sign", "ECC_NIST_P256", "SIGN_VERIFY", "ECDSA_SHA_256"),
    Asymmetric("Sign", "RSA_2048", "SIGN_VERIFY", "RSASSA_PSS_SHA_256"),
    Asymmetric("Verify", "ECC_NIST_P256", "SIGN_VERIFY", "ECDSA_SHA_256"),
    Asymmetric("GenerateMac", "HMAC_256", "GENERATE_VERIFY_MAC", "HMAC_SHA_256"),
)
ASYMMETRIC_BY_NAME = {a.name: a for a in ASYMMETRIC}
MESSAGE = bytes(range(32))  # the message every Sign, Verify and GenerateMac sends, RAW
# Post-quantum KMS keys (issue 15): an ML-DSA-65 signature over MESSAGE (pure ML-DSA, RAW) and
# an ML-KEM-768 decapsulation of one ciphertext made up front by Encapsulate. Each request
# unseals the key's seed on the token and expands it on the host (hsmkms/service/host_keys.py).
POST_QUANTUM = (
    Asymmetric("Sign", "ML_DSA_65", "SIGN_VERIFY", "ML_DSA_SHAKE_256"),
    Asymmetric("Decapsulate", "ML_KEM_768", "ENCAPSULATE_DECAPSULATE", "ML_KEM"),
)
POST_QUANTUM_BY_NAME = {a.name: a for a in POST_QUANTUM}
# The ML-KEM data key pair of issue 15's speed section: a row of the main table too.
PQ_PAIR = f"GenerateDataKeyPair {DataKeyPairSpec.ML_KEM_768}"
KEY_WORKLOADS = {**ASYMMETRIC_BY_NAME, **POST_QUANTUM_BY_NAME}
# Imported key material (issue 16), on keys made with CreateKey Origin EXTERNAL: a
# GetParametersForImport (an RSA_2048 wrapping key made on the token per call), the same 32
# bytes imported again into one key (one import token and one wrapped blob made up front,
# RSAES_OAEP_SHA_1 in cryptography; each request unwraps on the token), and Encrypt under
# the imported material beside Encrypt under generated material, in the same minute.
WRAPPING_SPEC = "RSA_2048"
WRAPPING_ALGORITHM = "RSAES_OAEP_SHA_1"
IMPORTED_MATERIAL = bytes(range(64, 96))  # the 32 bytes imported, the same each time
GET_PARAMETERS = f"GetParametersForImport {WRAPPING_SPEC} {WRAPPING_ALGORITHM}"
REIMPORT = f"ImportKeyMaterial {WRAPPING_ALGORITHM}, the same 32 bytes again"
IMPORTED_ENCRYPT = "Encrypt 64 B, imported key"
GENERATED_ENCRYPT = "Encrypt 64 B, generated key (beside the imported)"
# In the order they run: GetParametersForImport last, since each call leaves a wrapping key
# on the token (valid 24 hours) and every import searches the token for its own.
IMPORT_WORKLOADS = (GENERATED_ENCRYPT, IMPORTED_ENCRYPT, REIMPORT, GET_PARAMETERS)
# AWS's default quotas: GetParametersForImport 1/s, ImportKeyMaterial 15/s per account; so
# c=1 and 8 are plenty.
IMPORT_CONCURRENCY = (1, 8)
IMPORTED_SLOT = "EXTERNAL imported"  # Fixture.keys: the key whose material is imported
PENDING_SLOT = "EXTERNAL pending import"  # Fixture.keys: GetParametersForImport's key
# Multi-Region keys and last use (issue 17). One endpoint serves every Region: a request's
# Region is its SigV4 credential scope's, so a workload run in another Region is signed for it
# (REGION_OF; the rest are signed for the endpoint's own, us-east-1). A multi-Region key made
# in us-east-1 and replicated to us-west-2; Encrypt 64 B under it beside Encrypt under a
# single-Region key; one blob (64 B, made by the primary) decrypted through the primary and,
# signed for us-west-2, through the replica; GetKeyLastUsage on the run's main key, which the
# fixture and every data key cell use.
PRIMARY_REGION = "us-east-1"
REPLICA_REGION = "us-west-2"
SINGLE_ENCRYPT = "Encrypt 64 B, single-Region key (beside the multi-Region)"
MRK_ENCRYPT = "Encrypt 64 B, multi-Region primary"
PRIMARY_DECRYPT = "Decrypt 64 B through the primary (beside the replica)"
REPLICA_DECRYPT = "Decrypt 64 B through a replica"
LAST_USAGE = "GetKeyLastUsage"
# In the order they run at each concurrency: each new cell right after the one it is set beside.
MULTI_REGION_WORKLOADS = (SINGLE_ENCRYPT, MRK_ENCRYPT, PRIMARY_DECRYPT, REPLICA_DECRYPT, LAST_USAGE)
MULTI_REGION_GROUP = "multi-Region keys and last use (issue 17)"  # what --only also searches
REGION_OF = {REPLICA_DECRYPT: REPLICA_REGION}  # workload -> the Region its requests are signed for
MRK_SLOT = "multi-Region primary"  # Fixture.keys: the mrk- key (us-east-1), replicated


@dataclass
class Fixture:
    """What the workloads of one server need: a KMS key and ciphertexts to decrypt; for the
    asymmetric workloads a key per :attr:`Asymmetric.slot` and the signature Verify checks
    (made once up front), and the ciphertext Decapsulate opens (made once up front by
    Encapsulate); for the import workloads (issue 16) two EXTERNAL keys, the import token and
    the wrapped material; for the multi-Region workloads (issue 17) the mrk- key and a blob it
    made; ``missing``: workload name -> why this server cannot run it."""

    key_id: str
    decrypt_bodies: list[bytes]
    key_ids: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    signature: str = ""  # base64, by the ECC_NIST_P256 SIGN_VERIFY key over MESSAGE
    ciphertext: str = ""  # base64, Encapsulate's SharedSecretCiphertextBlob (ML_KEM_768 key)
    import_token: str = ""  # base64, GetParametersForImport's, for the IMPORTED_SLOT key
    wrapped_material: str = ""  # base64, IMPORTED_MATERIAL under that token's public key
    replica_blob: str = ""  # base64, 64 B encrypted by the MRK_SLOT key in PRIMARY_REGION
    missing: dict[str, str] = field(default_factory=dict)


@dataclass
class Row:
    workload: str
    concurrency: int
    results: dict[str, Result]  # server name -> result
    unavailable: dict[str, str] = field(default_factory=dict)  # server name -> why not run


def rsa_span(spec: DataKeyPairSpec, quick: bool) -> float:
    """How many cells' worth of seconds an RSA measurement takes: RSA generation times vary
    widely (a random search for primes), so the slow specs need long windows to count enough
    pairs (RSA_3072 at ~10/s: ~120 pairs in 12 s; RSA_4096 at ~4/s: ~100 in 24 s)."""
    if quick:
        return 1.0
    spans = {DataKeyPairSpec.RSA_2048: 2.0, DataKeyPairSpec.RSA_3072: 4.0,
             DataKeyPairSpec.RSA_4096: 8.0}  # fmt: skip
    return spans.get(spec, 2.0)


def _body(params: dict[str, Any]) -> bytes:
    return json.dumps(params, separators=(",", ":")).encode()


def _cycle(items: list[T]) -> Callable[[], T]:
    it: Iterator[T] = itertools.cycle(items)
    return lambda: next(it)


def workload(name: str, fx: Fixture, rng: random.Random) -> Workload:
    """The request maker for a workload name as it appears in the table."""
    key = fx.key_id
    gdk = (TARGET_PREFIX + "GenerateDataKey", _body({"KeyId": key, "KeySpec": AES_256}))
    decrypt = _cycle([(TARGET_PREFIX + "Decrypt", b) for b in fx.decrypt_bodies])
    if name == "GenerateDataKey":
        return lambda: gdk
    if name == "GenerateDataKeyWithoutPlaintext":
        req = (TARGET_PREFIX + name, _body({"KeyId": key, "KeySpec": AES_256}))
        return lambda: req
    if name in ("Encrypt 64 B", GENERATED_ENCRYPT, IMPORTED_ENCRYPT, SINGLE_ENCRYPT, MRK_ENCRYPT):
        plaintext = base64.b64encode(rng.randbytes(64)).decode()
        slot = {IMPORTED_ENCRYPT: IMPORTED_SLOT, MRK_ENCRYPT: MRK_SLOT}.get(name)
        on = fx.keys[slot] if slot else key
        req = (TARGET_PREFIX + "Encrypt", _body({"KeyId": on, "Plaintext": plaintext}))
        return lambda: req
    if name in (PRIMARY_DECRYPT, REPLICA_DECRYPT):  # the same blob; the Region is the signer's
        req = (TARGET_PREFIX + "Decrypt", _body({"CiphertextBlob": fx.replica_blob}))
        return lambda: req
    if name == LAST_USAGE:
        req = (TARGET_PREFIX + LAST_USAGE, _body({"KeyId": key}))
        return lambda: req
    if name == REIMPORT:
        req = (TARGET_PREFIX + "ImportKeyMaterial", _body(_import_params(fx, again=True)))
        return lambda: req
    if name == GET_PARAMETERS:
        params = {"KeyId": fx.keys[PENDING_SLOT], "WrappingAlgorithm": WRAPPING_ALGORITHM,
                  "WrappingKeySpec": WRAPPING_SPEC}  # fmt: skip
        req = (TARGET_PREFIX + "GetParametersForImport", _body(params))
        return lambda: req
    if name == "Decrypt":
        return decrypt
    if name.startswith("GenerateDataKeyPair"):
        operation, spec = name.split()[:2]
        req = (TARGET_PREFIX + operation, _body({"KeyId": key, "KeyPairSpec": spec}))
        return lambda: req
    if name == MIX:
        pair = (
            TARGET_PREFIX + "GenerateDataKeyPair",
            _body({"KeyId": key, "KeyPairSpec": P256}),
        )

        def mix() -> tuple[str, bytes]:
            draw = rng.random()
            if draw < 0.80:
                return decrypt()
            return gdk if draw < 0.95 else pair

        return mix
    if name in KEY_WORKLOADS:
        return _asymmetric(KEY_WORKLOADS[name], fx)
    if name == "GenerateDataKey over all keys":
        bodies = [_body({"KeyId": k, "KeySpec": AES_256}) for k in fx.key_ids]
        return lambda: (TARGET_PREFIX + "GenerateDataKey", rng.choice(bodies))
    raise ValueError(f"unknown workload {name!r}")


def _asymmetric(a: Asymmetric, fx: Fixture) -> Workload:
    params: dict[str, Any] = {"KeyId": fx.keys[a.slot], "Message": _b64(MESSAGE)}
    if a.operation in ("Encapsulate", "Decapsulate"):
        params = {"KeyId": fx.keys[a.slot], "EncapsulationAlgorithm": a.algorithm}
        if a.operation == "Decapsulate":
            params["SharedSecretCiphertextBlob"] = fx.ciphertext
    elif a.operation == "GenerateMac":
        params["MacAlgorithm"] = a.algorithm
    else:
        params.update({"MessageType": "RAW", "SigningAlgorithm": a.algorithm})
    if a.operation == "Verify":
        params["Signature"] = fx.signature
    req = (TARGET_PREFIX + a.operation, _body(params))
    return lambda: req


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _import_params(fx: Fixture, again: bool) -> dict[str, Any]:
    """ImportKeyMaterial of IMPORTED_MATERIAL into the IMPORTED_SLOT key, with the one import
    token and wrapped blob of the fixture; ``again``: a reimport, EXISTING_KEY_MATERIAL."""
    params: dict[str, Any] = {
        "KeyId": fx.keys[IMPORTED_SLOT],
        "ImportToken": fx.import_token,
        "EncryptedKeyMaterial": fx.wrapped_material,
        "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
    }
    if again:
        params["ImportType"] = "EXISTING_KEY_MATERIAL"
    return params


def wrap_material(public_key: str) -> bytes:
    """IMPORTED_MATERIAL wrapped as an importer does: RSAES_OAEP_SHA_1 under the base64 DER
    SubjectPublicKeyInfo GetParametersForImport answered (cryptography, OpenSSL)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_der_public_key(base64.b64decode(public_key))
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the wrapping key is not an RSA key")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return key.encrypt(IMPORTED_MATERIAL, oaep)


def signed_for(name: str, endpoint: Endpoint) -> Endpoint:
    """The endpoint as workload ``name`` reaches it: signed for the Region it runs in."""
    region = REGION_OF.get(name)
    return endpoint if region is None else replace(endpoint, region=region)


def multi_region_workloads() -> list[str]:
    return list(MULTI_REGION_WORKLOADS)


def asymmetric_workloads() -> list[str]:
    return [a.name for a in ASYMMETRIC]


def post_quantum_workloads() -> list[str]:
    return [a.name for a in POST_QUANTUM]


def import_workloads() -> list[str]:
    return list(IMPORT_WORKLOADS)


def main_workloads() -> list[str]:
    return [
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "Encrypt 64 B",
        "Decrypt",
        *(f"GenerateDataKeyPair {s}" for s in PAIR_SPECS),
        f"GenerateDataKeyPairWithoutPlaintext {P256}",
        MIX,
    ]


async def prepare(
    endpoint: Endpoint, blobs: int = 64, asymmetric: bool = False, imports: bool = False
) -> Fixture:
    """A KMS key on the server behind ``endpoint`` and ``blobs`` data key blobs to decrypt;
    with ``asymmetric``, the keys and the signature of the asymmetric workloads too; with
    ``imports``, the EXTERNAL keys and the import of the import workloads (issue 16)."""
    conn = Connection(endpoint)
    try:
        key = await conn.call("CreateKey", {"Description": "hsmkms benchmark"})
        key_id = key["KeyMetadata"]["KeyId"]
        bodies = []
        for _ in range(blobs):
            answer = await conn.call("GenerateDataKey", {"KeyId": key_id, "KeySpec": AES_256})
            bodies.append(_body({"CiphertextBlob": answer["CiphertextBlob"]}))
        fx = Fixture(key_id, bodies, [key_id])
        if asymmetric:
            await _prepare_asymmetric(conn, fx)
        if imports:
            await _prepare_imports(conn, fx)
        return fx
    finally:
        conn.close()


async def _prepare_asymmetric(conn: Connection, fx: Fixture) -> None:
    """A key per slot; the signature Verify checks; the ciphertext Decapsulate opens; every
    workload (issue 14's and 15's) this server cannot run
    (a spec it cannot create, an operation it refuses) in ``fx.missing`` with the reason,
    so that its cell reads n/a rather than a column of errors."""
    refused: dict[str, str] = {}  # slot -> why its key could not be made
    for a in ASYMMETRIC + POST_QUANTUM:
        if a.slot in fx.keys or a.slot in refused:
            continue
        params = {"KeySpec": a.key_spec, "KeyUsage": a.key_usage, "Description": "benchmark"}
        answer, why = await _attempt(conn, "CreateKey", params)
        if answer is None:
            refused[a.slot] = f"CreateKey {a.key_spec} {a.key_usage}: {why}"
        else:
            fx.keys[a.slot] = answer["KeyMetadata"]["KeyId"]
    # One call of each workload before any cell: a server lacking an operation says so here.
    for a in ASYMMETRIC + POST_QUANTUM:
        if a.slot in refused:
            fx.missing[a.name] = refused[a.slot]
            continue
        if a.operation == "Decapsulate" and not fx.ciphertext:
            made, why = await _attempt(conn, *_call(Asymmetric("Encapsulate", *a.key_parts), fx))
            if made is None:
                fx.missing[a.name] = f"Encapsulate (the ciphertext to decapsulate): {why}"
                continue
            fx.ciphertext = made["SharedSecretCiphertextBlob"]
        if a.operation == "Verify" and not fx.signature:
            made, why = await _attempt(conn, *_call(Asymmetric("Sign", *a.key_parts), fx))
            if made is None:
                fx.missing[a.name] = f"Sign (the signature to verify): {why}"
                continue
            fx.signature = made["Signature"]
        answer, why = await _attempt(conn, *_call(a, fx))
        if answer is None:
            fx.missing[a.name] = f"{a.operation}: {why}"


async def _prepare_imports(conn: Connection, fx: Fixture) -> None:
    """Two EXTERNAL keys: one whose material is imported here, once, from one import token and
    one wrapped blob made up front (what ImportKeyMaterial imports again and Encrypt uses),
    one left PendingImport (GetParametersForImport's). Each workload is called once; what
    this server cannot do goes to ``fx.missing`` with the reason, so that its cell reads n/a."""

    def lack(names: tuple[str, ...], why: str) -> None:
        for name in names:
            fx.missing.setdefault(name, why)

    imported = (REIMPORT, IMPORTED_ENCRYPT)
    for slot in (IMPORTED_SLOT, PENDING_SLOT):
        params = {"Origin": "EXTERNAL", "Description": "benchmark"}
        answer, why = await _attempt(conn, "CreateKey", params)
        if answer is None:
            lack((*imported, GET_PARAMETERS), f"CreateKey Origin EXTERNAL: {why}")
            return
        fx.keys[slot] = answer["KeyMetadata"]["KeyId"]
    params = {"KeyId": fx.keys[IMPORTED_SLOT], "WrappingAlgorithm": WRAPPING_ALGORITHM,
              "WrappingKeySpec": WRAPPING_SPEC}  # fmt: skip
    answer, why = await _attempt(conn, "GetParametersForImport", params)
    if answer is None:
        lack(imported, f"no material imported (GetParametersForImport: {why})")
    else:
        fx.import_token = answer["ImportToken"]
        fx.wrapped_material = _b64(wrap_material(answer["PublicKey"]))
        made, why = await _attempt(conn, "ImportKeyMaterial", _import_params(fx, again=False))
        if made is None:
            lack(imported, f"the first ImportKeyMaterial: {why}")
    for name in IMPORT_WORKLOADS:
        if name in fx.missing:
            continue
        target, body = workload(name, fx, random.Random(1))()
        operation = target.removeprefix(TARGET_PREFIX)
        answer, why = await _attempt(conn, operation, json.loads(body))
        if answer is None:
            fx.missing[name] = f"{operation}: {why}"


def _call(a: Asymmetric, fx: Fixture) -> tuple[str, dict[str, Any]]:
    target, body = _asymmetric(a, fx)()
    return target.removeprefix(TARGET_PREFIX), json.loads(body)


async def _attempt(
    conn: Connection, operation: str, params: dict[str, Any]
) -> tuple[dict[str, Any] | None, str]:
    """(the answer, "") or (None, "<status> <error type>: <message>") of a set-up call."""
    status, payload = await conn.send(TARGET_PREFIX + operation, _body(params))
    if status == 200:
        answer: dict[str, Any] = json.loads(payload)
        return answer, ""
    why = error_name(status, payload)
    try:
        message = json.loads(payload).get("message") or json.loads(payload).get("Message")
    except (ValueError, AttributeError):
        message = None
    return None, why + (f": {str(message)[:100]}" if message else "")
