"""What a run sends: the workloads by the names the table shows, the fixture each server
needs for them, and the rows the cells fill."""

from __future__ import annotations

import base64
import itertools
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bench.load import TARGET_PREFIX, Connection, Endpoint, Result, Workload
from hsmkms.specs import SUPPORTED_PAIR_SPECS, DataKeyPairSpec, DataKeySpec, Family

T = TypeVar("T")

AES_256 = DataKeySpec.AES_256
P256 = DataKeyPairSpec.ECC_NIST_P256
RSA_SPECS = tuple(s for s in SUPPORTED_PAIR_SPECS if s.family is Family.RSA)
EC_SPECS = tuple(s for s in SUPPORTED_PAIR_SPECS if s.family is Family.EC)
PAIR_SPECS = tuple(s for s in SUPPORTED_PAIR_SPECS if s.family is not Family.RSA)  # EC, Ed25519
MIX = f"Mix 80% Decrypt, 15% GenerateDataKey, 5% GenerateDataKeyPair {P256}"
PEERS = ("hsmkms", "moto")


@dataclass
class Fixture:
    """What the workloads of one server need: a KMS key and ciphertexts to decrypt."""

    key_id: str
    decrypt_bodies: list[bytes]
    key_ids: list[str] = field(default_factory=list)


@dataclass
class Row:
    workload: str
    concurrency: int
    results: dict[str, Result]  # server name -> result


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
    if name == "Encrypt 64 B":
        plaintext = base64.b64encode(rng.randbytes(64)).decode()
        req = (TARGET_PREFIX + "Encrypt", _body({"KeyId": key, "Plaintext": plaintext}))
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
    if name == "GenerateDataKey over all keys":
        bodies = [_body({"KeyId": k, "KeySpec": AES_256}) for k in fx.key_ids]
        return lambda: (TARGET_PREFIX + "GenerateDataKey", rng.choice(bodies))
    raise ValueError(f"unknown workload {name!r}")


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


async def prepare(endpoint: Endpoint, blobs: int = 64) -> Fixture:
    """A KMS key on the server behind ``endpoint`` and ``blobs`` data key blobs to decrypt."""
    conn = Connection(endpoint)
    try:
        key = await conn.call("CreateKey", {"Description": "hsmkms benchmark"})
        key_id = key["KeyMetadata"]["KeyId"]
        bodies = []
        for _ in range(blobs):
            answer = await conn.call("GenerateDataKey", {"KeyId": key_id, "KeySpec": AES_256})
            bodies.append(_body({"CiphertextBlob": answer["CiphertextBlob"]}))
        return Fixture(key_id, bodies, [key_id])
    finally:
        conn.close()
