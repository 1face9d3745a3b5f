"""What a home weighs and holds, for the key-count runs (bench/keys.py, bench/wrapped_keys.py):
the store's files, the token's objects (bench/token_count.py, in a process of its own), and
the server's processes' memory and loaded keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.servers import ROOT, Hsmkms

CHILD_ENV_DROP = ("HSMKMS_", "SOFTHSM2_")  # as bench/servers.py: the home's own settings only


def environment() -> dict[str, str]:
    """This process's environment less its HSMKMS_* and SOFTHSM2_* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(CHILD_ENV_DROP)}


def store_files(home: Path) -> dict[str, int]:
    """Bytes on disk of the store: hsmkms.sqlite3 and its -wal and -shm files (those present),
    and the last-use store beside it."""
    out = {}
    for name in ("hsmkms.sqlite3", "hsmkms.sqlite3-wal", "hsmkms.sqlite3-shm",
                 "hsmkms.usage.sqlite3", "hsmkms.usage.sqlite3-wal"):  # fmt: skip
        path = home / name
        if path.exists():
            out[name] = path.stat().st_size
    return out


def token_objects(home: Path) -> dict[str, Any]:
    """bench/token_count.py on ``home``, in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.token_count", str(home)], cwd=ROOT, env=environment(),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def worker_rss(server: Hsmkms) -> dict[str, float]:
    """MiB of resident memory of the server's supervisor, each worker (a child listening on
    the server's port) and any other child (e.g. multiprocessing's resource tracker)."""
    import psutil

    out: dict[str, float] = {}
    if server.proc is None:
        return out
    try:
        root = psutil.Process(server.proc.pid)
        out["supervisor"] = root.memory_info().rss / 2**20
        workers = others = 0
        for child in root.children(recursive=True):
            listens = any(
                c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == server.port
                for c in child.net_connections(kind="tcp")
            )
            if listens:
                workers += 1
                out[f"worker {workers}"] = child.memory_info().rss / 2**20
            else:
                others += 1
                out[f"other child {others}"] = child.memory_info().rss / 2**20
    except psutil.Error:
        pass
    return out


def loaded_keys(server: Hsmkms, workers: int) -> list[int]:
    """``loaded_keys`` of /health's full report, from new connections until every worker
    answered (distinct values; best effort: at most 8 tries a worker)."""
    seen: list[int] = []
    for _ in range(8 * workers):
        status, body = server.http_get("/health")
        if status == 200:
            value = json.loads(body).get("token", {}).get("loaded_keys")
            if isinstance(value, int) and value not in seen:
                seen.append(value)
        if len(seen) >= workers:
            break
    return sorted(seen)
