"""Two commits of hsmkms side by side: one workload on a server of each, cell after cell in
turn, in the same minutes on the same machine. For what one change costs when it is smaller
than the drift between two runs (cells move by 10-15% between runs on this shared machine): the
figures of an earlier run in docs/benchmarks.md cannot tell such a change from the neighbours.

    python -m bench.ab 3bbf210 96dfc80         # GenerateDataKey at c=1, 8, 32, two rounds
    python -m bench.ab BEFORE AFTER --workload Decrypt --rounds 3 --seconds 3
    python -m bench.ab BEFORE AFTER --keys 2000 --concurrency 32 --warmup 9
                                               # GenerateDataKey, each request a random one
                                               # of 2,000 keys (created through each server)

Each commit's hsmkms/ is exported with ``git archive`` into a temporary directory (the work tree
is not touched) and served from there by this interpreter: ``serve --workers 2`` on a fresh
embedded home, rsa_pool_size 0 (no refill threads). The load generator and the workloads are
this checkout's. Each round runs every concurrency, the two commits in turn, and the next round
puts the other first. Prints only.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.keys import create_keys
from bench.load import Result, on_uvloop, run_cell
from bench.report import fmt_cpu, fmt_ms, fmt_rate
from bench.servers import ROOT, Hsmkms
from bench.workloads import Fixture, prepare, workload


def export(rev: str, into: Path) -> Path:
    """``rev``'s hsmkms/ under ``into`` (a directory to run ``python -m hsmkms`` from)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "hsmkms"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _cells(results: list[Result]) -> tuple[float, str, str]:
    """(ops/s over all rounds, the same with each round's in brackets, server CPU us per answer
    over all rounds with each round's)."""
    seconds = sum(r.seconds for r in results)
    rate = sum(r.ok for r in results) / seconds if seconds else 0.0
    rates = f"{fmt_rate(rate)} ({' / '.join(fmt_rate(r.rate) for r in results)})"
    answered = sum(r.answered for r in results)
    cpu = sum(r.server_cpu or 0.0 for r in results)
    cpus = f"{cpu / answered * 1e6:,.0f} ({' / '.join(fmt_cpu(r) for r in results)})"
    return rate, rates, cpus if answered else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("before", help="a commit (anything git archive takes)")
    p.add_argument("after", help="another commit")
    p.add_argument("--workload", default="GenerateDataKey", help="a workload of the main table")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated (default 1,8,32)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per cell")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every cell (default 2)")
    p.add_argument("--workers", type=int, default=2, help="hsmkms worker processes (default 2)")
    p.add_argument(
        "--keys", type=int, default=0,
        help="instead: GenerateDataKey over this many keys, each request a random one",
    )  # fmt: skip
    a = p.parse_args(argv)
    revs = (a.before, a.after)
    concurrency = [int(c) for c in a.concurrency.split(",") if c]
    name = "GenerateDataKey over all keys" if a.keys else a.workload
    label = f"GenerateDataKey, a random key of {a.keys}" if a.keys else a.workload
    results: dict[tuple[str, int], list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="hsmkms-ab-") as tmp:
        work = Path(tmp)
        servers: dict[str, tuple[Hsmkms, Fixture]] = {}
        try:
            for i, rev in enumerate(revs):
                server = Hsmkms(work / f"home-{i}", work, a.workers, {"rsa_pool_size": "0"})
                server.cwd = export(rev, work / f"tree-{i}")
                server.start()
                fx = on_uvloop(prepare(server.endpoint()))
                if a.keys > 1:
                    fx.key_ids += on_uvloop(create_keys(server.endpoint(), a.keys - 1))
                servers[rev] = (server, fx)
            print(f"{label}: {revs[0]} and {revs[1]} in turn, {a.rounds} rounds", flush=True)
            for n in range(a.rounds):
                for k, c in enumerate(concurrency):
                    for rev in revs if (n + k) % 2 == 0 else revs[::-1]:
                        server, fx = servers[rev]
                        cpu = server.cpu_seconds()
                        r = on_uvloop(
                            run_cell(server.endpoint(), workload(name, fx, random.Random(7)),
                                     c, a.seconds, warmup=a.warmup)
                        )  # fmt: skip
                        r.server_cpu = server.cpu_seconds() - cpu
                        results.setdefault((rev, c), []).append(r)
                        print(
                            f"round {n + 1} c={c:<3} {rev:<12} {fmt_rate(r.rate):>7}/s p50 "
                            f"{fmt_ms(r.percentile(50)):>5} p99 {fmt_ms(r.percentile(99)):>5} ms "
                            f"cpu {fmt_cpu(r):>5} us err {sum(r.errors.values())}",
                            flush=True,
                        )
        finally:
            for server, _ in servers.values():
                server.stop()
    print(
        f"\n| workload | c | {revs[0]} ops/s (each round) | CPU us/req | {revs[1]} ops/s "
        "(each round) | CPU us/req | after/before |\n|---|--:|--:|--:|--:|--:|--:|"
    )
    for c in concurrency:
        (r0, rates0, cpu0), (r1, rates1, cpu1) = (_cells(results[(rev, c)]) for rev in revs)
        change = f"{r1 / r0 - 1:+.1%}" if r0 else "-"
        print(f"| {label} | {c} | {rates0} | {cpu0} | {rates1} | {cpu1} | {change} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
