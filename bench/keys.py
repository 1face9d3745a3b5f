"""``scripts/bench --keys N``: what the number of keys costs, GenerateDataKey over 10 keys
against N (created through the server), and the server's start-up with N keys."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from bench import footprint
from bench.load import Connection, Endpoint, on_uvloop
from bench.servers import Hsmkms
from bench.workloads import AES_256, prepare

if TYPE_CHECKING:
    from bench.cells import Bench


def key_count(bench: Bench) -> dict[str, Any]:
    """GenerateDataKey over 10 keys, then over ``--keys`` (two passes) and over the first 10
    of them, and the server's start-up with them all: the rows, verdicts and timings."""
    opt = bench.opt
    home = bench.work / "keys-home"
    out: dict[str, Any] = {"keys": opt.keys}
    c = max(opt.concurrency)
    with Hsmkms(home, bench.work, opt.workers, {}) as ours:
        fx = on_uvloop(prepare(ours.endpoint(), blobs=1))
        fx.key_ids = [fx.key_id] + on_uvloop(create_keys(ours.endpoint(), 9))
        few = list(fx.key_ids)
        r10 = bench.cell("GenerateDataKey over all keys", c, {"hsmkms": (ours, fx)},
                         ("hsmkms",), label=f"GenerateDataKey, {len(few)} keys",
                         seconds=opt.seconds * 2)  # fmt: skip
        began = time.monotonic()
        fx.key_ids += on_uvloop(create_keys(ours.endpoint(), opt.keys - len(few), progress=True))
        out["create_seconds"] = time.monotonic() - began
        # The first pass pays, once per worker, for meeting the keys the other worker
        # created (a search of every key handle on the token, and each key record's first
        # read); the second, after a longer warm-up, shows the steady state (20,000
        # worker-key pairs take ~40,000 random requests to be nearly all met).
        label = f"GenerateDataKey, {len(fx.key_ids)} keys (each request a random one)"
        rcold = bench.cell(
            "GenerateDataKey over all keys", c, {"hsmkms": (ours, fx)}, ("hsmkms",),
            label=f"{label}, first pass", seconds=opt.seconds * 2,
        )  # fmt: skip
        warm = opt.seconds * 3
        rall = bench.cell(
            "GenerateDataKey over all keys", c, {"hsmkms": (ours, fx)}, ("hsmkms",),
            label=f"{label}, second pass ({warm:g} s warm-up)", seconds=opt.seconds * 2,
            warmup=warm,
        )  # fmt: skip
        all_ids = fx.key_ids
        fx.key_ids = few
        rhot = bench.cell(
            "GenerateDataKey over all keys",
            c,
            {"hsmkms": (ours, fx)},
            ("hsmkms",),
            label=f"GenerateDataKey, {len(few)} of {len(all_ids)} keys",
            seconds=opt.seconds * 2,
        )
        fx.key_ids = all_ids
        out["rss_mb"] = footprint.worker_rss(ours)
    restarted = Hsmkms(home, bench.work, opt.workers, {})
    with restarted:
        out["restart_seconds"] = restarted.started_in
        began = time.monotonic()
        on_uvloop(prepare_check(restarted.endpoint(), all_ids[-1]))
        out["first_request_seconds"] = time.monotonic() - began
    # What the home weighs and holds (issue 22's columns, for the token mode beside them).
    store = footprint.store_files(home)
    out["store_bytes"] = sum(v for k, v in store.items() if k.startswith("hsmkms.sqlite3"))
    out["token_objects"] = footprint.token_objects(home)
    print(
        f"store {out['store_bytes'] / 2**20:.1f} MiB, token objects {out['token_objects']}, "
        "RSS MiB " + ", ".join(f"{k} {v:.0f}" for k, v in out["rss_mb"].items()),
        flush=True,
    )
    print(
        f"start-up with {len(all_ids)} keys: healthy in {out['restart_seconds']:.2f} s, "
        f"first GenerateDataKey {out['first_request_seconds'] * 1000:.0f} ms later",
        flush=True,
    )
    out["rows"] = [r10, rcold, rall, rhot]
    base = r10.results["hsmkms"].rate
    out["verdicts"] = (
        [
            f"- {row.workload}: {row.results['hsmkms'].rate / base - 1:+.0%} against "
            f"{len(few)} keys (within 10%: "
            f"{'met' if row.results['hsmkms'].rate >= 0.9 * base else '**not met**'})"
            for row in (rall, rhot)
        ]
        if base
        else []
    )
    return out


async def create_keys(endpoint: Endpoint, n: int, progress: bool = False) -> list[str]:
    """``n`` CreateKey calls over 8 connections; the new key ids."""
    made: list[str] = []
    todo = iter(range(n))
    began = time.monotonic()

    async def worker() -> None:
        conn = Connection(endpoint)
        try:
            for _ in todo:
                answer = await conn.call("CreateKey", {"Description": "key count benchmark"})
                made.append(answer["KeyMetadata"]["KeyId"])
                if progress and len(made) % 1000 == 0:
                    rate = len(made) / (time.monotonic() - began)
                    print(f"  {len(made)} keys created ({rate:.0f}/s)", flush=True)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(8)))
    return made


async def prepare_check(endpoint: Endpoint, key_id: str) -> None:
    conn = Connection(endpoint)
    try:
        await conn.call("GenerateDataKey", {"KeyId": key_id, "KeySpec": AES_256})
    finally:
        conn.close()
