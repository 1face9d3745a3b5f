"""What a run prints and writes: one line per cell as it runs, the markdown tables, the
verdicts against the targets, the machine, and the sections of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.load import Result
from bench.workloads import P256, PAIR_SPECS, PEERS, RSA_SPECS, Row

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
