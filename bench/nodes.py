"""Several nodes on PostgreSQL (issue 18): hsmkms against itself, one store backend and one
node count against another, in the same minutes on the same machine (moto, the peer elsewhere,
has no store or nodes to compare).

Three set-ups, each node ``serve --workers 1``, rsa_pool_size 0, everything else default:

- one node on SQLite (the embedded default): the reference;
- one node on PostgreSQL: its own home and token, a database of its own;
- two nodes on PostgreSQL: node A on its own home; node B on another home with A's token
  (``softhsm_conf``), PIN file and credentials file, as docs/deployment.md and
  tests/resilience/test_nodes.py set a second node up; both on one other database. The load
  generator's connections alternate between the two nodes' ports (half on each).

One PostgreSQL cluster serves both PostgreSQL set-ups (tests/postgres.py: initdb on loopback,
fsync on, run as the ``postgres`` user under root). Every server runs for the whole group,
idle outside its own cells. The cells: GenerateDataKey, Encrypt 64 B and Decrypt (over 64
blobs) at c=32, the data plane, which reads key records through each process's cache; then
two writes at c=8: TagResource (one store transaction per request, on a random key of 128,
tag ``bench`` set to a new value each time) and CreateKey (a store transaction and an AES key
made on the token). Each workload runs on the three set-ups in turn, the order reversed in
the next round. CPU per request: hsmkms's (every node's processes), PostgreSQL's (the
cluster's processes, postmaster and backends) and the load generator's (this process), each
over the cell, warm-up included, divided by the answers.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from bench.keys import create_keys
from bench.load import TARGET_PREFIX, Connection, Endpoint, Result, Workload, on_uvloop, run_cell
from bench.report import fmt_cpu, fmt_errors, fmt_ms, fmt_rate
from bench.servers import HOST, ROOT, Hsmkms
from bench.workloads import Fixture, prepare, workload

if TYPE_CHECKING:
    from bench.cells import Bench

GROUP = "two nodes on PostgreSQL (issue 18)"  # what --only searches: --only nodes
SQLITE = "1 node, SQLite"
POSTGRES = "1 node, PostgreSQL"
TWO_NODES = "2 nodes, PostgreSQL"
SETUPS = (SQLITE, POSTGRES, TWO_NODES)
TAG = "TagResource"
CREATE = "CreateKey"
READS = ("GenerateDataKey", "Encrypt 64 B", "Decrypt")
WRITES = (TAG, CREATE)
READ_C = 32
WRITE_C = 8
TAGGED_KEYS = 128  # TagResource picks one of these per request


class Node(Hsmkms):
    """A node of a run: on PostgreSQL when ``store`` is given; sharing ``first``'s token, PIN
    and credentials when that is given (a second node)."""

    def __init__(
        self, home: Path, log_dir: Path, store: str | None = None, first: Path | None = None
    ) -> None:
        settings = {"rsa_pool_size": "0"}
        if store:
            settings["store"] = store
        if first is not None:
            settings.update(
                softhsm_conf=str(first / "softhsm2.conf"),
                pin_file=str(first / "user.pin"),
                credentials_file=str(first / "credentials"),
            )
        super().__init__(home, log_dir, 1, settings)
        self.first = first or home

    @property
    def credentials(self) -> Path:
        return self.first / "credentials"


@dataclass
class Setup:
    name: str
    nodes: list[Node]
    fixture: Fixture
    postgres: bool

    def endpoints(self) -> list[Endpoint]:
        return [n.endpoint() for n in self.nodes]

    def cpu_seconds(self) -> float:
        return sum(n.cpu_seconds() for n in self.nodes)


@dataclass
class NodeRow:
    """One workload on one set-up, every round's cell merged (``rounds``: each alone)."""

    workload: str
    concurrency: int
    setup: str
    rounds: list[Result] = field(default_factory=list)
    postgres_cpu: float | None = None  # seconds over every round, when measured
    generator_cpu: float = 0.0  # seconds over every round

    @property
    def result(self) -> Result:
        return merged(self.rounds)

    def per_answer(self, seconds: float | None) -> str:
        answered = sum(r.answered for r in self.rounds)
        return "-" if seconds is None or not answered else f"{seconds / answered * 1e6:,.0f}"


def merged(results: list[Result]) -> Result:
    """Several cells as one: latencies and errors together, seconds and CPU summed."""
    out = Result(seconds=sum(r.seconds for r in results), errors=Counter())
    for r in results:
        out.latencies += r.latencies
        out.errors.update(r.errors)
        out.answered += r.answered
        if r.server_cpu is not None:
            out.server_cpu = (out.server_cpu or 0.0) + r.server_cpu
    return out


def _postgres_module() -> ModuleType:
    """tests/postgres.py, the tests' throwaway cluster (not a package: loaded by path)."""
    path = ROOT / "tests" / "postgres.py"
    spec = importlib.util.spec_from_file_location("hsmkms_tests_postgres", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cluster_cpu(datadir: Path | None) -> float | None:
    """CPU seconds (user + system) used so far by the cluster's processes: the postmaster
    (first line of postmaster.pid) and its children. None for a server elsewhere."""
    import psutil

    if datadir is None:
        return None
    try:
        pid = int((datadir / "postmaster.pid").read_text().split()[0])
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def node_workload(name: str, fx: Fixture, rng: random.Random) -> Workload:
    """The group's writes; the data plane's workloads are bench.workloads'."""
    if name == TAG:
        counter = itertools.count()
        keys = fx.key_ids

        def tag() -> tuple[str, bytes]:
            params = {"KeyId": rng.choice(keys),
                      "Tags": [{"TagKey": "bench", "TagValue": str(next(counter))}]}  # fmt: skip
            return TARGET_PREFIX + TAG, json.dumps(params, separators=(",", ":")).encode()

        return tag
    if name == CREATE:
        req = (TARGET_PREFIX + CREATE, b'{"Description":"nodes benchmark"}')
        return lambda: req
    return workload(name, fx, rng)


async def _touch(endpoint: Endpoint, fx: Fixture) -> None:
    """Each workload once through a node (its first use of the key: a token search there)."""
    conn = Connection(endpoint)
    try:
        for name in (*READS, TAG):
            target, body = node_workload(name, fx, random.Random(1))()
            await conn.call(target.removeprefix(TARGET_PREFIX), json.loads(body))
    finally:
        conn.close()


def _fixture(nodes: list[Node]) -> Fixture:
    """The key and 64 blobs, and TAGGED_KEYS keys (the first the main one), made through the
    first node; every workload tried once through every node."""
    fx = on_uvloop(prepare(nodes[0].endpoint()))
    fx.key_ids += on_uvloop(create_keys(nodes[0].endpoint(), TAGGED_KEYS - 1))
    for node in nodes:
        on_uvloop(_touch(node.endpoint(), fx))
    return fx


@contextmanager
def setups(work: Path, postgres: ModuleType) -> Iterator[tuple[list[Setup], Path | None]]:
    """The three set-ups, running, with the PostgreSQL cluster's data directory."""
    with ExitStack() as stack:
        began = time.monotonic()
        cluster = stack.enter_context(postgres.cluster())
        solo_db, pair_db = cluster.database(), cluster.database()
        print(f"PostgreSQL ready in {time.monotonic() - began:.1f} s", flush=True)

        def started(node: Node) -> Node:
            stack.enter_context(node)
            return node

        sqlite = started(Node(work / "nodes-sqlite", work))
        solo = started(Node(work / "nodes-pg-solo", work, solo_db))
        a = started(Node(work / "nodes-pg-a", work, pair_db))
        b = started(Node(work / "nodes-pg-b", work, pair_db, first=a.home))
        print(
            "nodes ready in "
            + ", ".join(f"{n.home.name} {n.started_in:.1f} s" for n in (sqlite, solo, a, b)),
            flush=True,
        )
        made = [
            Setup(SQLITE, [sqlite], _fixture([sqlite]), False),
            Setup(POSTGRES, [solo], _fixture([solo]), True),
            Setup(TWO_NODES, [a, b], _fixture([a, b]), True),
        ]
        yield made, cluster.datadir


def run(bench: Bench) -> list[NodeRow]:
    """The group's cells; their rows (also printed as they run)."""
    opt = bench.opt
    rounds = 1 if opt.quick else 2
    rows: dict[tuple[str, str], NodeRow] = {}
    postgres = _postgres_module()
    try:
        postgres._bin("initdb")
    except RuntimeError as exc:
        print(f"the nodes cells are skipped: {exc}", flush=True)
        return []
    with setups(bench.work, postgres) as (made, datadir):
        cells = [(w, READ_C) for w in READS] + [(w, WRITE_C) for w in WRITES]
        for n in range(rounds):
            for k, (name, c) in enumerate(cells):
                order = made if (n + k) % 2 == 0 else made[::-1]
                for setup in order:
                    row = rows.setdefault((name, setup.name), NodeRow(name, c, setup.name))
                    r, pg, gen = _cell(setup, name, c, opt.seconds, opt.warmup, datadir)
                    row.rounds.append(r)
                    if pg is not None and setup.postgres:
                        row.postgres_cpu = (row.postgres_cpu or 0.0) + pg
                    row.generator_cpu += gen
                    pg_text = f"{pg / r.answered * 1e6:,.0f}" if pg and r.answered else "-"
                    print(
                        f"round {n + 1} {name:<16} c={c:<3} {setup.name:<19} "
                        f"{fmt_rate(r.rate):>7}/s p50 {fmt_ms(r.percentile(50)):>6} p99 "
                        f"{fmt_ms(r.percentile(99)):>6} ms cpu {fmt_cpu(r):>5} us, "
                        f"PostgreSQL {pg_text:>5} us, generator "
                        f"{gen / max(1, r.answered) * 1e6:,.0f} us; err {fmt_errors(r)}",
                        flush=True,
                    )
        nodes = [n for s in made for n in s.nodes]
        warnings = []
        for node in nodes:
            log = node.log_path.read_text(errors="replace").splitlines()
            warnings += [f"{node.home.name}: {line}" for line in log
                         if line.startswith(("WARNING", "ERROR"))]  # fmt: skip
        bench.notes["nodes_warnings"] = warnings
        for line in warnings[:5]:
            print(f"hsmkms log: {line}", flush=True)
    return [rows[(name, s)] for name, _ in cells for s in SETUPS if (name, s) in rows]


def _cell(
    setup: Setup, name: str, c: int, seconds: float, warmup: float, datadir: Path | None
) -> tuple[Result, float | None, float]:
    """One cell: its result (with hsmkms's CPU), PostgreSQL's CPU and the generator's."""
    cpu, pg, gen = setup.cpu_seconds(), cluster_cpu(datadir), time.process_time()
    r = on_uvloop(
        run_cell(setup.endpoints(), node_workload(name, setup.fixture, random.Random(7)),
                 c, seconds, warmup=warmup)
    )  # fmt: skip
    gen = time.process_time() - gen
    r.server_cpu = setup.cpu_seconds() - cpu
    after = cluster_cpu(datadir)
    return r, (after - pg if after is not None and pg is not None else None), gen


def markdown(rows: list[NodeRow]) -> list[str]:
    lines = [
        "| workload | c | set-up | ops/s (each round) | p50 ms | p99 ms | errors | "
        f"hsmkms CPU us/req | PostgreSQL CPU us/req | generator CPU us/req | vs {SQLITE} |",
        "|---|--:|---|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    base = {r.workload: r.result.rate for r in rows if r.setup == SQLITE}
    for row in rows:
        r = row.result
        each = " / ".join(fmt_rate(x.rate) for x in row.rounds)
        ref = base.get(row.workload)
        vs = "" if row.setup == SQLITE or not ref else f"{r.rate / ref - 1:+.0%}"
        lines.append(
            f"| {row.workload} | {row.concurrency} | {row.setup} | {fmt_rate(r.rate)} "
            f"({each}) | {fmt_ms(r.percentile(50))} | {fmt_ms(r.percentile(99))} | "
            f"{fmt_errors(r)} | {fmt_cpu(r)} | {row.per_answer(row.postgres_cpu)} | "
            f"{row.per_answer(row.generator_cpu)} | {vs} |"
        )
    return lines


def summary(rows: list[NodeRow]) -> list[str]:
    """One line per workload: each PostgreSQL set-up against one node on SQLite, ops/s and
    the CPU per request of hsmkms plus PostgreSQL."""
    out = []
    by = {(r.workload, r.setup): r for r in rows}
    for name in dict.fromkeys(r.workload for r in rows):
        ref = by.get((name, SQLITE))
        if ref is None or not ref.result.rate:
            continue
        parts = []
        for setup in (POSTGRES, TWO_NODES):
            row = by.get((name, setup))
            if row is None:
                continue
            parts.append(
                f"{setup} {fmt_rate(row.result.rate)}/s "
                f"({row.result.rate / ref.result.rate - 1:+.0%}), "
                f"{_total_cpu(row)} us CPU (hsmkms + PostgreSQL)"
            )
        out.append(
            f"- {name} at c={ref.concurrency}: {SQLITE} {fmt_rate(ref.result.rate)}/s, "
            f"{_total_cpu(ref)} us CPU; " + "; ".join(parts)
        )
    return out


def _total_cpu(row: NodeRow) -> str:
    r = row.result
    if r.server_cpu is None or not r.answered:
        return "-"
    return f"{(r.server_cpu + (row.postgres_cpu or 0.0)) / r.answered * 1e6:,.0f}"


def describe(opt_seconds: float, opt_warmup: float, quick: bool) -> str:
    """The paragraph above the table."""
    rounds = 1 if quick else 2
    return (
        f"Several nodes on PostgreSQL (issue 18): hsmkms against itself (moto has no store "
        f"backend or nodes to set beside these). Each node `serve --workers 1` on {HOST}, "
        "rsa_pool_size 0; one node on SQLite (the reference), one on PostgreSQL (a database "
        "of its own), two on PostgreSQL sharing one SoftHSM2 token, PIN and credentials file "
        "(the second node's softhsm_conf, pin_file and credentials_file name the first's "
        "home) and one database, the load generator's connections alternating between the "
        "two ports. One local PostgreSQL cluster (tests/postgres.py, fsync on) for both. "
        f"Data plane at c={READ_C}, writes at c={WRITE_C} (TagResource on a random key of "
        f"{TAGGED_KEYS}, a new tag value each time; CreateKey); each workload on the three "
        f"set-ups in turn, {rounds} round{'s' if rounds > 1 else ''} with the order reversed, "
        f"{opt_warmup:g} s warm-up and {opt_seconds:g} s measured per cell. CPU us/req: "
        "hsmkms's (all nodes' processes), PostgreSQL's (the cluster's processes) and the load "
        "generator's, over the cell with its warm-up, per answer. On 2 cores the two nodes, "
        "PostgreSQL and the load generator share the same cores: the aggregate is what one "
        "machine gives, not what two machines would."
    )


def picked(only: str | None) -> bool:
    """Whether ``--only`` (a part of the group's name, in any case) selects the group."""
    return not only or only.lower() in GROUP.lower()
