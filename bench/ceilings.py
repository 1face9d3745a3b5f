"""In-process ceilings on this machine, with no HTTP, no SigV4, no service layer:

* AES-256-GCM on a SoftHSM2 token object through python-pkcs11 (what one process's token
  can do: every Encrypt, Decrypt and GenerateDataKey makes one such call);
* data key pair generation with cryptography (OpenSSL) including the DER encoding, in one
  process and in one process per core (RSA generation releases the GIL, EC does not).

Each measurement runs in a fresh spawned process: the PKCS#11 library reads SOFTHSM2_CONF
once per process, and a rate per core needs a process per core.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path


def _rate(fn: Callable[[], object], seconds: float, batch: int = 1) -> float:
    """Calls per second of ``fn`` over at least ``seconds`` and at least one batch."""
    n = 0
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def _token_gcm(home: str, seconds: float) -> dict[str, float]:
    """ops/s of C_EncryptInit+C_Encrypt / C_DecryptInit+C_Decrypt with AES-GCM on an AES-256
    token object made like a master key (sensitive, not extractable, not modifiable), straight
    through python-pkcs11 (hsmkms/hsm/raw.py), and of C_GenerateRandom."""
    from hsmkms.config import Settings
    from hsmkms.home import ensure_home

    settings = ensure_home(Settings.load(home=Path(home), env={}))
    os.environ["SOFTHSM2_CONF"] = str(settings.softhsm_conf_path)
    from hsmkms.hsm import open_token, raw

    out: dict[str, float] = {}
    # Without OS locking, as python-pkcs11 initialises the library: the raw library's ceiling.
    with (
        open_token(
            settings.pkcs11_module, settings.token_label, settings.read_pin(), os_locking=False
        ) as token,
        raw.calls(token, os.urandom(12), b"a" * 60) as calls,
    ):
        for size in (32, 64):
            data = os.urandom(size)
            sealed = calls.encrypt(data)
            out[f"AES-GCM encrypt {size} B"] = _rate(partial(calls.encrypt, data), seconds, 200)
            out[f"AES-GCM decrypt {size} B"] = _rate(partial(calls.decrypt, sealed), seconds, 200)
        out["C_GenerateRandom 32 B"] = _rate(partial(calls.random, 32), seconds, 200)
    return out


def _keygen(spec: str, seconds: float) -> float:
    from hsmkms import keypairs

    return _rate(lambda: keypairs.generate(spec), seconds)


def token_gcm(home: Path, seconds: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_token_gcm, (str(home), seconds))


def keygen(spec: str, seconds: float, processes: int = 1) -> float:
    """Pairs per second of ``spec`` from ``processes`` processes generating at once."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        # A throwaway round first: spawned interpreters import cryptography lazily.
        pool.starmap(_keygen, [("ECC_NIST_P256", 0.05)] * processes)
        return sum(pool.starmap(_keygen, [(spec, seconds)] * processes))
