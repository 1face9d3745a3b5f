"""The cells of a run: each workload at each concurrency on each server in turn, and the
ceilings measured around them (the load generator's, the HTTP framework's, in-process)."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import ceilings, multiregion, stages
from bench.load import Result, on_uvloop, run_cell
from bench.report import DOC, fmt_rate, print_row
from bench.servers import Hsmkms, Moto, Server, Trivial, TrivialAsgi
from bench.workloads import (
    GET_PARAMETERS,
    IMPORT_CONCURRENCY,
    MULTI_REGION_GROUP,
    MULTI_REGION_WORKLOADS,
    PAIR_SPECS,
    PEERS,
    RSA_SPECS,
    Fixture,
    Row,
    asymmetric_workloads,
    import_workloads,
    main_workloads,
    multi_region_workloads,
    post_quantum_workloads,
    prepare,
    rsa_span,
    signed_for,
    workload,
)
from hsmkms.specs import DataKeyPairSpec, Family


@dataclass
class Options:
    seconds: float = 3.0
    warmup: float = 0.5
    concurrency: tuple[int, ...] = (1, 8, 32)
    workers: int = 2
    pool_size: int = 16
    only: str | None = None
    quick: bool = False
    keys: int = 0  # the largest of key_counts (0: no key-count run)
    key_counts: tuple[int, ...] = ()  # --keys: one N (token mode), or several (wrapped mode)
    master_keys: str = "token"  # --master-keys: the mode of the key-count run's server
    with_ceilings: bool = True  # the generator's, the framework's, the in-process ones, the stages
    output: Path | None = DOC


class Bench:
    """One run's cells, in order, and what the servers logged (``notes``)."""

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
            if name in fx.missing:
                row.unavailable[peer] = fx.missing[name]
                continue
            if before and peer in before:
                before[peer]()
            rng = random.Random(7)
            cpu = server.cpu_seconds()
            seconds = kwargs.get("seconds", self.opt.seconds)
            if peer != "hsmkms":
                seconds = kwargs.get("peer_seconds", seconds)
            row.results[peer] = on_uvloop(
                run_cell(
                    signed_for(name, server.endpoint()), workload(name, fx, rng),
                    concurrency, seconds,
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
        r = on_uvloop(
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
                    f"~{out[c][1]:.0f} us CPU/request",
                    flush=True,
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
            rsa = spec.family is Family.RSA
            span = seconds * (2 * rsa_span(spec, self.opt.quick) if rsa else 1)
            one = ceilings.keygen(spec, span, 1)
            many = ceilings.keygen(spec, span, cores) if not self.opt.quick else 0.0
            pairs[spec] = (one, many)
            print(
                f"in-process ceiling  key pair {spec:<22} {fmt_rate(one):>8}/s in 1 process, "
                f"{fmt_rate(many):>8}/s in {cores}",
                flush=True,
            )
        # The token steps of Sign and GenerateMac (issue 14), one process and one per core.
        sign = ceilings.token_sign(self.work / "sign-home", seconds, 1 if self.opt.quick else cores)
        for name, (one, many) in sign.items():
            print(
                f"in-process ceiling  {name:<34} {fmt_rate(one):>8}/s in 1 process"
                + (f", {fmt_rate(many):>8}/s in {cores}" if many else ""),
                flush=True,
            )
        # Post-quantum steps in cryptography (issue 15), one process and one per core.
        pq = ceilings.post_quantum(seconds, 1 if self.opt.quick else cores)
        for name, (one, many) in pq.items():
            print(
                f"in-process ceiling  {name:<44} {fmt_rate(one):>8}/s in 1 process"
                + (f", {fmt_rate(many):>8}/s in {cores}" if many else ""),
                flush=True,
            )
        # The token steps of the import operations (issue 16), one process and one per core.
        imports = ceilings.token_import(
            self.work / "import-home", seconds, 1 if self.opt.quick else cores
        )
        for name, (one, many) in imports.items():
            print(
                f"in-process ceiling  {name:<44} {fmt_rate(one):>8}/s in 1 process"
                + (f", {fmt_rate(many):>8}/s in {cores}" if many else ""),
                flush=True,
            )
        return {
            "gcm": gcm, "pairs": pairs, "cores": cores, "sign": sign, "pq": pq,
            "imports": imports,
        }  # fmt: skip

    def stages(self) -> dict[str, dict[str, float]]:
        """Where a request's CPU goes, stage by stage, in-process (bench/stages.py)."""
        out = stages.measure(self.work / "stages-home", 0.3 if self.opt.quick else 1.0)
        for operation, parts in out.items():
            print(
                f"in-process stages of {operation}: "
                + ", ".join(f"{k.strip()} {v:.0f} us" for k, v in parts.items()),
                flush=True,
            )
        return out

    # -- the main comparison --------------------------------------------------------------
    def picked(self, name: str) -> bool:
        """Whether ``--only`` (a part of the name, in any case; for the issue 17 cells, of
        their group's name too: ``--only region``) selects workload ``name``."""
        if name in MULTI_REGION_WORKLOADS:
            name = f"{name} [{MULTI_REGION_GROUP}]"
        return not self.opt.only or self.opt.only.lower() in name.lower()

    def compare(self) -> None:
        opt = self.opt
        home = self.work / "hsmkms-home"
        settings = {"rsa_pool_size": str(opt.pool_size)}
        names = [w for w in main_workloads() if self.picked(w)]
        # Asymmetric and HMAC keys (issue 14): after the data key cells, before the RSA pair
        # cells (whose refill threads would otherwise still be generating during them).
        names += [w for w in asymmetric_workloads() if self.picked(w)]
        # Post-quantum KMS keys (issue 15), likewise before the RSA pair cells.
        names += [w for w in post_quantum_workloads() if self.picked(w)]
        # Imported key material (issue 16): after the scaling cells too, since every
        # GetParametersForImport leaves an RSA wrapping key on the token; c=1 and 8 only.
        imports = [w for w in import_workloads() if self.picked(w)]
        import_c = [c for c in opt.concurrency if c in IMPORT_CONCURRENCY] or [min(opt.concurrency)]
        # Multi-Region keys and last use (issue 17): after the scaling cells, before the import
        # cells, each new cell right after the one it is set beside, at every concurrency.
        regional = [w for w in multi_region_workloads() if self.picked(w)]
        rsa = [s for s in RSA_SPECS if self.picked(f"GenerateDataKeyPair {s}")]
        scaling = not opt.only or opt.only in "GenerateDataKey"
        if not (names or imports or regional or rsa or scaling):
            return  # e.g. --only nodes: no cell here, so neither server is started
        with Hsmkms(home, self.work, opt.workers, settings) as ours, Moto(self.work) as moto:
            print(
                f"hsmkms ready in {ours.started_in:.1f} s ({opt.workers} workers); "
                f"moto ready in {moto.started_in:.1f} s",
                flush=True,
            )

            def made(server: Server) -> Fixture:
                fx = on_uvloop(prepare(server.endpoint(), asymmetric=True, imports=bool(imports)))
                if regional:
                    on_uvloop(multiregion.prepare(server.endpoint(), fx))
                return fx

            fixtures = {
                "hsmkms": (ours, made(ours)),
                "moto": (moto, made(moto)),
            }  # type: dict[str, tuple[Server, Fixture]]
            for peer, (_, fx) in fixtures.items():
                for name, why in fx.missing.items():
                    print(f"{peer} cannot run {name}: {why}", flush=True)
            self.wait_for_pool(ours)
            flip = False
            for name in names:
                for c in opt.concurrency:
                    order = PEERS[::-1] if flip else PEERS
                    flip = not flip
                    self.cell(name, c, fixtures, order)
            if scaling:
                self.scaling(fixtures["hsmkms"])
            for c in opt.concurrency:
                for name in regional:
                    order = PEERS[::-1] if flip else PEERS
                    flip = not flip
                    self.cell(name, c, fixtures, order)
            for name in imports:
                # An RSA-2048 key made on the token per call: ~7/s a process on SoftHSM2, and
                # the time of each varies widely, so a window twice as long (as RSA_2048's).
                span = 1 if name != GET_PARAMETERS or opt.quick else 2
                for c in import_c:
                    order = PEERS[::-1] if flip else PEERS
                    flip = not flip
                    self.cell(name, c, fixtures, order, seconds=span * opt.seconds)
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
            fx = on_uvloop(prepare(one.endpoint(), blobs=1))
            for _ in range(2):
                self.cell(
                    "GenerateDataKey",
                    c,
                    {"hsmkms": (one, fx)},
                    ("hsmkms",),
                    label="GenerateDataKey (--workers 1)",
                )
                self.cell(
                    "GenerateDataKey",
                    c,
                    {"hsmkms": two},
                    ("hsmkms",),
                    label=f"GenerateDataKey (--workers {self.opt.workers})",
                )

    def wait_for_pool(self, server: Hsmkms, timeout: float = 120.0) -> None:
        """Until every worker that answers /health reports a full key pair pool."""
        if self.opt.pool_size <= 0:
            return
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            stocks = []
            for _ in range(4 * self.opt.workers):  # new connections: reach every worker
                status, body = server.http_get("/health")
                stocks.append(json.loads(body).get("keypair_pool", {}))
            if all(s and min(s.values()) >= self.opt.pool_size for s in stocks):
                print(f"key pair pools full after {time.monotonic() - began:.1f} s", flush=True)
                return
            time.sleep(0.5)
        print("key pair pools not full: going on", flush=True)

    def rsa_cells(
        self, spec: DataKeyPairSpec, ours: Hsmkms, fixtures: dict[str, tuple[Server, Fixture]]
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
            on_uvloop(
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
