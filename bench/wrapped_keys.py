"""``scripts/bench --master-keys wrapped --keys 10,10000,100000,1000000`` (issue 22): what the
number of keys costs in the wrapped master-key mode, one home grown N by N.

For each N, in increasing order, on one home served with ``HSMKMS_MASTER_KEYS=wrapped``:

1. the keys up to N are made: up to 1,000 through the server (CreateKey over HTTP), the rest
   by the bulk path (bench/bulk.py: ``hsmkms.KMS.create_key`` in two processes, the server
   stopped);
2. with every process stopped: the store's size on disk (hsmkms.sqlite3 with its WAL and
   shared-memory files), the objects on the token (bench/token_count.py: a PKCS#11 listing
   and SoftHSM2's object files, not hsmkms's token layer), and the in-process cold-key probe
   (bench/bulk.py ``probe``: searches, unwraps and wrap reads per GenerateDataKey on keys not
   yet loaded, then on the same keys loaded);
3. the server is started (timed: spawn to a healthy /health with every worker listening) and
   one GenerateDataKey on a random key timed after it;
4. GenerateDataKey at c = 32, each request naming a key picked at random among a working set
   (every key for N up to 10,000; else 10,000 picked at random among the N), first unmeasured
   in 5 s chunks until each worker reports (/health) 99% of the working set loaded (its cache,
   ``loaded_keys`` 20,000 a worker, then holds it), then measured; for N over 10,000 then
   each request naming a key among all N (3 s warm-up): mostly cold keys; for N over 10, in
   the same minute, the same load on a 10-key home of its own (served beside from the start,
   idle until then: the reference the working-set row is held to) and on 10 keys of the N;
5. the loaded keys each worker reports (/health) and each process's RSS.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import bulk
from bench.footprint import environment, loaded_keys, store_files, token_objects, worker_rss
from bench.keys import create_keys, prepare_check
from bench.load import Result, on_uvloop, run_cell
from bench.report import fmt_ms, fmt_rate, machine
from bench.servers import ROOT, Hsmkms
from bench.workloads import Fixture, Row, workload

if TYPE_CHECKING:
    from bench.cells import Bench

WORKING_SET = 10_000  # keys of the working-set cell: fits loaded_keys (20,000) in each worker
WARM_TARGET = 0.99  # the working-set cell waits until each worker holds this share of it
WARM_LIMIT = 180.0  # seconds of warming at most
WARM_CHUNK = 5.0  # seconds of load between two looks at /health's loaded_keys
ALL_KEYS_WARMUP = 3.0
THROUGH_SERVER = 1_000  # keys made over HTTP; beyond, the bulk path
REFERENCE = range(10)  # the 10 keys of the reference cell beside the working set's
REFERENCE_LABEL = "the 10-key reference home (its own token and store)"
WORKLOAD = "GenerateDataKey over all keys"  # bench/workloads.py: a random key of fx.key_ids


@dataclass
class Step:
    """One N: how it was built, what it weighs, how it starts and serves."""

    n: int
    built_seconds: float = 0.0
    built_keys: int = 0
    built_by: str = ""
    store_bytes: dict[str, int] = field(default_factory=dict)
    token: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    start_seconds: float = 0.0
    first_request_ms: float = 0.0
    warm_seconds: float = 0.0  # warming until the cache held the working set
    warm_rates: list[float] = field(default_factory=list)  # ops/s of each warming chunk
    warm_loaded: list[int] = field(default_factory=list)  # loaded keys per worker after it
    rows: list[Row] = field(default_factory=list)  # all N (if N > working set), working set
    loaded: list[int] = field(default_factory=list)  # loaded keys per worker, after the cells
    rss_mb: dict[str, float] = field(default_factory=dict)  # process -> RSS after the cells

    @property
    def store_total(self) -> int:
        return sum(self.store_bytes.values())


def run_probe(home: Path, ids: Path, sample: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.bulk", "probe", str(home), "--ids", str(ids),
         "--sample", str(sample)],
        cwd=ROOT, env=environment(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def run(bench: Bench) -> list[Step]:
    opt = bench.opt
    home = bench.work / "wrapped-home"
    ids_file = bench.work / "wrapped-ids"
    settings = {"master_keys": "wrapped"}
    c = max(opt.concurrency)
    seconds = opt.seconds * 2
    short_warmup = 0.5 if opt.quick else ALL_KEYS_WARMUP
    ids: list[str] = []
    steps: list[Step] = []
    # The 10-key reference: a home of its own, served beside each larger N and measured in
    # the same minute (a row of another minute moves by 10-15% on this shared machine).
    ref_home = bench.work / "wrapped-ref-home"
    with Hsmkms(ref_home, bench.work, opt.workers, settings) as making:
        ref_ids = on_uvloop(create_keys(making.endpoint(), len(REFERENCE)))
    for n in sorted(set(opt.key_counts)):
        step = Step(n)
        need = n - len(ids)
        began = time.monotonic()
        if need > 0 and (not ids or need <= THROUGH_SERVER):
            with Hsmkms(home, bench.work, opt.workers, settings) as server:
                # Concurrent first CreateKeys on the fresh home agree on one domain key.
                made = on_uvloop(create_keys(server.endpoint(), need))
            step.built_by = "CreateKey over HTTP"
        elif need > 0:
            done = len(ids_file.read_text().split()) if ids_file.exists() else 0
            bulk.create(home, need, ids_file, processes=2)
            made = ids_file.read_text().split()[done:]
            step.built_by = "bench.bulk (hsmkms.KMS.create_key, 2 processes)"
        else:
            made = []
        step.built_seconds = time.monotonic() - began
        step.built_keys = len(made)
        ids += made
        if step.built_by.startswith("CreateKey"):
            with open(ids_file, "a") as out:
                out.write("".join(k + "\n" for k in made))
        print(f"N={n}: {len(made)} keys made in {step.built_seconds:.1f} s ({step.built_by})",
              flush=True)  # fmt: skip
        step.store_bytes = store_files(home)
        step.token = token_objects(home)
        step.probe = run_probe(home, ids_file, min(2000, len(ids) - 1))
        print(f"N={n}: store {step.store_total / 2**20:.1f} MiB {step.store_bytes}; token "
              f"{step.token}; probe {step.probe}", flush=True)  # fmt: skip
        rng = random.Random(n)
        with contextlib.ExitStack() as running:
            ref: Hsmkms | None = None
            if n > len(REFERENCE):  # started first, idle until its cell
                ref = running.enter_context(Hsmkms(ref_home, bench.work, opt.workers, settings))
            server = running.enter_context(Hsmkms(home, bench.work, opt.workers, settings))
            step.start_seconds = server.started_in
            t0 = time.monotonic()
            on_uvloop(prepare_check(server.endpoint(), rng.choice(ids)))
            step.first_request_ms = (time.monotonic() - t0) * 1e3
            print(f"N={n}: healthy in {step.start_seconds:.2f} s, first GenerateDataKey "
                  f"{step.first_request_ms:.0f} ms", flush=True)  # fmt: skip
            # The working set first, on a server that has loaded nothing yet: the loaded keys
            # it reports are then the working set's.
            working = ids if n <= WORKING_SET else rng.sample(ids, WORKING_SET)
            fx = Fixture(ids[0], [], list(working))
            target = int(len(working) * WARM_TARGET)
            step.warm_seconds, step.warm_rates, step.warm_loaded = warm_until_loaded(
                server, fx, c, opt.workers, target, 4.0 if opt.quick else WARM_LIMIT
            )
            print(
                f"N={n}: warmed in {step.warm_seconds:.0f} s (ops/s per chunk "
                f"{[round(r) for r in step.warm_rates]}), loaded per worker {step.warm_loaded}",
                flush=True,
            )
            held = min(step.warm_loaded, default=0)
            which = f"all {n:,}" if n <= WORKING_SET else f"a working set of {WORKING_SET:,}"
            label = (f"N={n:,}: a random key of {which} per request, the cache holding "
                     f"{held:,} of them in each worker")  # fmt: skip
            step.rows.append(bench.cell(
                WORKLOAD, c, {"hsmkms": (server, fx)}, ("hsmkms",), label=label,
                seconds=seconds, warmup=short_warmup,
            ))  # fmt: skip
            if ref is not None:
                # Beside it in the same minute: the 10-key home, then 10 keys of the N on the
                # same server.
                step.rows.append(bench.cell(
                    WORKLOAD, c, {"hsmkms": (ref, Fixture(ref_ids[0], [], list(ref_ids)))},
                    ("hsmkms",), label=f"N={n:,}: {REFERENCE_LABEL}, same minute",
                    seconds=seconds, warmup=short_warmup,
                ))  # fmt: skip
                fx.key_ids = ids[: len(REFERENCE)]
                step.rows.append(bench.cell(
                    WORKLOAD, c, {"hsmkms": (server, fx)}, ("hsmkms",),
                    label=f"N={n:,}: a random key of 10 of the {n:,} per request, right after",
                    seconds=seconds, warmup=short_warmup,
                ))  # fmt: skip
            if n > WORKING_SET:
                fx.key_ids = list(ids)
                step.rows.insert(0, bench.cell(
                    WORKLOAD, c, {"hsmkms": (server, fx)}, ("hsmkms",),
                    label=f"N={n:,}: a random key of all {n:,} per request "
                          f"({short_warmup:g} s warm-up)",
                    seconds=seconds, warmup=short_warmup,
                ))  # fmt: skip
            step.loaded = loaded_keys(server, opt.workers)
            step.rss_mb = worker_rss(server)
            print(
                f"N={n}: loaded keys per worker {step.loaded}; RSS MiB "
                + ", ".join(f"{k} {v:.0f}" for k, v in step.rss_mb.items()),
                flush=True,
            )
        steps.append(step)
        save(bench.work / "wrapped-steps.json", steps)
    return steps


def warm_until_loaded(
    server: Hsmkms, fx: Fixture, c: int, workers: int, target: int, limit: float
) -> tuple[float, list[float], list[int]]:
    """GenerateDataKey at ``c`` on a random key of ``fx.key_ids`` in chunks of
    :data:`WARM_CHUNK` seconds (unmeasured) until every worker reports at least ``target``
    loaded keys, or ``limit`` seconds: (seconds, ops/s of each chunk, loaded per worker)."""
    began = time.monotonic()
    rates: list[float] = []
    rng = random.Random(3)
    loaded = loaded_keys(server, workers)
    while time.monotonic() - began < limit and not (loaded and min(loaded) >= target):
        r = on_uvloop(
            run_cell(server.endpoint(), workload(WORKLOAD, fx, rng), c, WARM_CHUNK, warmup=0.0)
        )
        rates.append(r.rate)
        loaded = loaded_keys(server, workers)
    return time.monotonic() - began, rates, loaded


def save(path: Path, steps: list[Step]) -> None:
    """The figures so far as JSON (also printed), should a later N fail."""
    out = []
    for s in steps:
        d = {k: v for k, v in s.__dict__.items() if k != "rows"}
        d["rows"] = [{"label": r.workload, **_result(r.results["hsmkms"])} for r in s.rows]
        out.append(d)
    path.write_text(json.dumps(out, indent=1))
    print(f"figures so far: {json.dumps(out)}", flush=True)


def _result(r: Result) -> dict[str, Any]:
    cpu = r.cpu_per_request
    return {
        "rate": r.rate, "p50_ms": (r.percentile(50) or 0) * 1e3,
        "p99_ms": (r.percentile(99) or 0) * 1e3, "errors": sum(r.errors.values()),
        "cpu_us": None if cpu is None else cpu * 1e6,
    }  # fmt: skip


def _cpu(r: Result) -> str:
    cpu = r.cpu_per_request
    return "" if cpu is None else f"{cpu * 1e6:,.0f}"


def _working(step: Step) -> Result:
    """The working-set cell's result (the cache holding it)."""
    row = next(r for r in step.rows if "the cache holding" in r.workload)
    return row.results["hsmkms"]


def _reference(step: Step) -> Result | None:
    """The 10-key reference home's cell in the step's minute, if the step had one."""
    row = next((r for r in step.rows if REFERENCE_LABEL in r.workload), None)
    return None if row is None else row.results["hsmkms"]


def _beside(step: Step) -> Result | None:
    """The 10-key cell right after the working set's, if the step had one."""
    row = next((r for r in step.rows if "right after" in r.workload), None)
    return None if row is None else row.results["hsmkms"]


def markdown(steps: list[Step], opt: Any, load: tuple[float, float]) -> list[str]:
    m = machine()
    from datetime import UTC, datetime

    lines = [
        f"Run of {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit {m['commit']}; load average "
        f"{load[0]:.2f} before, {load[1]:.2f} after (1 min).",
        "",
        f"- machine: {m['cpu']}, {m['memory']}, {m['os']}, Python {m['python']}",
        f"- versions: {m['versions']}",
        f"- hsmkms: `serve --workers {opt.workers}` with `HSMKMS_MASTER_KEYS=wrapped`, embedded "
        "default (SoftHSM2 + SQLite, synchronous=FULL), `loaded_keys` 20,000 (the default)",
        f"- each cell: c = {max(opt.concurrency)}, {opt.seconds * 2:g} s measured after the "
        "warm-up its row names; CPU us/req: the server's CPU time (all processes) per answer, "
        "warm-up included",
        "",
        "| workload (GenerateDataKey AES_256, c = 32) | ops/s | p50 ms | p99 ms | errors "
        "| CPU us/req | vs the 10-key home |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    first = _working(steps[0]).rate if steps else 0.0
    for s in steps:
        ref = _reference(s)
        base = ref.rate if ref is not None else first  # the same minute's, where there is one
        for row in s.rows:
            r = row.results["hsmkms"]
            vs = f"{r.rate / base - 1:+.0%}" if base else ""
            lines.append(
                f"| {row.workload} | {fmt_rate(r.rate)} | {fmt_ms(r.percentile(50))} | "
                f"{fmt_ms(r.percentile(99))} | {sum(r.errors.values())} | {_cpu(r)} | {vs} |"
            )
    lines += [
        "",
        "| N keys | made in (how) | store on disk (sqlite + WAL) | per key | token objects "
        "(listed / files) | healthy after restart | first GenerateDataKey | working set "
        "loaded after | loaded keys per worker at the end | RSS per worker (MiB) |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in steps:
        main = sum(v for k, v in s.store_bytes.items() if k.startswith("hsmkms.sqlite3"))
        rss = ", ".join(f"{v:.0f}" for k, v in s.rss_mb.items() if k.startswith("worker"))
        rate = s.built_keys / s.built_seconds if s.built_seconds else 0
        lines.append(
            f"| {s.n:,} | {s.built_keys:,} in {s.built_seconds:.0f} s ({rate:,.0f}/s, "
            f"{s.built_by}) | {main / 2**20:,.1f} MiB | {main / max(1, s.n):,.0f} B | "
            f"{s.token.get('listed')} / {s.token.get('files')} | {s.start_seconds:.2f} s | "
            f"{s.first_request_ms:.0f} ms | {s.warm_seconds:.0f} s "
            f"({', '.join(f'{r:,.0f}' for r in s.warm_rates) or '-'} ops/s) | "
            f"{', '.join(map(str, s.loaded))} | {rss} |"
        )
    lines += [
        "",
        "In-process cold-key probe (bench/bulk.py `probe`, every other process stopped): "
        "GenerateDataKey through `hsmkms.KMS` on up to 2,000 random keys not yet loaded in "
        "the process, then again on the same keys, loaded:",
        "",
        "| N keys | cold: mean / p50 / p99 us | searches, unwraps, wrap reads per request | "
        "loaded: mean / p50 / p99 us | searches, unwraps, wrap reads per request |",
        "|--:|--:|--:|--:|--:|",
    ]
    for s in steps:
        cells = []
        for name in ("cold", "warm"):
            p = s.probe.get(name, {})
            cells.append(f"{p.get('mean_us', 0):.0f} / {p.get('p50_us', 0):.0f} / "
                         f"{p.get('p99_us', 0):.0f}")  # fmt: skip
            cells.append(f"{p.get('searches_per_request', 0):.2f}, "
                         f"{p.get('unwraps_per_request', 0):.2f}, "
                         f"{p.get('wrap_reads_per_request', 0):.2f}")  # fmt: skip
        lines.append(f"| {s.n:,} | " + " | ".join(cells) + " |")
    lines += ["", *verdicts(steps)]
    return lines


def verdicts(steps: list[Step]) -> list[str]:
    if len(steps) < 2:
        return []
    first = steps[0]
    out = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    base = _working(first).rate
    for s in steps[1:]:
        top = _working(s).rate
        beside, ref = _beside(s), _reference(s)
        if not base:
            continue
        text = f"- N={s.n:,}, GenerateDataKey over a working set of {min(s.n, WORKING_SET):,}: "
        if ref is not None and ref.rate:
            text += (
                f"{fmt_rate(top)}/s against {fmt_rate(ref.rate)}/s on the 10-key home in the "
                f"same minute ({top / ref.rate - 1:+.0%}; within 20%: "
                f"{verdict(top >= 0.8 * ref.rate)}); "
            )
        text += (
            f"against {fmt_rate(base)}/s in the {first.n:,}-key row of the run's first minutes "
            f"({top / base - 1:+.0%})"
        )
        if beside and beside.rate:
            text += (
                f"; against {fmt_rate(beside.rate)}/s over 10 of its keys right after "
                f"({top / beside.rate - 1:+.0%})"
            )
        out.append(text)
    starts = [s.start_seconds for s in steps]
    spread = max(starts) - min(starts)
    out.append(
        "- start-up (healthy after a restart): "
        + ", ".join(f"{s.start_seconds:.2f} s at {s.n:,}" for s in steps)
        + f" (independent of N, taken as a spread under 20% of the smallest or 0.3 s: "
        f"{verdict(spread <= max(0.3, 0.2 * min(starts)))})"
    )
    objects = [s.token.get("listed") for s in steps]
    out.append(
        "- token objects: "
        + ", ".join(f"{s.token.get('listed')} at {s.n:,}" for s in steps)
        + f" (independent of N: {verdict(len(set(objects)) == 1)})"
    )
    probes = [s.probe.get("cold", {}) for s in steps if s.probe.get("cold")]
    if probes:
        searches = max(p.get("searches_per_request", 0) for p in probes)
        unwraps = max(p.get("unwraps_per_request", 0) for p in probes)
        out.append(
            f"- a cold key costs one unwrap, not a search: at most {searches:.2f} searches and "
            f"{unwraps:.2f} unwraps per cold GenerateDataKey in-process "
            f"({verdict(searches == 0 and unwraps <= 1.0)})"
        )
    return out
