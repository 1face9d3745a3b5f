"""One benchmark run: hsmkms and moto side by side, the load generator's own ceiling, the
in-process ceilings, a table on stdout and in docs/benchmarks.md.

    scripts/bench                  # the full run (~10 minutes on 2 cores)
    scripts/bench --quick          # a smoke test of every cell (~2 minutes), writes nothing
    scripts/bench --keys 10000     # cost in the number of keys (~4.5 minutes, most of it
                                   # creating 10,000 token keys)

Cells alternate between the two servers (hsmkms first in one cell, moto first in the next),
so a burst of noise from elsewhere on the machine lands on both.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from hsmkms.bench import ceilings, stages
from hsmkms.bench.load import TARGET_PREFIX, Connection, Endpoint, Result, Workload, run_cell
from hsmkms.bench.servers import Hsmkms, Moto, Server, Trivial, TrivialAsgi

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"

EC_SPECS = ("ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521", "ECC_SECG_P256K1")
RSA_SPECS = ("RSA_2048", "RSA_3072", "RSA_4096")
PAIR_SPECS = (*EC_SPECS, "ECC_NIST_EDWARDS25519")
MIX = "Mix 80% Decrypt, 15% GenerateDataKey, 5% GenerateDataKeyPair ECC_NIST_P256"
PEERS = ("hsmkms", "moto")


@dataclass
class Options:
    seconds: float = 3.0
    warmup: float = 0.5
    concurrency: tuple[int, ...] = (1, 8, 32)
    workers: int = 2
    pool_size: int = 16
    only: str | None = None
    quick: bool = False
    keys: int = 0
    output: Path | None = DOC


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


def rsa_span(spec: str, quick: bool) -> float:
    """How many cells' worth of seconds an RSA measurement takes: RSA generation times vary
    widely (a random search for primes), so the slow specs need long windows to count enough
    pairs (RSA_3072 at ~10/s: ~120 pairs in 12 s; RSA_4096 at ~4/s: ~100 in 24 s)."""
    if quick:
        return 1.0
    return {"RSA_2048": 2.0, "RSA_3072": 4.0, "RSA_4096": 8.0}.get(spec, 2.0)


# -- workloads ---------------------------------------------------------------------------------
def _body(params: dict[str, Any]) -> bytes:
    return json.dumps(params, separators=(",", ":")).encode()


def _cycle(items: list[T]) -> Callable[[], T]:
    it: Iterator[T] = itertools.cycle(items)
    return lambda: next(it)


def workload(name: str, fx: Fixture, rng: random.Random) -> Workload:
    """The request maker for a workload name as it appears in the table."""
    key = fx.key_id
    gdk = (TARGET_PREFIX + "GenerateDataKey", _body({"KeyId": key, "KeySpec": "AES_256"}))
    decrypt = _cycle([(TARGET_PREFIX + "Decrypt", b) for b in fx.decrypt_bodies])
    if name == "GenerateDataKey":
        return lambda: gdk
    if name == "GenerateDataKeyWithoutPlaintext":
        req = (TARGET_PREFIX + name, _body({"KeyId": key, "KeySpec": "AES_256"}))
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
            _body({"KeyId": key, "KeyPairSpec": "ECC_NIST_P256"}),
        )

        def mix() -> tuple[str, bytes]:
            draw = rng.random()
            if draw < 0.80:
                return decrypt()
            return gdk if draw < 0.95 else pair

        return mix
    if name == "GenerateDataKey over all keys":
        bodies = [_body({"KeyId": k, "KeySpec": "AES_256"}) for k in fx.key_ids]
        return lambda: (TARGET_PREFIX + "GenerateDataKey", rng.choice(bodies))
    raise ValueError(f"unknown workload {name!r}")


def main_workloads() -> list[str]:
    return [
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "Encrypt 64 B",
        "Decrypt",
        *(f"GenerateDataKeyPair {s}" for s in PAIR_SPECS),
        "GenerateDataKeyPairWithoutPlaintext ECC_NIST_P256",
        MIX,
    ]


# -- running -----------------------------------------------------------------------------------
def _run(coro: Coroutine[Any, Any, T]) -> T:
    """On uvloop when it is there: the generator's own cost matters."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


async def prepare(endpoint: Endpoint, blobs: int = 64) -> Fixture:
    conn = Connection(endpoint)
    try:
        key = await conn.call("CreateKey", {"Description": "hsmkms benchmark"})
        key_id = key["KeyMetadata"]["KeyId"]
        bodies = []
        for _ in range(blobs):
            answer = await conn.call("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256"})
            bodies.append(_body({"CiphertextBlob": answer["CiphertextBlob"]}))
        return Fixture(key_id, bodies, [key_id])
    finally:
        conn.close()


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}"


def fmt_cpu(result: Result) -> str:
    """The server's CPU microseconds per answered request (all its processes and threads)."""
    per = result.cpu_per_request
    return "-" if per is None else f"{per * 1e6:,.0f}"


def fmt_errors(result: Result) -> str:
    if not result.errors:
        return "0"
    return "; ".join(f"{n} {kind}" for kind, n in result.errors.most_common(3))


def ratio(row: Row) -> str:
    ours, peer = row.results.get("hsmkms"), row.results.get("moto")
    if ours is None or peer is None:
        return ""
    if peer.rate == 0:
        return "peer failed" if ours.rate > 0 else "-"
    return f"{ours.rate / peer.rate:.1f}x"


def print_row(row: Row) -> None:
    cols = [f"{row.workload[:52]:<52}", f"c={row.concurrency:<3}"]
    for name in PEERS:
        r = row.results.get(name)
        if r is None:
            continue
        cols.append(
            f"{name} {fmt_rate(r.rate):>7}/s p50 {fmt_ms(r.percentile(50)):>6} "
            f"p99 {fmt_ms(r.percentile(99)):>6} ms cpu {fmt_cpu(r):>6} us err {fmt_errors(r)}"
        )
    cols.append(ratio(row))
    print("  ".join(cols), flush=True)


class Bench:
    def __init__(self, options: Options, work: Path) -> None:
        self.opt = options
        self.work = work
        self.rows: list[Row] = []
        self.notes: dict[str, Any] = {}

    def cell(
        self,
        name: str,
        concurrency: int,
        servers: dict[str, tuple[Server, Fixture]],
        order: tuple[str, ...],
        *,
        label: str | None = None,
        before: dict[str, Callable[[], None]] | None = None,
        **kwargs: Any,
    ) -> Row:
        """One workload at one concurrency on each server in ``order``; ``label`` names the
        row when it is not the workload's name; ``before[peer]`` runs just before that peer's
        turn. The server's CPU time over the cell is recorded with its result."""
        row = Row(label or name, concurrency, {})
        for peer in order:
            if peer not in servers:
                continue
            server, fx = servers[peer]
            if before and peer in before:
                before[peer]()
            rng = random.Random(7)
            cpu = server.cpu_seconds()
            seconds = kwargs.get("seconds", self.opt.seconds)
            if peer != "hsmkms":
                seconds = kwargs.get("peer_seconds", seconds)
            row.results[peer] = _run(
                run_cell(
                    server.endpoint(), workload(name, fx, rng), concurrency, seconds,
                    warmup=kwargs.get("warmup", self.opt.warmup),
                    max_requests=kwargs.get("max_requests"),
                )
            )  # fmt: skip
            row.results[peer].server_cpu = server.cpu_seconds() - cpu
        self.rows.append(row)
        print_row(row)
        return row

    # -- the generator's ceiling ----------------------------------------------------------
    def _against_trivial(self, server: Server, c: int) -> Result:
        """GenerateDataKey requests at ``c`` against a server that answers without looking."""
        fx = Fixture("1234abcd-12ab-34cd-56ef-1234567890ab", [b"{}"])
        cpu = server.cpu_seconds()
        r = _run(
            run_cell(
                server.endpoint(), workload("GenerateDataKey", fx, random.Random(1)),
                c, min(self.opt.seconds, 2.0), warmup=self.opt.warmup,
            )
        )  # fmt: skip
        r.server_cpu = server.cpu_seconds() - cpu
        return r

    def generator_ceiling(self) -> dict[int, tuple[float, float]]:
        """concurrency -> (ops/s, generator CPU us per request) against a trivial server."""
        out: dict[int, tuple[float, float]] = {}
        with Trivial(self.work) as trivial:
            for c in self.opt.concurrency:
                cpu = time.process_time()
                r = self._against_trivial(trivial, c)
                used = time.process_time() - cpu
                total = max(1, r.total)
                # CPU over the warm-up too: an upper bound on the cost of one request.
                out[c] = (r.rate, used / total * 1e6 * r.seconds / (r.seconds + self.opt.warmup))
                print(
                    f"load generator vs trivial server  c={c:<3} {fmt_rate(r.rate):>7}/s "
                    f"~{out[c][1]:.0f} us CPU/request", flush=True
                )
        return out

    def framework_ceiling(self) -> dict[int, tuple[float, float]]:
        """workers -> (ops/s, server CPU us per request) of uvicorn serving a trivial ASGI app
        the way hsmkms serves, at the highest concurrency: the HTTP floor under every cell."""
        out: dict[int, tuple[float, float]] = {}
        c = max(self.opt.concurrency)
        for workers in sorted({1, self.opt.workers}):
            with TrivialAsgi(self.work, workers) as floor:
                r = self._against_trivial(floor, c)
                out[workers] = (r.rate, (r.cpu_per_request or 0.0) * 1e6)
                print(
                    f"uvicorn + trivial ASGI app, {workers} worker(s)  c={c:<3} "
                    f"{fmt_rate(r.rate):>7}/s ~{out[workers][1]:.0f} us server CPU/request",
                    flush=True,
                )
        return out

    # -- in-process ceilings --------------------------------------------------------------
    def ceilings(self) -> dict[str, Any]:
        seconds = 0.3 if self.opt.quick else 1.5
        gcm = ceilings.token_gcm(self.work / "ceiling-home", seconds)
        for name, rate in gcm.items():
            print(f"in-process ceiling  {name:<28} {fmt_rate(rate):>8}/s", flush=True)
        cores = os.cpu_count() or 1
        pairs: dict[str, tuple[float, float]] = {}
        for spec in (*RSA_SPECS, *PAIR_SPECS):
            rsa = spec.startswith("RSA")
            span = seconds * (2 * rsa_span(spec, self.opt.quick) if rsa else 1)
            one = ceilings.keygen(spec, span, 1)
            many = ceilings.keygen(spec, span, cores) if not self.opt.quick else 0.0
            pairs[spec] = (one, many)
            print(
                f"in-process ceiling  key pair {spec:<22} {fmt_rate(one):>8}/s in 1 process, "
                f"{fmt_rate(many):>8}/s in {cores}", flush=True
            )
        return {"gcm": gcm, "pairs": pairs, "cores": cores}

    def stages(self) -> dict[str, dict[str, float]]:
        """Where a request's CPU goes, stage by stage, in-process (hsmkms/bench/stages.py)."""
        out = stages.measure(self.work / "stages-home", 0.3 if self.opt.quick else 1.0)
        for operation, parts in out.items():
            print(f"in-process stages of {operation}: "
                  + ", ".join(f"{k.strip()} {v:.0f} us" for k, v in parts.items()), flush=True)
        return out

    # -- the main comparison --------------------------------------------------------------
    def compare(self) -> None:
        opt = self.opt
        home = self.work / "hsmkms-home"
        settings = {"rsa_pool_size": str(opt.pool_size)}
        names = [w for w in main_workloads() if not opt.only or opt.only in w]
        rsa = [s for s in RSA_SPECS if not opt.only or opt.only in f"GenerateDataKeyPair {s}"]
        with Hsmkms(home, self.work, opt.workers, settings) as ours, Moto(self.work) as moto:
            print(f"hsmkms ready in {ours.started_in:.1f} s ({opt.workers} workers); "
                  f"moto ready in {moto.started_in:.1f} s", flush=True)
            fixtures = {
                "hsmkms": (ours, _run(prepare(ours.endpoint()))),
                "moto": (moto, _run(prepare(moto.endpoint()))),
            }  # type: dict[str, tuple[Server, Fixture]]
            self.wait_for_pool(ours)
            flip = False
            for name in names:
                for c in opt.concurrency:
                    order = PEERS[::-1] if flip else PEERS
                    flip = not flip
                    self.cell(name, c, fixtures, order)
            if not opt.only or opt.only in "GenerateDataKey":
                self.scaling(fixtures["hsmkms"])
            for spec in rsa:
                self.rsa_cells(spec, ours, fixtures)
        # What the server said while under load (e.g. inline calls sent to threads).
        log = ours.log_path.read_text(errors="replace").splitlines()
        self.notes["warnings"] = [line for line in log if line.startswith(("WARNING", "ERROR"))]
        for line in self.notes["warnings"][:5]:
            print(f"hsmkms log: {line}", flush=True)

    def scaling(self, two: tuple[Server, Fixture]) -> None:
        """GenerateDataKey at the highest concurrency on one worker, then on the run's workers,
        twice in turn: what a second process adds on these cores (load generator included).
        Two rounds, because one pair of cells moved by +-10% with the machine's neighbours."""
        c = max(self.opt.concurrency)
        with Hsmkms(self.work / "one-worker-home", self.work, 1, {}) as one:
            fx = _run(prepare(one.endpoint(), blobs=1))
            for _ in range(2):
                self.cell("GenerateDataKey", c, {"hsmkms": (one, fx)}, ("hsmkms",),
                          label="GenerateDataKey (--workers 1)")
                self.cell("GenerateDataKey", c, {"hsmkms": two}, ("hsmkms",),
                          label=f"GenerateDataKey (--workers {self.opt.workers})")

    def wait_for_pool(self, server: Hsmkms, timeout: float = 120.0) -> None:
        """Until every worker that answers /health reports a full key pair pool."""
        if self.opt.pool_size <= 0:
            return
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            stocks = []
            for _ in range(4 * self.opt.workers):  # new connections: reach every worker
                status, body = server.get("/health")
                stocks.append(json.loads(body).get("keypair_pool", {}))
            if all(s and min(s.values()) >= self.opt.pool_size for s in stocks):
                print(f"key pair pools full after {time.monotonic() - began:.1f} s", flush=True)
                return
            time.sleep(0.5)
        print("key pair pools not full: going on", flush=True)

    def rsa_cells(
        self, spec: str, ours: Hsmkms, fixtures: dict[str, tuple[Server, Fixture]]
    ) -> None:
        """RSA: first while the pool has stock (hsmkms only: the peer has no pool), then
        past it, once the stock is drained and every pair is generated on demand."""
        name = f"GenerateDataKeyPair {spec}"
        self.wait_for_pool(ours)
        # One connection stays on one worker: take less than one worker's stock.
        stocked = max(1, self.opt.pool_size - 2)
        self.cell(
            name, 1, {"hsmkms": fixtures["hsmkms"]}, ("hsmkms",), label=f"{name} (pool stock)",
            seconds=60.0, warmup=0.0, max_requests=stocked,
        )  # fmt: skip
        drain = (self.opt.pool_size + 2) * self.opt.workers

        def drain_stock() -> None:
            """Take every worker's stock (not measured): what the pools refilled while the
            peer had its turn would otherwise count as generated during the cell."""
            _run(
                run_cell(
                    ours.endpoint(), workload(name, fixtures["hsmkms"][1], random.Random(3)),
                    16, 120.0, warmup=0.0, max_requests=drain,
                )
            )  # fmt: skip

        flip = False
        for c in self.opt.concurrency:
            order = PEERS[::-1] if flip else PEERS
            flip = not flip
            self.cell(name, c, fixtures, order, label=f"{name} (past the pool)",
                      seconds=self.opt.seconds * rsa_span(spec, self.opt.quick),
                      before={"hsmkms": drain_stock},
                      peer_seconds=self.opt.seconds)  # fmt: skip

    # -- cost in the number of keys ---------------------------------------------------------
    def key_count(self) -> dict[str, Any]:
        opt = self.opt
        home = self.work / "keys-home"
        out: dict[str, Any] = {"keys": opt.keys}
        c = max(opt.concurrency)
        with Hsmkms(home, self.work, opt.workers, {}) as ours:
            fx = _run(prepare(ours.endpoint(), blobs=1))
            fx.key_ids = [fx.key_id] + _run(create_keys(ours.endpoint(), 9))
            few = list(fx.key_ids)
            r10 = self.cell("GenerateDataKey over all keys", c, {"hsmkms": (ours, fx)},
                            ("hsmkms",), label=f"GenerateDataKey, {len(few)} keys",
                            seconds=opt.seconds * 2)
            began = time.monotonic()
            fx.key_ids += _run(create_keys(ours.endpoint(), opt.keys - len(few), progress=True))
            out["create_seconds"] = time.monotonic() - began
            # The first pass pays, once per worker, for meeting the keys the other worker
            # created (a search of every key handle on the token, and each key record's first
            # read); the second, after a longer warm-up, shows the steady state (20,000
            # worker-key pairs take ~40,000 random requests to be nearly all met).
            label = f"GenerateDataKey, {len(fx.key_ids)} keys (each request a random one)"
            rcold = self.cell(
                "GenerateDataKey over all keys", c, {"hsmkms": (ours, fx)}, ("hsmkms",),
                label=f"{label}, first pass", seconds=opt.seconds * 2,
            )  # fmt: skip
            warm = opt.seconds * 3
            rall = self.cell(
                "GenerateDataKey over all keys", c, {"hsmkms": (ours, fx)}, ("hsmkms",),
                label=f"{label}, second pass ({warm:g} s warm-up)", seconds=opt.seconds * 2,
                warmup=warm,
            )  # fmt: skip
            all_ids = fx.key_ids
            fx.key_ids = few
            rhot = self.cell(
                "GenerateDataKey over all keys", c, {"hsmkms": (ours, fx)}, ("hsmkms",),
                label=f"GenerateDataKey, {len(few)} of {len(all_ids)} keys",
                seconds=opt.seconds * 2,
            )
            fx.key_ids = all_ids
        restarted = Hsmkms(home, self.work, opt.workers, {})
        with restarted:
            out["restart_seconds"] = restarted.started_in
            began = time.monotonic()
            _run(prepare_check(restarted.endpoint(), all_ids[-1]))
            out["first_request_seconds"] = time.monotonic() - began
        print(f"start-up with {len(all_ids)} keys: healthy in {out['restart_seconds']:.2f} s, "
              f"first GenerateDataKey {out['first_request_seconds'] * 1000:.0f} ms later",
              flush=True)
        out["rows"] = [r10, rcold, rall, rhot]
        base = r10.results["hsmkms"].rate
        out["verdicts"] = [
            f"- {row.workload}: {row.results['hsmkms'].rate / base - 1:+.0%} against "
            f"{len(few)} keys (within 10%: "
            f"{'met' if row.results['hsmkms'].rate >= 0.9 * base else '**not met**'})"
            for row in (rall, rhot)
        ] if base else []
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
        await conn.call("GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256"})
    finally:
        conn.close()


# -- the machine and the report ----------------------------------------------------------------
def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    try:
        softhsm = subprocess.run(
            ["softhsm2-util", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        softhsm = "?"
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()
    except OSError:
        commit = "?"
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": f"{os.cpu_count()} cores, {model}".rstrip(", "),
        "memory": mem,
        "os": os_name,
        "python": platform.python_version(),
        "versions": ", ".join(
            f"{d} {_version(d)}"
            for d in ("uvicorn", "uvloop", "httptools", "python-pkcs11", "cryptography", "moto")
        ) + f", SoftHSM {softhsm}",
        "commit": commit,
    }


def rows_markdown(rows: list[Row]) -> list[str]:
    lines = [
        "| workload | c | hsmkms ops/s | p50 ms | p99 ms | errors | CPU us/req | moto ops/s "
        "| p50 ms | p99 ms | errors | CPU us/req | hsmkms/moto |",
        "|---|--:|--:|--:|--:|---|--:|--:|--:|--:|---|--:|--:|",
    ]
    for row in rows:
        cols = [row.workload, str(row.concurrency)]
        for peer in PEERS:
            r = row.results.get(peer)
            if r is None:
                cols += ["", "", "", "", ""]
                continue
            cols += [fmt_rate(r.rate), fmt_ms(r.percentile(50)), fmt_ms(r.percentile(99)),
                     fmt_errors(r), fmt_cpu(r)]
        cols.append(ratio(row))
        lines.append("| " + " | ".join(cols) + " |")
    return lines


def find(rows: list[Row], workload: str, concurrency: int) -> Row | None:
    for row in rows:
        if row.workload == workload and row.concurrency == concurrency:
            return row
    return None


def targets(rows: list[Row], ceil: dict[str, Any]) -> list[str]:
    """Each target of issue 7 this run can judge: met or not, with the figures."""
    out: list[str] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    for name in ("GenerateDataKey", "Decrypt"):
        row = find(rows, name, 32)
        if row and "hsmkms" in row.results and "moto" in row.results:
            ours, peer = row.results["hsmkms"], row.results["moto"]
            p99 = ours.percentile(99) or 0.0
            ok = ours.rate >= 5 * peer.rate and p99 <= 0.025 and not ours.errors
            out.append(
                f"- {name} at c=32: {fmt_rate(ours.rate)}/s = "
                f"{ours.rate / max(peer.rate, 1e-9):.1f}x moto (>= 5x), p99 "
                f"{fmt_ms(p99)} ms (<= 25), {sum(ours.errors.values())} errors: {verdict(ok)}"
            )
    c = max((r.concurrency for r in rows), default=0)
    ones = [r for r in rows if r.workload == "GenerateDataKey (--workers 1)"]
    manys = [r for r in rows if r.workload.startswith("GenerateDataKey (--workers ")
             and r not in ones]  # fmt: skip
    one_rate = sum(r.results["hsmkms"].rate for r in ones)
    if ones and manys and one_rate:
        gain = sum(r.results["hsmkms"].rate for r in manys) / one_rate
        out.append(f"- {manys[0].workload} vs --workers 1, GenerateDataKey at c={c} "
                   f"({len(ones)} rounds in turn, rates summed): {gain:.2f}x (>= 1.6x): "
                   f"{verdict(gain >= 1.6)}")
    pairs = ceil.get("pairs", {})
    for spec in (*EC_SPECS, "ECC_NIST_EDWARDS25519"):
        best = max(
            (r.results["hsmkms"].rate for r in rows
             if r.workload == f"GenerateDataKeyPair {spec}" and "hsmkms" in r.results),
            default=None,
        )  # fmt: skip
        if best is None:
            continue
        raw = pairs.get(spec, (0.0, 0.0))[0]
        share = best / raw if raw else 0.0
        if spec == "ECC_NIST_P256":
            out.append(f"- GenerateDataKeyPair {spec}: best {fmt_rate(best)}/s (>= 2,000/s): "
                       f"{verdict(best >= 2000)}")
        out.append(
            f"- GenerateDataKeyPair {spec}: best {fmt_rate(best)}/s = {share:.0%} of "
            f"cryptography's {fmt_rate(raw)}/s in one process (>= 40%): {verdict(share >= 0.4)}"
            + ("" if share >= 0.4 else why_pairs_cap(rows, spec, raw, ceil))
        )
    for spec in RSA_SPECS:
        stocked = find(rows, f"GenerateDataKeyPair {spec} (pool stock)", 1)
        if stocked and "hsmkms" in stocked.results:
            p50 = stocked.results["hsmkms"].percentile(50) or 0.0
            out.append(f"- {spec} from the pool: p50 {fmt_ms(p50)} ms (<= 10): "
                       f"{verdict(p50 <= 0.010)}")
        best = max(
            (r.results["hsmkms"].rate for r in rows
             if r.workload == f"GenerateDataKeyPair {spec} (past the pool)"
             and "hsmkms" in r.results),
            default=None,
        )  # fmt: skip
        raw = pairs.get(spec, (0.0, 0.0))[1]
        if best is not None and raw:
            out.append(
                f"- {spec} past the pool: best {fmt_rate(best)}/s = {best / raw:.0%} of "
                f"cryptography's {fmt_rate(raw)}/s on {ceil.get('cores')} cores (>= 80%): "
                f"{verdict(best >= 0.8 * raw)}"
            )
    return out


def why_pairs_cap(rows: list[Row], spec: str, raw: float, ceil: dict[str, Any]) -> str:
    """Where a key pair's request time goes, from this run's own figures: the server's CPU per
    request against the in-process cost of the pair, and what the two cores allow."""
    pair = find(rows, f"GenerateDataKeyPair {spec}", 32)
    gdk = find(rows, "GenerateDataKey", 32)
    per = pair.results["hsmkms"].cpu_per_request if pair and "hsmkms" in pair.results else None
    if per is None or not raw:
        return ""
    text = (f"; the server spent {per * 1e6:,.0f} us of CPU per pair at c=32, of which "
            f"generating it is {1e6 / raw:,.0f} us")
    base = gdk.results["hsmkms"].cpu_per_request if gdk and "hsmkms" in gdk.results else None
    if base is not None:
        text += f" (a GenerateDataKey, with no pair, took {base * 1e6:,.0f} us)"
    gen = ceil.get("generator_us")
    cores = ceil.get("cores") or 1
    if gen:
        # What the cores allow for this request path, the load generator's share included.
        cap = cores * 1e6 / (per * 1e6 + gen)
        text += (f": {cores} cores at {per * 1e6:,.0f} + {gen:,.0f} us (load generator) per "
                 f"request allow ~{fmt_rate(cap)}/s, {cap / raw:.0%} of the target's reference")
    return text


def stages_markdown(
    parts: dict[str, dict[str, float]], floor: dict[int, tuple[float, float]], rows: list[Row]
) -> list[str]:
    """The per-stage profile, next to what the server spent per request in this run."""
    names = list(parts)
    lines = [
        "| stage (us of CPU per request) | " + " | ".join(names) + " |",
        "|---|" + "--:|" * len(names),
    ]
    stage_names: list[str] = []
    for stages_of in sorted(parts.values(), key=len, reverse=True):  # the fullest sets the order
        stage_names += [k for k in stages_of if k not in stage_names]
    for stage in stage_names:
        cells = [f"{parts[n][stage]:.0f}" if stage in parts[n] else "" for n in names]
        lines.append(f"| {stage.replace('  ', '&nbsp;&nbsp;')} | " + " | ".join(cells) + " |")
    if 1 in floor:
        us = f"{floor[1][1]:.0f}"
        lines.append("| HTTP framework (uvicorn, trivial app, 1 worker) | "
                     + " | ".join(us for _ in names) + " |")
    served = []
    for n in names:
        row = find(rows, n, 32)
        per = row.results["hsmkms"].cpu_per_request if row and "hsmkms" in row.results else None
        served.append("-" if per is None else f"{per * 1e6:.0f}")
    lines.append("| **measured in the server at c=32** (all processes) | "
                 + " | ".join(served) + " |")
    return lines


def replace_section(text: str, tag: str, body: str) -> str:
    start, end = f"<!-- bench:{tag} -->", f"<!-- /bench:{tag} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    return text.rstrip() + "\n\n" + block + "\n"


def doc_skeleton() -> str:
    return (
        "# Benchmarks\n\n"
        "Produced by `scripts/bench` (hsmkms/bench/); the sections between the bench markers "
        "are rewritten by each run.\n"
    )


def write_doc(path: Path, tag: str, body: str) -> None:
    text = path.read_text() if path.exists() else doc_skeleton()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(text, tag, body))
    print(f"wrote {path} (section {tag})", flush=True)


def header(opt: Options, load: tuple[float, float]) -> list[str]:
    m = machine()
    common = [
        f"Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit {m['commit']}; "
        f"load average {load[0]:.2f} before, {load[1]:.2f} after (1 min).",
        "",
        f"- machine: {m['cpu']}, {m['memory']}, {m['os']}, Python {m['python']}",
        f"- versions: {m['versions']}",
        f"- hsmkms: `serve --workers {opt.workers}`, embedded default (SoftHSM2 + SQLite), ",
    ]
    if opt.keys:
        common[-1] += "keys created through the server (CreateKey over 8 connections)"
        return [*common, f"- each cell: {opt.warmup:g} s warm-up, then {2 * opt.seconds:g} s "
                "measured; CPU us/req: the server's CPU time (all processes) per answer"]
    common[-1] += f"rsa_pool_size {opt.pool_size}; moto: `moto_server` (one process)"
    return [
        *common,
        f"- each cell: {opt.warmup:g} s warm-up, then {opt.seconds:g} s measured (RSA past "
        "the pool: RSA_2048 twice that, RSA_3072 four times, RSA_4096 eight times, moto's "
        "turns not lengthened, each hsmkms turn after draining the pools), SigV4-signed "
        "requests on keep-alive connections, c = connections; CPU us/req: the server's CPU "
        "time (all processes) per answer",
    ]


# -- entry ---------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, help="measured seconds per cell (default 3)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 0.5)")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated (default 1,8,32)")
    p.add_argument("--workers", type=int, default=2, help="hsmkms worker processes (default 2)")
    p.add_argument("--pool-size", type=int, default=16,
                   help="hsmkms rsa_pool_size for the run (default 16)")
    p.add_argument("--only", help="run only workloads whose name contains this")
    p.add_argument("--quick", action="store_true", help="a short smoke test; writes nothing")
    p.add_argument("--keys", type=int, default=0,
                   help="instead: GenerateDataKey with 10 keys vs this many, and start-up time")
    p.add_argument("--output", type=Path, default=DOC, help="markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only")
    a = p.parse_args(argv)
    quick = bool(a.quick)
    return Options(
        seconds=a.seconds if a.seconds is not None else (0.4 if quick else 3.0),
        warmup=a.warmup if a.warmup is not None else (0.2 if quick else 0.5),
        concurrency=tuple(int(c) for c in a.concurrency.split(",") if c),
        workers=a.workers,
        pool_size=a.pool_size,
        only=a.only,
        quick=quick,
        keys=a.keys,
        output=None if (a.no_write or quick or a.only) else a.output,
    )


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hsmkms-bench-") as tmp:
        bench = Bench(opt, Path(tmp))
        if opt.keys:
            result = bench.key_count()
            body = [
                *header(opt, (load_before, os.getloadavg()[0])),
                "",
                *rows_markdown(result["rows"]),
                "",
                *result["verdicts"],
                f"- creating {opt.keys - 10} keys took {result['create_seconds']:.0f} s",
                f"- start-up with {opt.keys} keys: healthy after "
                f"{result['restart_seconds']:.2f} s (< 10 s: "
                f"{'met' if result['restart_seconds'] < 10 else '**not met**'}), first "
                f"GenerateDataKey {result['first_request_seconds'] * 1000:.0f} ms later",
            ]
            if opt.output:
                write_doc(opt.output, "keys", "\n".join(body))
            return 0
        gen = bench.generator_ceiling()
        floor = bench.framework_ceiling()
        ceil = bench.ceilings()
        parts = bench.stages()
        ceil["generator_us"] = gen[max(gen)][1] if gen else None
        bench.compare()
        load_after = os.getloadavg()[0]
        verdicts = targets(bench.rows, ceil)
        print("\n".join(verdicts), flush=True)
        if opt.output:
            cores = ceil["cores"]
            body = [
                *header(opt, (load_before, load_after)),
                "",
                "Load generator against a trivial server (its own ceiling): "
                + ", ".join(f"c={c} {fmt_rate(r)}/s (~{us:.0f} us CPU per request)"
                            for c, (r, us) in gen.items()) + ".",
                "",
                f"HTTP framework ceiling (uvicorn serving a trivial ASGI app through hsmkms's "
                f"protocol class and worker sockets, c={max(opt.concurrency)}): "
                + ", ".join(f"{w} worker{'s' if w > 1 else ''} {fmt_rate(r)}/s (~{us:.0f} us "
                            "server CPU per request)" for w, (r, us) in floor.items()) + ".",
                "",
                "In-process ceilings: "
                + ", ".join(f"{k} {fmt_rate(v)}/s" for k, v in ceil["gcm"].items())
                + " (SoftHSM2 through python-pkcs11, one process); key pairs with cryptography "
                f"(DER included), one process / {cores} processes: "
                + ", ".join(f"{s} {fmt_rate(a)}/{fmt_rate(b)}"
                            for s, (a, b) in ceil["pairs"].items()) + " per second.",
                "",
                *rows_markdown(bench.rows),
                "",
                "Where a request's CPU goes: each stage timed alone in one process on the "
                "request the load generator sends (hsmkms/bench/stages.py), against what the "
                "server spent per request in the table above:",
                "",
                *stages_markdown(parts, floor, bench.rows),
                "",
                "Targets (issue 7):",
                "",
                *verdicts,
                "",
                f"hsmkms logged {len(bench.notes.get('warnings', []))} warnings or errors"
                + (": " + "; ".join(f"`{w[:160]}`" for w in bench.notes["warnings"][:3])
                   if bench.notes.get("warnings") else "."),
            ]
            write_doc(opt.output, "main", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
