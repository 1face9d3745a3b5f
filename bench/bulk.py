"""The key-count benchmark's bulk path (issue 22): many KMS keys made through the same service
code as CreateKey, in-process, far faster than over HTTP; and a probe of what a cold key
costs in the wrapped mode.

    python -m bench.bulk create HOME N --ids FILE [--processes 2] [--master-keys wrapped]
                                                  [--durable]
    python -m bench.bulk probe HOME --ids FILE [--sample 2000]

``create``: ``--processes`` child processes, each opening ``hsmkms.KMS(home=HOME,
master_keys=...)`` and calling ``create_key`` (the library face: model validation, the
operation layer, the master-key mode, the store) until N keys are made between them; the new
KeyIds are appended to FILE, one a line. Two processes on two cores make ~1.7x what one makes:
the token calls of one process go through one session under one lock, so threads in a
process do not add. Unless ``--durable``, each child sets ``PRAGMA synchronous=OFF`` on its
store connections (monkeypatched onto hsmkms's SQLite connection opener, here only): with
synchronous=FULL, two fsyncs per key (the wrap's commit, the key's) held two processes at
~700 keys/s against ~1,700 without, 24 minutes against 10 for a million. Only the build is
so tuned; the server measured afterwards runs with hsmkms's own settings (synchronous=FULL).

``probe``: an in-process KMS on HOME (wrapped mode) calls GenerateDataKey once on each of
``--sample`` keys picked at random from FILE, none loaded in this process yet, then once more
on each (now loaded): the time of each, and how many token searches (``handles.search``, the
C_FindObjects of every key), unwraps (``Wrapping.load``) and wrap reads from the store
(``get_wrap``) each pass made, counted by wrapping those functions here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def relax_store_sync() -> None:
    """``PRAGMA synchronous=OFF`` on every SQLite connection hsmkms opens in this process
    (the bulk build only: see the module's docstring)."""
    from hsmkms.store import sqlite_connections

    opener = sqlite_connections.SQLiteConnections._open

    def _open(self: Any) -> Any:
        conn = opener(self)
        conn.execute("PRAGMA synchronous=OFF")
        return conn

    sqlite_connections.SQLiteConnections._open = _open  # type: ignore[method-assign]


def _child(home: Path, count: int, ids: Path, master_keys: str, durable: bool) -> int:
    """Make ``count`` keys through ``hsmkms.KMS``; their KeyIds appended to ``ids``."""
    import hsmkms

    if not durable:
        relax_store_sync()
    kms = hsmkms.KMS(home=str(home), master_keys=master_keys)
    began = time.monotonic()
    try:
        with open(ids, "a") as out:
            for i in range(1, count + 1):
                made = kms.create_key(Description="key count benchmark")
                out.write(made["KeyMetadata"]["KeyId"] + "\n")
                if i % 20000 == 0:
                    rate = i / (time.monotonic() - began)
                    print(f"  [{os.getpid()}] {i} keys made ({rate:.0f}/s)", flush=True)
    finally:
        kms.close()
    return 0


def create(
    home: Path,
    n: int,
    ids: Path,
    *,
    processes: int = 2,
    master_keys: str = "wrapped",
    durable: bool = False,
) -> float:
    """``n`` keys made on ``home`` by ``processes`` children of ``python -m bench.bulk``; the
    seconds it took. The first key is made alone (a fresh wrapped home makes its domain key
    then: the processes would agree on one, but the loser's would be made and destroyed)."""
    from bench.footprint import environment
    from bench.servers import ROOT

    began = time.monotonic()
    if n <= 0:
        return 0.0

    def spawn(count: int, part: Path) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "bench.bulk", "child", str(home), str(count), "--ids",
               str(part), "--master-keys", master_keys]  # fmt: skip
        if durable:
            cmd.append("--durable")
        return subprocess.Popen(cmd, cwd=ROOT, env=environment())

    parts = [ids.with_name(f"{ids.name}.part{i}") for i in range(processes)]
    for part in parts:
        part.unlink(missing_ok=True)
    first = spawn(1, parts[0])
    if first.wait() != 0:
        raise RuntimeError(f"bench.bulk child exited with {first.returncode}")
    rest = n - 1
    shares = [rest // processes + (1 if i < rest % processes else 0) for i in range(processes)]
    children = [spawn(share, part) for share, part in zip(shares, parts, strict=True) if share]
    failed = [c.returncode for c in children if c.wait() != 0]
    if failed:
        raise RuntimeError(f"bench.bulk children exited with {failed}")
    with open(ids, "a") as out:
        for part in parts:
            if part.exists():
                out.write(part.read_text())
                part.unlink()
    return time.monotonic() - began


def probe(home: Path, ids: Path, sample: int = 2000, seed: int = 11) -> dict[str, Any]:
    """What a cold key costs in-process (see the module's docstring): per pass, the mean, p50
    and p99 microseconds of a GenerateDataKey and the searches, unwraps and wrap reads per
    request."""
    import hsmkms
    from hsmkms.hsm import handles, wrapping
    from hsmkms.store import sqlite_wraps

    counts = {"searches": 0, "unwraps": 0, "wrap_reads": 0}

    def counted(owner: Any, name: str, what: str) -> None:
        inner = getattr(owner, name)

        def spy(*args: Any, **kwargs: Any) -> Any:
            counts[what] += 1
            return inner(*args, **kwargs)

        setattr(owner, name, spy)

    counted(handles, "search", "searches")
    counted(wrapping.Wrapping, "load", "unwraps")
    counted(sqlite_wraps.SQLiteWraps, "get_wrap", "wrap_reads")
    all_ids = ids.read_text().split()
    keys = random.Random(seed).sample(all_ids, min(sample, len(all_ids)))
    kms = hsmkms.KMS(home=str(home), master_keys="wrapped")
    out: dict[str, Any] = {"keys_in_store": len(all_ids), "sample": len(keys)}
    try:
        kms.generate_data_key(KeyId=keys[0], KeySpec="AES_256")  # opens what opens once
        for name in ("cold", "warm"):
            for k in counts:
                counts[k] = 0
            times = []
            for key in keys:
                t0 = time.perf_counter()
                kms.generate_data_key(KeyId=key, KeySpec="AES_256")
                times.append(time.perf_counter() - t0)
            times.sort()
            out[name] = {
                "mean_us": sum(times) / len(times) * 1e6,
                "p50_us": times[len(times) // 2] * 1e6,
                "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6,
                **{f"{k}_per_request": v / len(keys) for k, v in counts.items()},
            }
    finally:
        kms.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("create", "child"):
        c = sub.add_parser(name)
        c.add_argument("home", type=Path)
        c.add_argument("n", type=int)
        c.add_argument("--ids", type=Path, required=True)
        c.add_argument("--processes", type=int, default=2)
        c.add_argument("--master-keys", choices=("token", "wrapped"), default="wrapped")
        c.add_argument("--durable", action="store_true", help="keep synchronous=FULL")
    pr = sub.add_parser("probe")
    pr.add_argument("home", type=Path)
    pr.add_argument("--ids", type=Path, required=True)
    pr.add_argument("--sample", type=int, default=2000)
    a = p.parse_args(argv)
    if a.command == "child":
        return _child(a.home, a.n, a.ids, a.master_keys, a.durable)
    if a.command == "create":
        seconds = create(a.home, a.n, a.ids, processes=a.processes,
                         master_keys=a.master_keys, durable=a.durable)  # fmt: skip
        print(f"{a.n} keys in {seconds:.1f} s ({a.n / max(seconds, 1e-9):.0f}/s)", flush=True)
        return 0
    print(json.dumps(probe(a.home, a.ids, a.sample)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
