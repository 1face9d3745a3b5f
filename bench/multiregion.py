"""Multi-Region keys and last use (issue 17): what each server needs for those cells, and the
paragraph under their table.

The fixture: a multi-Region key (CreateKey MultiRegion) in us-east-1, its replica in us-west-2
(ReplicateKey), and one 64-byte blob the primary encrypted. Each workload is then called once,
signed for the Region it runs in (:func:`bench.workloads.signed_for`): what a server cannot do
goes to ``Fixture.missing`` with the reason, so that its cell reads n/a rather than a column of
errors. A Decrypt through the replica must answer with the replica's ARN (us-west-2): one that
names the primary was not decrypted by the replica, and the cell would measure something else.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

from bench.load import TARGET_PREFIX, Connection, Endpoint
from bench.report import _cell_text, _rates, fmt_cpu, fmt_rate
from bench.workloads import (
    LAST_USAGE,
    MRK_ENCRYPT,
    MRK_SLOT,
    MULTI_REGION_WORKLOADS,
    PRIMARY_DECRYPT,
    REPLICA_DECRYPT,
    REPLICA_REGION,
    SINGLE_ENCRYPT,
    Fixture,
    Row,
    _attempt,
    signed_for,
    workload,
)

PLAINTEXT = bytes(range(128, 192))  # the 64 bytes of the blob decrypted through both Regions


async def prepare(endpoint: Endpoint, fx: Fixture) -> None:
    """The multi-Region key, its replica and the blob in ``fx``; each workload called once."""
    # One connection per Region: the checks of the endpoint's own Region on the connection
    # that made the key, so on the worker that made it (another worker may not see a token
    # object made a moment before until it re-reads the token, and logs a warning).
    conns = {endpoint.region: Connection(endpoint)}
    try:
        await _prepare(conns[endpoint.region], fx)
        for name in MULTI_REGION_WORKLOADS:
            if name in fx.missing:
                continue
            target, body = workload(name, fx, random.Random(1))()
            operation = target.removeprefix(TARGET_PREFIX)
            there = signed_for(name, endpoint)
            if there.region not in conns:
                conns[there.region] = Connection(there)
            answer, why = await _attempt(conns[there.region], operation, json.loads(body))
            if answer is None:
                if operation == "Decrypt":
                    why += " (of a blob its own Encrypt made under the key a moment before)"
                fx.missing[name] = f"{operation}: {why}"
            elif name == REPLICA_DECRYPT and f":{REPLICA_REGION}:" not in str(answer.get("KeyId")):
                fx.missing[name] = (
                    f"Decrypt signed for {REPLICA_REGION} answered KeyId {answer.get('KeyId')}, "
                    "not the replica's"
                )
    finally:
        for conn in conns.values():
            conn.close()


async def _prepare(conn: Connection, fx: Fixture) -> None:
    def lack(names: tuple[str, ...], why: str) -> None:
        for name in names:
            fx.missing.setdefault(name, why)

    mrk = (MRK_ENCRYPT, PRIMARY_DECRYPT, REPLICA_DECRYPT)
    params: dict[str, Any] = {"MultiRegion": True, "Description": "benchmark"}
    answer, why = await _attempt(conn, "CreateKey", params)
    if answer is None:
        lack(mrk, f"CreateKey MultiRegion: {why}")
        return
    key_id = answer["KeyMetadata"]["KeyId"]
    if not key_id.startswith("mrk-"):
        lack(mrk, f"CreateKey MultiRegion answered KeyId {key_id}, not an mrk- key")
        return
    fx.keys[MRK_SLOT] = key_id
    params = {"KeyId": key_id, "ReplicaRegion": REPLICA_REGION}
    answer, why = await _attempt(conn, "ReplicateKey", params)
    if answer is None:
        lack((REPLICA_DECRYPT,), f"ReplicateKey to {REPLICA_REGION}: {why}")
    params = {"KeyId": key_id, "Plaintext": base64.b64encode(PLAINTEXT).decode()}
    answer, why = await _attempt(conn, "Encrypt", params)
    if answer is None:
        lack((PRIMARY_DECRYPT, REPLICA_DECRYPT), f"Encrypt (the blob to decrypt): {why}")
        return
    fx.replica_blob = answer["CiphertextBlob"]


def is_multi_region(row: Row) -> bool:
    """A row of the issue 17 table."""
    return row.workload in MULTI_REGION_WORKLOADS


def _beside(rows: list[Row], new: str, old: str, words: str) -> str:
    cells, base = _rates(rows, new), _rates(rows, old)
    both = sorted(c for c in cells if c in base and base[c].rate)
    if not both:
        return ""
    return words + ", ".join(
        f"c={c} {fmt_rate(cells[c].rate)}/s vs {fmt_rate(base[c].rate)}/s "
        f"({cells[c].rate / base[c].rate - 1:+.0%}; {fmt_cpu(cells[c])} vs "
        f"{fmt_cpu(base[c])} us CPU)"
        for c in both
    )


def summary(rows: list[Row]) -> list[str]:
    """The paragraph under the issue 17 table: each new cell against the one beside it, cell
    after cell; GetKeyLastUsage at each concurrency; the peer's n/a reasons."""
    if not any(is_multi_region(r) for r in rows):
        return []
    parts = [
        _beside(rows, MRK_ENCRYPT, SINGLE_ENCRYPT,
                "Encrypt 64 B under the multi-Region primary against a single-Region key: "),
        _beside(rows, REPLICA_DECRYPT, PRIMARY_DECRYPT,
                f"Decrypt of the primary's blob through the replica (signed for "
                f"{REPLICA_REGION}) against through the primary: "),
    ]  # fmt: skip
    usage = _rates(rows, LAST_USAGE)
    if usage:
        parts.append(
            f"{LAST_USAGE} on a key in use: "
            + ", ".join(f"c={c} {_cell_text(r)}" for c, r in sorted(usage.items()))
        )
    lines = ["; ".join(p for p in parts if p) + "." if any(parts) else ""]
    missing = sorted({f"{peer} {r.workload}: {why}" for r in rows if is_multi_region(r)
                      for peer, why in r.unavailable.items()})  # fmt: skip
    if missing:
        lines.append("Not measured (n/a in the table): " + "; ".join(missing) + ".")
    return [" ".join(line for line in lines if line)]
