"""What a run prints and writes: one line per cell as it runs, the markdown tables, the
verdicts against the targets, the machine, and the sections of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import ceilings
from bench.load import Result
from bench.stages import ORDER
from bench.workloads import (
    ASYMMETRIC,
    ASYMMETRIC_BY_NAME,
    GENERATED_ENCRYPT,
    GET_PARAMETERS,
    IMPORT_WORKLOADS,
    IMPORTED_ENCRYPT,
    P256,
    PAIR_SPECS,
    PEERS,
    POST_QUANTUM,
    POST_QUANTUM_BY_NAME,
    PQ_PAIR,
    REIMPORT,
    RSA_SPECS,
    Row,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"


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
    if "moto" in row.unavailable:
        return "n/a"
    if ours is None or peer is None:
        return ""
    if peer.rate == 0:
        return "peer failed" if ours.rate > 0 else "-"
    return f"{ours.rate / peer.rate:.1f}x"


def print_row(row: Row) -> None:
    cols = [f"{row.workload[:52]:<52}", f"c={row.concurrency:<3}"]
    for name in PEERS:
        r = row.results.get(name)
        if name in row.unavailable:
            cols.append(f"{name} n/a ({row.unavailable[name]})")
        if r is None:
            continue
        cols.append(
            f"{name} {fmt_rate(r.rate):>7}/s p50 {fmt_ms(r.percentile(50)):>6} "
            f"p99 {fmt_ms(r.percentile(99)):>6} ms cpu {fmt_cpu(r):>6} us err {fmt_errors(r)}"
        )
    cols.append(ratio(row))
    print("  ".join(cols), flush=True)


# -- the machine ---------------------------------------------------------------------------------
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
            capture_output=True,
            text=True,
            check=False,
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
        )
        + f", SoftHSM {softhsm}",
        "commit": commit,
    }


# -- the report ----------------------------------------------------------------------------------
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
            if peer in row.unavailable:
                cols += ["n/a", "", "", row.unavailable[peer].replace("|", "/"), ""]
                continue
            if r is None:
                cols += ["", "", "", "", ""]
                continue
            cols += [
                fmt_rate(r.rate),
                fmt_ms(r.percentile(50)),
                fmt_ms(r.percentile(99)),
                fmt_errors(r),
                fmt_cpu(r),
            ]
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
        out.append(
            f"- {manys[0].workload} vs --workers 1, GenerateDataKey at c={c} "
            f"({len(ones)} rounds in turn, rates summed): {gain:.2f}x (>= 1.6x): "
            f"{verdict(gain >= 1.6)}"
        )
    pairs = ceil.get("pairs", {})
    for spec in PAIR_SPECS:
        best = max(
            (r.results["hsmkms"].rate for r in rows
             if r.workload == f"GenerateDataKeyPair {spec}" and "hsmkms" in r.results),
            default=None,
        )  # fmt: skip
        if best is None:
            continue
        raw = pairs.get(spec, (0.0, 0.0))[0]
        share = best / raw if raw else 0.0
        if spec is P256:
            out.append(
                f"- GenerateDataKeyPair {spec}: best {fmt_rate(best)}/s (>= 2,000/s): "
                f"{verdict(best >= 2000)}"
            )
        out.append(
            f"- GenerateDataKeyPair {spec}: best {fmt_rate(best)}/s = {share:.0%} of "
            f"cryptography's {fmt_rate(raw)}/s in one process (>= 40%): {verdict(share >= 0.4)}"
            + ("" if share >= 0.4 else why_pairs_cap(rows, spec, raw, ceil))
        )
    for spec in RSA_SPECS:
        stocked = find(rows, f"GenerateDataKeyPair {spec} (pool stock)", 1)
        if stocked and "hsmkms" in stocked.results:
            p50 = stocked.results["hsmkms"].percentile(50) or 0.0
            out.append(
                f"- {spec} from the pool: p50 {fmt_ms(p50)} ms (<= 10): {verdict(p50 <= 0.010)}"
            )
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
    text = (
        f"; the server spent {per * 1e6:,.0f} us of CPU per pair at c=32, of which "
        f"generating it is {1e6 / raw:,.0f} us"
    )
    base = gdk.results["hsmkms"].cpu_per_request if gdk and "hsmkms" in gdk.results else None
    if base is not None:
        text += f" (a GenerateDataKey, with no pair, took {base * 1e6:,.0f} us)"
    gen = ceil.get("generator_us")
    cores = ceil.get("cores") or 1
    if gen:
        # What the cores allow for this request path, the load generator's share included.
        cap = cores * 1e6 / (per * 1e6 + gen)
        text += (
            f": {cores} cores at {per * 1e6:,.0f} + {gen:,.0f} us (load generator) per "
            f"request allow ~{fmt_rate(cap)}/s, {cap / raw:.0%} of the target's reference"
        )
    return text


# -- asymmetric and HMAC keys (issue 14) --------------------------------------------------------
QUOTA = 1000.0  # AWS's default per-account request quota for RSA and for ECC operations, /s
MAC_WITHIN = 0.30  # GenerateMac within 30% of GenerateDataKey at the same concurrency


def is_asymmetric(row: Row) -> bool:
    return row.workload in ASYMMETRIC_BY_NAME


def _rates(rows: list[Row], name: str, peer: str = "hsmkms") -> dict[int, Result]:
    return {r.concurrency: r.results[peer] for r in rows
            if r.workload == name and peer in r.results}  # fmt: skip


def asymmetric_targets(rows: list[Row], ceil: dict[str, Any]) -> list[str]:
    """Each target of issue 14 this run can judge: every Sign and Verify at or above AWS's
    default quota (the best concurrency counts: a quota is a rate), GenerateMac within 30% of
    GenerateDataKey at every concurrency."""
    out: list[str] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    for a in ASYMMETRIC:
        cells = _rates(rows, a.name)
        if not cells:
            continue
        each = ", ".join(f"c={c} {fmt_rate(r.rate)}" for c, r in sorted(cells.items()))
        if a.operation == "GenerateMac":
            base = _rates(rows, "GenerateDataKey")
            shares = {c: r.rate / base[c].rate - 1 for c, r in cells.items()
                      if c in base and base[c].rate}  # fmt: skip
            if not shares:
                continue
            ok = all(v >= -MAC_WITHIN for v in shares.values())
            out.append(
                f"- {a.name} within {MAC_WITHIN:.0%} of GenerateDataKey at each c: "
                + ", ".join(
                    f"c={c} {fmt_rate(cells[c].rate)}/s vs {fmt_rate(base[c].rate)}/s ({v:+.0%})"
                    for c, v in sorted(shares.items())
                )
                + f": {verdict(ok)}"
            )
            continue
        best_c, best = max(cells.items(), key=lambda item: item[1].rate)
        out.append(
            f"- {a.name}: best {fmt_rate(best.rate)}/s at c={best_c} ({each}; >= "
            f"{fmt_rate(QUOTA)}/s, AWS's default quota): {verdict(best.rate >= QUOTA)}"
            + ("" if best.rate >= QUOTA else why_sign_caps(rows, a.name, ceil))
        )
    return out


def why_sign_caps(rows: list[Row], name: str, ceil: dict[str, Any]) -> str:
    """Where a signature's request time goes, from this run's figures: the server's CPU per
    request, the token's own rate for the step, and what the cores allow."""
    cells = _rates(rows, name)
    top = cells.get(max(cells)) if cells else None
    per = top.cpu_per_request if top else None
    steps = ceil.get("sign", {})
    step = steps.get(ceilings.RSA_SIGN) if "RSA" in name else None
    if per is None:
        return ""
    text = f"; the server spent {per * 1e6:,.0f} us of CPU per request at c={max(cells)}"
    if step and step[0]:
        text += (
            f", of which the token's C_Sign is ~{1e6 / step[0]:,.0f} us (SoftHSM2: "
            f"{fmt_rate(step[0])}/s in one process"
            + (f", {fmt_rate(step[1])}/s in {ceil.get('cores')}" if step[1] else "")
            + ")"
        )
    cap = _capacity(per, ceil)
    if cap:
        text += cap[1]
    return text


def _capacity(per: float, ceil: dict[str, Any]) -> tuple[float, str] | None:
    """The rate the cores allow at ``per`` seconds of server CPU a request, beside the load
    generator's own cost, and the words that say so; None when the generator was not timed."""
    gen = ceil.get("generator_us")
    cores = ceil.get("cores") or 1
    if not gen:
        return None
    cap = cores * 1e6 / (per * 1e6 + gen)
    return cap, (
        f": {cores} cores at {per * 1e6:,.0f} + {gen:,.0f} us (load generator) per "
        f"request allow ~{fmt_rate(cap)}/s"
    )


def asymmetric_summary(rows: list[Row], ceil: dict[str, Any]) -> list[str]:
    """The paragraph under the issue 14 table: this run's figures at the highest
    concurrency, against GenerateDataKey and the token's own rates."""
    cells = {a.name: _rates(rows, a.name) for a in ASYMMETRIC}
    peers = {a.name: _rates(rows, a.name, "moto") for a in ASYMMETRIC}
    gdk = _rates(rows, "GenerateDataKey")
    if not any(cells.values()):
        return []
    c = max(max(v) for v in cells.values() if v)

    def at(name: str) -> str:
        ours = cells[name].get(c)
        if ours is None:
            return "not measured"
        text = (
            f"{fmt_rate(ours.rate)}/s (p99 {fmt_ms(ours.percentile(99))} ms, {fmt_cpu(ours)} us CPU"
        )
        peer = peers[name].get(c)
        if peer is not None and peer.rate:
            text += f"; {ours.rate / peer.rate:.1f}x moto"
        return text + ")"

    sign_p256, sign_rsa, verify, mac = (a.name for a in ASYMMETRIC)
    lines = [
        f"At c={c}: Sign with ECC_NIST_P256 {at(sign_p256)}, with RSA_2048 "
        f"(RSASSA_PSS_SHA_256) {at(sign_rsa)}; Verify ECC_NIST_P256 {at(verify)}; "
        f"GenerateMac HMAC_SHA_256 {at(mac)}"
        + (
            f"; GenerateDataKey in the same run {fmt_rate(gdk[c].rate)}/s "
            f"({fmt_cpu(gdk[c])} us CPU)."
            if c in gdk
            else "."
        )
    ]
    steps = ceil.get("sign", {})
    rsa_one, rsa_many = steps.get(ceilings.RSA_SIGN, (0.0, 0.0))
    host = steps.get(ceilings.HOST_RSA_SIGN, (0.0, 0.0))[0]
    ec_one = steps.get(ceilings.SIGN_STEPS[1], (0.0, 0.0))[0]
    mac_one = steps.get(ceilings.SIGN_STEPS[2], (0.0, 0.0))[0]
    verify_one = steps.get(ceilings.HOST_VERIFY, (0.0, 0.0))[0]
    if rsa_one and ec_one and mac_one and verify_one:
        lines.append(
            f"The key's own step, in-process: an RSA-2048 PSS signature takes SoftHSM2 "
            f"~{1e6 / rsa_one:,.0f} us ({fmt_rate(rsa_one)}/s in one process, "
            f"{fmt_rate(rsa_many)}/s in {ceil.get('cores')}; OpenSSL alone, with no token, "
            f"signs {fmt_rate(host)}/s), an ECDSA P-256 signature ~{1e6 / ec_one:,.0f} us, an "
            f"HMAC ~{1e6 / mac_one:,.0f} us, and Verify's check on the host (cryptography) "
            f"~{1e6 / verify_one:,.0f} us. So EC and HMAC requests cost about what "
            "GenerateDataKey costs (the request path is most of it), while an RSA-2048 "
            "signature is bound by the token's private-key step, which runs on a worker "
            "thread (service/quick.py), one at a time per worker process (the token's "
            "request lock)."
        )
    missing = sorted({f"{peer} {r.workload}: {why}" for r in rows if is_asymmetric(r)
                      for peer, why in r.unavailable.items()})  # fmt: skip
    if missing:
        lines.append("Not measured (n/a in the table): " + "; ".join(missing) + ".")
    return [" ".join(lines)]


# -- post-quantum keys (issue 15) ---------------------------------------------------------------
PQ_SHARE = 0.40  # over HTTP at c=32, at least 40% of cryptography's in-process rate
PQ_C = 32
# Each workload of issue 15's speed section -> the in-process step it is judged against, and
# the same step without the seed's expansion (None: there is no seed to expand).
PQ_REFERENCE: dict[str, tuple[str, str | None]] = {
    PQ_PAIR: (ceilings.PQ_PAIR, None),
    POST_QUANTUM[0].name: (ceilings.PQ_SIGN, ceilings.PQ_SIGN_BARE),
    POST_QUANTUM[1].name: (ceilings.PQ_DECAP, ceilings.PQ_DECAP_BARE),
}


def is_post_quantum(row: Row) -> bool:
    """A row of the issue 15 table (the ML-KEM data key pair is in the main table too)."""
    return row.workload in POST_QUANTUM_BY_NAME or row.workload == PQ_PAIR


def post_quantum_targets(rows: list[Row], ceil: dict[str, Any]) -> list[str]:
    """Issue 15's target for each of its three workloads: over HTTP at c=32, at least 40% of
    cryptography's rate for the same step in one process on this machine."""
    out: list[str] = []
    steps = ceil.get("pq", {})

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    for name, (ref, bare) in PQ_REFERENCE.items():
        cells = _rates(rows, name)
        top = cells.get(PQ_C)
        raw = steps.get(ref, (0.0, 0.0))[0]
        if top is None or not raw:
            continue
        share = top.rate / raw
        each = ", ".join(f"c={c} {fmt_rate(r.rate)}" for c, r in sorted(cells.items()))
        alone = steps.get(bare, (0.0, 0.0))[0] if bare else 0.0
        out.append(
            f"- {name} at c={PQ_C}: {fmt_rate(top.rate)}/s = {share:.0%} of cryptography's "
            f"{fmt_rate(raw)}/s in one process ({ref}"
            + (f"; the step alone, without the seed's expansion, {fmt_rate(alone)}/s" if alone
               else "")
            + f"; {each}; >= {PQ_SHARE:.0%}): {verdict(share >= PQ_SHARE)}"
            + ("" if share >= PQ_SHARE else why_pq_caps(top, raw, ceil))
        )  # fmt: skip
    return out


def why_pq_caps(top: Result, raw: float, ceil: dict[str, Any]) -> str:
    """Where the rest goes, from this run's figures: the server's CPU per request against the
    in-process cost of the step, and what the cores allow at that cost."""
    per = top.cpu_per_request
    if per is None:
        return ""
    text = (
        f"; the server spent {per * 1e6:,.0f} us of CPU per request at c={PQ_C}, of which the "
        f"step in cryptography is {1e6 / raw:,.0f} us"
    )
    cap = _capacity(per, ceil)
    if cap:
        text += f"{cap[1]}, {cap[0] / raw:.0%} of the reference"
    return text


def post_quantum_summary(rows: list[Row], ceil: dict[str, Any]) -> list[str]:
    """The paragraph under the issue 15 table: each workload at c=32 beside moto and beside
    its in-process cost, and the peer's n/a reasons."""
    cells = {name: _rates(rows, name) for name in PQ_REFERENCE}
    if not any(cells.values()):
        return []
    steps = ceil.get("pq", {})
    parts = []
    for name, (ref, bare) in PQ_REFERENCE.items():
        ours = cells[name].get(PQ_C)
        if ours is None:
            continue
        text = (
            f"{name} {fmt_rate(ours.rate)}/s (p99 {fmt_ms(ours.percentile(99))} ms, "
            f"{fmt_cpu(ours)} us CPU"
        )
        peer = _rates(rows, name, "moto").get(PQ_C)
        if peer is not None and peer.rate:
            text += f"; {ours.rate / peer.rate:.1f}x moto"
        one = steps.get(ref, (0.0, 0.0))[0]
        if one:
            text += f"; in cryptography {1e6 / one:,.0f} us"
            alone = steps.get(bare, (0.0, 0.0))[0] if bare else 0.0
            if alone:
                text += f", {1e6 / alone:,.0f} us of it the step itself"
        parts.append(text + ")")
    lines = [f"At c={PQ_C}: " + "; ".join(parts) + "."]
    missing = sorted({f"{peer} {r.workload}: {why}" for r in rows if is_post_quantum(r)
                      for peer, why in r.unavailable.items()})  # fmt: skip
    if missing:
        lines.append("Not measured (n/a in the table): " + "; ".join(missing) + ".")
    failed = sorted({r.workload for r in rows if r.workload == PQ_PAIR and "moto" in r.results
                     and r.results["moto"].rate == 0})  # fmt: skip
    if failed:
        lines.append(
            f"moto answers every {PQ_PAIR} with an error (the errors column), so its ratio "
            "reads peer failed."
        )
    return [" ".join(lines)]


# -- imported key material (issue 16) -----------------------------------------------------------
# AWS's default per-account request quotas, /s (the KMS Developer Guide's "Request quotas").
IMPORT_QUOTAS = {GET_PARAMETERS: 1.0, REIMPORT: 15.0}


def is_import(row: Row) -> bool:
    """A row of the issue 16 table."""
    return row.workload in IMPORT_WORKLOADS


def _cell_text(r: Result) -> str:
    return (
        f"{fmt_rate(r.rate)}/s (p50 {fmt_ms(r.percentile(50))} ms, p99 "
        f"{fmt_ms(r.percentile(99))} ms, {fmt_cpu(r)} us CPU)"
    )


def import_summary(rows: list[Row], ceil: dict[str, Any]) -> list[str]:
    """The paragraph under the issue 16 table: each import operation at each concurrency,
    Encrypt under imported material against generated material, the token's own steps, and
    the peer's n/a reasons."""
    cells = {name: _rates(rows, name) for name in IMPORT_WORKLOADS}
    if not any(cells.values()):
        return []
    parts = []
    for name, quota in IMPORT_QUOTAS.items():
        if cells[name]:
            best = max(r.rate for r in cells[name].values())
            parts.append(
                f"{name} "
                + ", ".join(f"c={c} {_cell_text(r)}" for c, r in sorted(cells[name].items()))
                + f": at best {fmt_rate(best / quota)}x AWS's default quota of {quota:g}/s"
            )
    imported, generated = cells[IMPORTED_ENCRYPT], cells[GENERATED_ENCRYPT]
    both = sorted(c for c in imported if c in generated and generated[c].rate)
    if both:
        parts.append(
            "Encrypt 64 B under imported against generated material, cell after cell: "
            + ", ".join(
                f"c={c} {fmt_rate(imported[c].rate)}/s vs {fmt_rate(generated[c].rate)}/s "
                f"({imported[c].rate / generated[c].rate - 1:+.0%}; {fmt_cpu(imported[c])} vs "
                f"{fmt_cpu(generated[c])} us CPU)"
                for c in both
            )
        )
    lines = ["; ".join(parts) + "." if parts else ""]
    steps = ceil.get("imports", {})
    wrap = steps.get(ceilings.WRAPPING_KEY, (0.0, 0.0))
    again = steps.get(ceilings.REIMPORT, (0.0, 0.0))
    cores = ceil.get("cores")
    if wrap[0] and again[0]:
        lines.append(
            f"The token's own steps, in-process (bench/ceilings.py, through hsmkms's Token): "
            f"SoftHSM2 makes an RSA-2048 wrapping key in ~{1e3 / wrap[0]:,.0f} ms "
            f"({fmt_rate(wrap[0])}/s in one process"
            + (f", {fmt_rate(wrap[1])}/s in {cores}" if wrap[1] else "")
            + "), and reimports 32 bytes (C_UnwrapKey into a session object, its length "
            "checked, two AES-CMACs for its KeyMaterialId, a search for that id) in "
            f"~{1e6 / again[0]:,.0f} us ({fmt_rate(again[0])}/s in one process"
            + (f", {fmt_rate(again[1])}/s in {cores}" if again[1] else "")
            + ")."
        )
    missing = sorted({f"{peer} {r.workload}: {why}" for r in rows if is_import(r)
                      for peer, why in r.unavailable.items()})  # fmt: skip
    if missing:
        lines.append("Not measured (n/a in the table): " + "; ".join(missing) + ".")
    return [" ".join(line for line in lines if line)]


def stages_markdown(
    parts: dict[str, dict[str, float]], floor: dict[int, tuple[float, float]], rows: list[Row]
) -> list[str]:
    """The per-stage profile, next to what the server spent per request in this run."""
    names = list(parts)
    lines = [
        "| stage (us of CPU per request) | " + " | ".join(names) + " |",
        "|---|" + "--:|" * len(names),
    ]
    present = {k for stages_of in parts.values() for k in stages_of}
    stage_names = [k for k in ORDER if k in present]
    stage_names += sorted(present - set(stage_names))
    for stage in stage_names:
        cells = [f"{parts[n][stage]:.0f}" if stage in parts[n] else "" for n in names]
        lines.append(f"| {stage.replace('  ', '&nbsp;&nbsp;')} | " + " | ".join(cells) + " |")
    if 1 in floor:
        us = f"{floor[1][1]:.0f}"
        lines.append(
            "| HTTP framework (uvicorn, trivial app, 1 worker) | "
            + " | ".join(us for _ in names)
            + " |"
        )
    served = []
    for n in names:
        row = find(rows, n, 32)
        per = row.results["hsmkms"].cpu_per_request if row and "hsmkms" in row.results else None
        served.append("-" if per is None else f"{per * 1e6:.0f}")
    lines.append(
        "| **measured in the server at c=32** (all processes) | " + " | ".join(served) + " |"
    )
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
        "Produced by `scripts/bench` (bench/); the sections between the bench markers "
        "are rewritten by each run.\n"
    )


def write_doc(path: Path, tag: str, body: str) -> None:
    text = path.read_text() if path.exists() else doc_skeleton()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(text, tag, body))
    print(f"wrote {path} (section {tag})", flush=True)
