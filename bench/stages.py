"""Where one request's CPU time goes, stage by stage, measured in one process with no HTTP:
the profile under the table of docs/benchmarks.md.

Each stage is timed on its own, in a loop, on the same request the load generator sends
(SigV4-signed with the bench signer, against a real SoftHSM2 token and SQLite store):

* SigV4 verification, JSON parsing with the model's conversion, response encoding;
* the operation layer (``KMS.try_quick``: validation, authorization, key lookup, blob
  framing, the token and the key pair), and within it the token's AES-GCM call and the key
  pair's generation and DER encoding;
* for Sign with an RSA_2048 key and GenerateMac with an HMAC_256 key (issue 14): the token's
  C_Sign in place of AES-GCM; for the RSA Sign also the inline attempt that gives up at the
  private-key step (``WouldBlock``) before the whole operation runs again on a thread;
* for Sign with an ML_DSA_65 key and Decapsulate with an ML_KEM_768 key (issue 15): the
  token's AES-GCM unsealing of the key's seed, the seed's expansion (``from_seed_bytes``)
  and the signature or decapsulation in cryptography; GenerateDataKeyPair ML_KEM_768 as the
  other pairs;
* the whole ASGI application, driven directly (for the RSA Sign: with its thread hop).

The whole costs more than the sum of its parts, and the server more than the whole. Measured
alone, a stage runs from warm caches; one request makes ~480 Python calls, each cold again
by the time the next request comes. With the operation layer stubbed out the application's
own glue costs ~20 us, yet the operation layer costs ~170 us inside it against ~95 us alone
(one run, GenerateDataKey). The server adds the HTTP framework (uvicorn's protocol and event
loop, which the benchmark measures against a trivial app) and two cores shared with the load
generator. The benchmark prints all three, so the gap is shown rather than guessed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import workloads
from hsmkms.specs import DataKeyPairSpec, DataKeySpec

P256 = DataKeyPairSpec.ECC_NIST_P256
ML_KEM_768 = DataKeyPairSpec.ML_KEM_768
OPERATIONS: dict[str, dict[str, str]] = {
    "GenerateDataKey": {"KeySpec": DataKeySpec.AES_256},
    f"GenerateDataKeyPair {P256}": {"KeyPairSpec": P256},
    f"GenerateDataKeyPair {ML_KEM_768}": {"KeyPairSpec": ML_KEM_768},
}
# Requests on asymmetric and HMAC keys (issue 14), by their workload names in bench/workloads.py:
# the body is the load generator's, on a key of that spec made in-process.
ASYMMETRIC = ("Sign RSA_2048 RSASSA_PSS_SHA_256", "GenerateMac HMAC_256 HMAC_SHA_256")
# Post-quantum requests (issue 15), likewise: the seed unsealed, expanded, used.
POST_QUANTUM = tuple(a.name for a in workloads.POST_QUANTUM)
SEED_EXPANSION = "  of which: seed expansion (from_seed_bytes)"
PQ_STEP = "  of which: ML-DSA sign / ML-KEM decapsulate"
UNSEAL = "  of which: token AES-GCM, unsealing the seed"
WOULD_BLOCK = "inline attempt, ends in WouldBlock (then all again on a thread)"
# The rows of the stage table, in order (a column has the stages of its operation).
ORDER = (
    "SigV4 verification",
    "JSON parsing and model conversion",
    WOULD_BLOCK,
    "operation layer (all of it)",
    "  of which: token AES-GCM",
    UNSEAL,
    "  of which: token C_Sign",
    "  of which: key pair + DER",
    SEED_EXPANSION,
    PQ_STEP,
    "response encoding",
    "sum of the stages above, each timed alone",
    "whole ASGI application, timed as one",
)


def _us(fn: Callable[[], object], seconds: float) -> float:
    """Microseconds per call of ``fn`` (after a short warm-up), over about ``seconds``."""
    for _ in range(50):
        fn()
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(100):
            fn()
        n += 100
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n * 1e6


def _measure(home: str, seconds: float) -> dict[str, dict[str, float]]:
    from hsmkms.config import Settings
    from hsmkms.home import ensure_home, read_credentials

    settings = ensure_home(Settings.load(home=Path(home), env={}))
    os.environ["SOFTHSM2_CONF"] = str(settings.softhsm_conf_path)

    from bench.signer import Signer
    from hsmkms import hsm, keypairs, model, pq
    from hsmkms.api import app as wire
    from hsmkms.api.sigv4 import SignedRequest
    from hsmkms.identity import Caller
    from hsmkms.kms import KMS

    kms = KMS(settings)
    # The token stage on keys of its own, through a Token of its own on the same library:
    # the same calls as the operation layer's, without reaching into it.
    token = hsm.open_token(settings.pkcs11_module, settings.token_label, settings.read_pin())
    material = os.urandom(32)
    token.create_master_key(material, "hsmkms-bench-stages")
    signing, hmac_key = os.urandom(32), os.urandom(32)
    token.create_private_key(signing, "hsmkms-bench-stages-rsa", "RSA_2048", "sign")
    token.create_secret_key(hmac_key, "hsmkms-bench-stages-hmac", 256)
    digest = hashlib.sha256(workloads.MESSAGE).digest()
    try:
        identity = next(iter(read_credentials(settings.credentials_path).values()))
        app = wire.create_app(kms, read_credentials(settings.credentials_path), settings)
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        fx = workloads.Fixture(key_id, [])
        for a in workloads.ASYMMETRIC + workloads.POST_QUANTUM:
            if a.name in ASYMMETRIC + POST_QUANTUM and a.slot not in fx.keys:
                made = kms.create_key(KeySpec=a.key_spec, KeyUsage=a.key_usage)
                fx.keys[a.slot] = made["KeyMetadata"]["KeyId"]
        signer = Signer(identity.access_key_id, identity.secret_access_key, settings.region,
                        "127.0.0.1:8080")  # fmt: skip
        caller = Caller(account_id=identity.account_id, principal_arn=identity.principal_arn,
                        access_key_id=identity.access_key_id, source_ip="127.0.0.1")  # fmt: skip
        requests: dict[str, tuple[str, bytes]] = {
            label: (label.split()[0], json.dumps({"KeyId": key_id, **extra}).encode())
            for label, extra in OPERATIONS.items()
        }
        kem = workloads.POST_QUANTUM_BY_NAME[POST_QUANTUM[1]]
        encapsulate = {"KeyId": fx.keys[kem.slot], "EncapsulationAlgorithm": kem.algorithm}
        made = kms.call("Encapsulate", encapsulate, caller)
        fx.ciphertext = base64.b64encode(made["SharedSecretCiphertextBlob"]).decode()
        seeds = {"ML_DSA_65": os.urandom(32), "ML_KEM_768": os.urandom(64)}
        seed_iv = os.urandom(12)
        sealed_seeds = {s: token.encrypt(material, seed_iv, v, b"aad") for s, v in seeds.items()}
        expanded = {s: pq.from_seed(s, v) for s, v in seeds.items()}
        kem_ciphertext = made["SharedSecretCiphertextBlob"]
        for label in ASYMMETRIC + POST_QUANTUM:
            target, body = workloads.workload(label, fx, random.Random(1))()
            requests[label] = (target.removeprefix(workloads.TARGET_PREFIX), body)
        out: dict[str, dict[str, float]] = {}
        for label, (operation, body) in requests.items():
            signed = signer.headers(model.TARGET_PREFIX + "." + operation, body)
            signed["Content-Length"] = str(len(body))
            scope = {
                "type": "http", "method": "POST", "path": "/", "raw_path": b"/",
                "query_string": b"", "client": ("127.0.0.1", 1),
                "headers": [(k.lower().encode(), v.encode()) for k, v in signed.items()],
            }  # fmt: skip
            request = SignedRequest(method="POST", raw_path="/", query_string="",
                                    headers=wire._headers(scope), body=body)  # fmt: skip
            params = model.from_wire(operation, json.loads(body))
            result = kms.call(operation, dict(params), caller)
            # A P-256 PKCS#8 private key is 138 bytes, an ML-KEM one 86; a data key 32.
            plaintext = b"x" * (32 if "Pair" not in operation else 86 if "ML_KEM" in label else 138)
            spec = str(json.loads(body).get("KeyPairSpec", ""))

            def verify(r: SignedRequest = request) -> object:
                return app.verifier.verify(r)

            def parse(o: str = operation, b: bytes = body) -> object:
                return model.from_wire(o, wire._parse_json(b))

            def operate(o: str = operation, p: dict[str, Any] = params) -> object:
                if o == "Sign":  # as on the worker thread, where it ends
                    return kms.call(o, dict(p), caller)
                return kms.try_quick(o, dict(p), caller)

            def inline(o: str = operation, p: dict[str, Any] = params) -> object:
                return kms.try_quick(o, dict(p), caller)

            def seal(pt: bytes = plaintext) -> object:
                return token.encrypt(material, os.urandom(12), pt, b"aad")

            def pair(s: str = spec) -> object:
                return keypairs.generate(s)

            def encode(o: str = operation, r: dict[str, Any] = result) -> object:
                return wire._dumps(model.to_wire(o, r))

            stages: dict[str, float] = {
                "SigV4 verification": _us(verify, seconds),
                "JSON parsing and model conversion": _us(parse, seconds),
            }
            if label == ASYMMETRIC[0]:
                # The operation runs inline until the RSA private-key step, gives up with
                # WouldBlock (service/quick.py) and runs again, whole, on a worker thread.
                stages[WOULD_BLOCK] = _us(inline, seconds)
            stages["operation layer (all of it)"] = _us(operate, seconds)
            if label in POST_QUANTUM:
                s = workloads.POST_QUANTUM_BY_NAME[label].key_spec
                stages[UNSEAL] = _us(
                    partial(token.decrypt, material, seed_iv, sealed_seeds[s], b"aad"), seconds
                )
                stages[SEED_EXPANSION] = _us(partial(pq.from_seed, s, seeds[s]), seconds)
                if label.startswith("Sign"):
                    step = partial(pq.sign, expanded[s], workloads.MESSAGE, False)
                else:
                    step = partial(pq.decapsulate, expanded[s], kem_ciphertext)
                stages[PQ_STEP] = _us(step, seconds)
            elif operation == "Sign":
                stages["  of which: token C_Sign"] = _us(
                    lambda: token.sign(signing, "PSS", "SHA256", digest), seconds
                )
            elif operation == "GenerateMac":
                stages["  of which: token C_Sign"] = _us(
                    lambda: token.mac(hmac_key, "SHA256", workloads.MESSAGE), seconds
                )
            else:
                stages["  of which: token AES-GCM"] = _us(seal, seconds)
            if spec:
                stages["  of which: key pair + DER"] = _us(pair, seconds)
            stages["response encoding"] = _us(encode, seconds)
            stages["sum of the stages above, each timed alone"] = sum(
                v for k, v in stages.items() if not k.startswith("  ")
            )
            stages["whole ASGI application, timed as one"] = _asgi_us(app, scope, body, seconds)
            out[label] = stages
        app.close()
        return out
    finally:
        for mid in (material, signing, hmac_key):
            with contextlib.suppress(Exception):
                token.destroy_master_key(mid)
        token.close()
        kms.close()


def _asgi_us(app: Any, scope: dict[str, Any], body: bytes, seconds: float) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def loop() -> float:
        for _ in range(50):
            await app(scope, receive, send)
        # CPU time of the whole process (every thread): a call sent to a worker thread waits
        # for it to wake, which is time but not work.
        n, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                await app(scope, receive, send)
            n += 100
        return (time.process_time() - cpu) / n * 1e6

    return asyncio.run(loop())


def measure(home: Path, seconds: float) -> dict[str, dict[str, float]]:
    """operation -> stage -> microseconds per request, in a fresh spawned process."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_measure, (str(home), seconds))
