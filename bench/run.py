"""One benchmark run: hsmkms and moto side by side, the load generator's own ceiling, the
in-process ceilings, a table on stdout and in docs/benchmarks.md.

    scripts/bench                  # the full run (~13 minutes on 2 cores)
    scripts/bench --quick          # a smoke test of every cell (~2 minutes), writes nothing
    scripts/bench --keys 10000     # cost in the number of keys (~4.5 minutes, most of it
                                   # creating 10,000 token keys)
    scripts/bench --master-keys wrapped --keys 10,10000,100000,1000000
                                   # the same in the wrapped mode (issue 22), one home grown
                                   # N by N, the keys past 1,000 made by bench/bulk.py
                                   # (~25 minutes, ~10 of them making a million keys)
    scripts/bench --only import    # the import cells (issue 16) after the ceilings and the
                                   # stages (~4.5 minutes), printed only
    scripts/bench --only region --no-ceilings
                                   # the multi-Region and last-use cells (issue 17) alone
                                   # (~1.5 minutes), printed only
    scripts/bench --only nodes --no-ceilings
                                   # one node on SQLite, one on PostgreSQL, two on
                                   # PostgreSQL (issue 18; ~2 minutes), printed only

Cells alternate between the two servers (hsmkms first in one cell, moto first in the next),
so a burst of noise from elsewhere on the machine lands on both.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import keys, multiregion, nodes, wrapped_keys
from bench.cells import Bench, Options
from bench.report import (
    DOC,
    asymmetric_summary,
    asymmetric_targets,
    fmt_rate,
    import_summary,
    is_asymmetric,
    is_import,
    is_post_quantum,
    machine,
    post_quantum_summary,
    post_quantum_targets,
    rows_markdown,
    stages_markdown,
    targets,
    write_doc,
)
from bench.workloads import POST_QUANTUM_BY_NAME


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
        return [
            *common,
            f"- each cell: {opt.warmup:g} s warm-up, then {2 * opt.seconds:g} s "
            "measured; CPU us/req: the server's CPU time (all processes) per answer",
        ]
    common[-1] += f"rsa_pool_size {opt.pool_size}; moto: `moto_server` (one process)"
    return [
        *common,
        f"- each cell: {opt.warmup:g} s warm-up, then {opt.seconds:g} s measured (RSA past "
        "the pool: RSA_2048 twice that, RSA_3072 four times, RSA_4096 eight times, moto's "
        "turns not lengthened, each hsmkms turn after draining the pools), SigV4-signed "
        "requests on keep-alive connections, c = connections; CPU us/req: the server's CPU "
        "time (all processes) per answer",
    ]


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, help="measured seconds per cell (default 3)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 0.5)")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated (default 1,8,32)")
    p.add_argument("--workers", type=int, default=2, help="hsmkms worker processes (default 2)")
    p.add_argument(
        "--pool-size", type=int, default=16, help="hsmkms rsa_pool_size for the run (default 16)"
    )
    p.add_argument(
        "--only",
        help="run only workloads whose name contains this, in any case (e.g. import: the "
        "issue 16 cells); writes nothing",
    )
    p.add_argument("--quick", action="store_true", help="a short smoke test; writes nothing")
    p.add_argument(
        "--no-ceilings",
        action="store_true",
        help="skip the load generator's, the HTTP framework's and the in-process ceilings and "
        "the stages: the cells only (e.g. with --only); writes nothing",
    )
    p.add_argument(
        "--keys",
        default="",
        help="instead: GenerateDataKey with 10 keys vs this many, and start-up time; with "
        "--master-keys wrapped a comma-separated list of N (e.g. 10,10000,100000,1000000)",
    )
    p.add_argument(
        "--master-keys",
        choices=("token", "wrapped"),
        default="token",
        help="the master-key mode of the --keys run's server (HSMKMS_MASTER_KEYS; default token)",
    )
    p.add_argument("--output", type=Path, default=DOC, help="markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only")
    a = p.parse_args(argv)
    quick = bool(a.quick)
    counts = tuple(int(k) for k in str(a.keys).split(",") if k.strip())
    if len(counts) > 1 and a.master_keys != "wrapped":
        p.error("several --keys values go with --master-keys wrapped only")
    if any(k < 10 for k in counts):
        p.error("--keys: at least 10 keys")
    return Options(
        seconds=a.seconds if a.seconds is not None else (0.4 if quick else 3.0),
        warmup=a.warmup if a.warmup is not None else (0.2 if quick else 0.5),
        concurrency=tuple(int(c) for c in a.concurrency.split(",") if c),
        workers=a.workers,
        pool_size=a.pool_size,
        only=a.only,
        quick=quick,
        keys=max(counts, default=0),
        key_counts=counts,
        master_keys=a.master_keys,
        with_ceilings=not a.no_ceilings,
        output=None if (a.no_write or quick or a.only or a.no_ceilings) else a.output,
    )


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hsmkms-bench-") as tmp:
        bench = Bench(opt, Path(tmp))
        if opt.keys and opt.master_keys == "wrapped":
            steps = wrapped_keys.run(bench)
            body = wrapped_keys.markdown(steps, opt, (load_before, os.getloadavg()[0]))
            print("\n".join(body), flush=True)
            if opt.output:
                write_doc(opt.output, "keys-wrapped", "\n".join(body))
            return 0
        if opt.keys:
            result = keys.key_count(bench)
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
                f"- store (hsmkms.sqlite3 + WAL) {result['store_bytes'] / 2**20:.1f} MiB; "
                f"token objects {result['token_objects']['listed']} (a PKCS#11 listing; "
                f"{result['token_objects']['files']} SoftHSM2 object files); worker RSS after "
                "the cells "
                + ", ".join(
                    f"{v:.0f} MiB" for k, v in result["rss_mb"].items() if k.startswith("worker")
                ),
            ]
            if opt.output:
                write_doc(opt.output, "keys", "\n".join(body))
            return 0
        gen: dict[int, tuple[float, float]] = {}
        floor: dict[int, tuple[float, float]] = {}
        ceil: dict[str, Any] = {}
        parts: dict[str, dict[str, float]] = {}
        if opt.with_ceilings:
            gen = bench.generator_ceiling()
            floor = bench.framework_ceiling()
            ceil = bench.ceilings()
            parts = bench.stages()
        ceil["generator_us"] = gen[max(gen)][1] if gen else None
        bench.compare()
        node_rows = nodes.run(bench) if nodes.picked(opt.only) else []
        load_after = os.getloadavg()[0]
        verdicts = targets(bench.rows, ceil)
        asym_verdicts = asymmetric_targets(bench.rows, ceil)
        pq_verdicts = post_quantum_targets(bench.rows, ceil)
        print("\n".join(verdicts + asym_verdicts + pq_verdicts), flush=True)
        asym_rows = [r for r in bench.rows if is_asymmetric(r)]
        summary = asymmetric_summary(bench.rows, ceil)
        pq_rows = [r for r in bench.rows if is_post_quantum(r)]
        pq_summary = post_quantum_summary(bench.rows, ceil)
        imp_rows = [r for r in bench.rows if is_import(r)]
        imp_summary = import_summary(bench.rows, ceil)
        mr_rows = [r for r in bench.rows if multiregion.is_multi_region(r)]
        mr_summary = multiregion.summary(bench.rows)
        print("\n".join(summary + pq_summary + imp_summary + mr_summary), flush=True)
        if imp_rows:  # the issue 16 table, for a run that writes nothing (--only import)
            print("\n".join(rows_markdown(imp_rows)), flush=True)
        if mr_rows:  # the issue 17 table, likewise (--only region)
            print("\n".join(rows_markdown(mr_rows)), flush=True)
        if node_rows:  # the issue 18 table, likewise (--only nodes)
            print("\n".join(nodes.markdown(node_rows) + nodes.summary(node_rows)), flush=True)
        if opt.output:
            cores = ceil["cores"]
            warned = bench.notes.get("nodes_warnings", [])
            node_section = (
                [
                    nodes.describe(opt.seconds, opt.warmup, opt.quick),
                    "",
                    *nodes.markdown(node_rows),
                    "",
                    *nodes.summary(node_rows),
                    "",
                    f"The nodes logged {len(warned)} warnings or errors"
                    + (": " + "; ".join(f"`{w[:160]}`" for w in warned[:3]) if warned else "."),
                    "",
                ]
                if node_rows
                else []
            )
            body = [
                *header(opt, (load_before, load_after)),
                "",
                "Load generator against a trivial server (its own ceiling): "
                + ", ".join(
                    f"c={c} {fmt_rate(r)}/s (~{us:.0f} us CPU per request)"
                    for c, (r, us) in gen.items()
                )
                + ".",
                "",
                f"HTTP framework ceiling (uvicorn serving a trivial ASGI app through hsmkms's "
                f"protocol class and worker sockets, c={max(opt.concurrency)}): "
                + ", ".join(
                    f"{w} worker{'s' if w > 1 else ''} {fmt_rate(r)}/s (~{us:.0f} us "
                    "server CPU per request)"
                    for w, (r, us) in floor.items()
                )
                + ".",
                "",
                "In-process ceilings: "
                + ", ".join(f"{k} {fmt_rate(v)}/s" for k, v in ceil["gcm"].items())
                + " (SoftHSM2 through python-pkcs11, one process); key pairs with cryptography "
                f"(DER included), one process / {cores} processes: "
                + ", ".join(
                    f"{s} {fmt_rate(a)}/{fmt_rate(b)}" for s, (a, b) in ceil["pairs"].items()
                )
                + " per second. The token steps of Sign and GenerateMac, one process / "
                f"{cores} processes: "
                + ", ".join(
                    f"{s} {fmt_rate(a)}" + (f"/{fmt_rate(b)}" if b else " (one process)")
                    for s, (a, b) in ceil["sign"].items()
                )
                + " per second. Post-quantum steps in cryptography (no token), one process / "
                f"{cores} processes: "
                + ", ".join(
                    f"{s} {fmt_rate(a)}" + (f"/{fmt_rate(b)}" if b else " (one process)")
                    for s, (a, b) in ceil["pq"].items()
                )
                + " per second. The token steps of the import operations, one process / "
                f"{cores} processes: "
                + ", ".join(
                    f"{s} {fmt_rate(a)}" + (f"/{fmt_rate(b)}" if b else " (one process)")
                    for s, (a, b) in ceil["imports"].items()
                )
                + " per second.",
                "",
                *rows_markdown(
                    [
                        r
                        for r in bench.rows
                        if not is_asymmetric(r)
                        and r.workload not in POST_QUANTUM_BY_NAME
                        and not is_import(r)
                        and not multiregion.is_multi_region(r)
                    ]
                ),  # fmt: skip
                "",
                "Asymmetric and HMAC keys (issue 14): a 32-byte message, MessageType RAW; "
                "RSA_2048 signs with RSASSA_PSS_SHA_256; Verify checks one signature made "
                "up front; each key made by CreateKey on each server before the cells.",
                "",
                *rows_markdown(asym_rows),
                "",
                *summary,
                "",
                "Post-quantum keys (issue 15): Sign with an ML_DSA_65 key (ML_DSA_SHAKE_256, "
                "a 32-byte message, MessageType RAW), Decapsulate with an ML_KEM_768 key (one "
                "ciphertext made up front by Encapsulate), each key made by CreateKey on each "
                "server before the cells; GenerateDataKeyPair ML_KEM_768 repeated from the "
                "table above. Each Sign and Decapsulate unseals the key's seed on the token and "
                "expands it on the host; ML-DSA signing runs on a worker thread, ML-KEM on "
                "the event loop.",
                "",
                *rows_markdown(pq_rows),
                "",
                *pq_summary,
                "",
                "Imported key material (issue 16): two keys made by CreateKey Origin EXTERNAL "
                "on each server before the cells. GetParametersForImport (RSA_2048, "
                "RSAES_OAEP_SHA_1) on one left PendingImport: hsmkms makes an RSA-2048 wrapping "
                "key on the token per call (measured over twice the window). ImportKeyMaterial "
                "imports the same 32 bytes into the other again and again (ImportType "
                "EXISTING_KEY_MATERIAL, KEY_MATERIAL_DOES_NOT_EXPIRE; one import token and one "
                "blob wrapped up front in cryptography after a first import): each request "
                "unwraps on the token and takes the key's import lease in the store. Encrypt "
                "64 B under that imported material, beside Encrypt under generated material "
                "cell after cell. c = 1 and 8 only: AWS's default request quotas are 1/s "
                "for GetParametersForImport and 15/s for ImportKeyMaterial, per account.",
                "",
                *rows_markdown(imp_rows),
                "",
                *imp_summary,
                "",
                "Multi-Region keys and last use (issue 17): one endpoint serves every Region, "
                "a request's Region being its SigV4 scope's. A multi-Region key made by CreateKey "
                "MultiRegion in us-east-1 and replicated (ReplicateKey) to us-west-2 on each "
                "server before the cells; Encrypt 64 B under it, beside Encrypt 64 B under a "
                "single-Region key; one 64-byte blob made by the primary, decrypted through the "
                "primary and, by requests signed for us-west-2, through the replica (the answer's "
                "KeyId checked to be the replica's once before the cells); GetKeyLastUsage on the "
                "run's main key, which every data key cell uses (each worker notes uses in memory "
                "and writes them every 3 s). Each new cell right after the one beside it, at "
                "each concurrency.",
                "",
                *rows_markdown(mr_rows),
                "",
                *mr_summary,
                "",
                *node_section,
                "Where a request's CPU goes: each stage timed alone in one process on the "
                "request the load generator sends (bench/stages.py), against what the "
                "server spent per request in the table above:",
                "",
                *stages_markdown(parts, floor, bench.rows),
                "",
                "Targets (issue 7):",
                "",
                *verdicts,
                "",
                "Targets (issue 14):",
                "",
                *asym_verdicts,
                "",
                "Targets (issue 15): over HTTP at c=32, at least 40% of cryptography's rate "
                "for the same step in one process on this machine:",
                "",
                *pq_verdicts,
                "",
                f"hsmkms logged {len(bench.notes.get('warnings', []))} warnings or errors"
                + (
                    ": " + "; ".join(f"`{w[:160]}`" for w in bench.notes["warnings"][:3])
                    if bench.notes.get("warnings")
                    else "."
                ),
            ]
            write_doc(opt.output, "main", "\n".join(body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
