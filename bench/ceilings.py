"""In-process ceilings on this machine, with no HTTP, no SigV4, no service layer:

* AES-256-GCM on a SoftHSM2 token object through python-pkcs11 (what one process's token
  can do: every Encrypt, Decrypt and GenerateDataKey makes one such call);
* data key pair generation with cryptography (OpenSSL) including the DER encoding, in one
  process and in one process per core (RSA generation releases the GIL, EC does not);
* the token steps of Sign and GenerateMac (issue 14): C_Sign with RSA-2048 PSS-SHA-256,
  ECDSA P-256 and HMAC-SHA-256 on token keys made as hsmkms makes them, in one process and in
  one process per core on the same key; beside them the same signature and an ECDSA P-256
  verification in cryptography (OpenSSL, no token: what moto and Verify do);
* the post-quantum steps (issue 15) in cryptography (OpenSSL 3.5), no token: an ML-KEM-768
  data key pair (generate + PKCS#8 seed-format private_bytes, and with the SPKI too as
  hsmkms/pq.py makes it), an ML-DSA-65 signature and an ML-KEM-768 decapsulation from the
  seed (from_seed_bytes + the step, what each hsmkms request does after unsealing the seed)
  and without (the step alone, on a key expanded once), in one process and one per core;
* the token steps of the import operations (issue 16), through hsmkms's Token: an RSA-2048
  wrapping key made on the token (GetParametersForImport's), and the reimport of 32 bytes of
  symmetric material wrapped with RSAES_OAEP_SHA_1 (ImportKeyMaterial's: C_UnwrapKey into a
  session object, its length checked, its KeyMaterialId by AES-CMAC, the token searched for
  that id), in one process and in one process per core.

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


# The token steps measured by :func:`token_sign`, by the name the report prints.
RSA_SIGN = "RSA_2048 PSS C_Sign"
SIGN_STEPS = (RSA_SIGN, "ECDSA P-256 C_Sign", "HMAC-SHA-256 C_Sign")
HOST_RSA_SIGN = "RSA_2048 PSS sign in cryptography"
HOST_VERIFY = "ECDSA P-256 verify in cryptography"


def _token_sign(
    home: str, seconds: float, keys: dict[str, bytes] | None, delay: float
) -> tuple[dict[str, bytes], dict[str, float]]:
    """(the token keys, ops/s of each of :data:`SIGN_STEPS` through hsmkms's Token, the
    operation layer's call). ``keys`` None: make the keys first, and time the host-side
    steps in cryptography too; else use those (another process made them). ``delay``:
    seconds to wait before opening the token, so that processes open it one at a time."""
    import hashlib

    from hsmkms.config import Settings
    from hsmkms.home import ensure_home

    time.sleep(delay)
    settings = ensure_home(Settings.load(home=Path(home), env={}))
    os.environ["SOFTHSM2_CONF"] = str(settings.softhsm_conf_path)
    from hsmkms.hsm import open_token

    message = bytes(range(32))
    digest = hashlib.sha256(message).digest()
    rsa_id, ec_id, mac_id = SIGN_STEPS
    out: dict[str, float] = {}
    first = keys is None
    with open_token(settings.pkcs11_module, settings.token_label, settings.read_pin()) as token:
        if keys is None:
            keys = {name: os.urandom(32) for name in SIGN_STEPS}
            token.create_private_key(keys[rsa_id], "bench-rsa", "RSA_2048", "sign")
            token.create_private_key(keys[ec_id], "bench-ec", "ECC_NIST_P256", "sign")
            token.create_secret_key(keys[mac_id], "bench-hmac", 256)
        steps = {
            rsa_id: partial(token.sign, keys[rsa_id], "PSS", "SHA256", digest),
            ec_id: partial(token.sign, keys[ec_id], "ECDSA", "SHA256", digest),
            mac_id: partial(token.mac, keys[mac_id], "SHA256", message),
        }
        time.sleep(max(0.0, 1.0 - delay))  # then every process measures at once
        for name, step in steps.items():
            step()  # the first call finds the key (a handle search)
            out[name] = _rate(step, seconds, 10)
    if first:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

        prehashed = utils.Prehashed(hashes.SHA256())
        rsa_key = rsa.generate_private_key(65537, 2048)
        pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
        out[HOST_RSA_SIGN] = _rate(partial(rsa_key.sign, digest, pss, prehashed), seconds, 10)
        ec_key = ec.generate_private_key(ec.SECP256R1())
        signature = ec_key.sign(digest, ec.ECDSA(prehashed))
        verify = partial(ec_key.public_key().verify, signature, digest, ec.ECDSA(prehashed))
        out[HOST_VERIFY] = _rate(verify, seconds, 10)
    return keys, out


def token_sign(home: Path, seconds: float, processes: int) -> dict[str, tuple[float, float]]:
    """name -> (ops/s in one process, ops/s summed over ``processes`` at once on the same
    keys, 0.0 for the host-side steps and when ``processes`` is 1) of the token steps of
    Sign and GenerateMac, and of cryptography's RSA sign and ECDSA verify."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        keys, one = pool.apply(_token_sign, (str(home), seconds, None, 0.0))
    many: dict[str, float] = {}
    if processes > 1:
        with ctx.Pool(processes) as pool:
            # SoftHSM2 once answered "no token" to a process opening it at the same instant
            # as another: the processes open it 0.3 s apart, then all measure together.
            args = [(str(home), seconds, keys, 0.3 * i) for i in range(processes)]
            for _keys, rates in pool.starmap(_token_sign, args):
                for name, rate in rates.items():
                    many[name] = many.get(name, 0.0) + rate
    return {name: (rate, many.get(name, 0.0)) for name, rate in one.items()}


# The post-quantum steps measured by :func:`post_quantum`, by the name the report prints.
PQ_PAIR = "ML_KEM_768 generate + private_bytes"
PQ_PAIR_SPKI = "ML_KEM_768 generate + SPKI + private_bytes"
PQ_SIGN = "ML_DSA_65 from_seed_bytes + sign"
PQ_SIGN_BARE = "ML_DSA_65 sign"
PQ_DECAP = "ML_KEM_768 from_seed_bytes + decapsulate"
PQ_DECAP_BARE = "ML_KEM_768 decapsulate"
PQ_STEPS = (PQ_PAIR, PQ_PAIR_SPKI, PQ_SIGN, PQ_SIGN_BARE, PQ_DECAP, PQ_DECAP_BARE)


def _post_quantum(seconds: float, delay: float) -> dict[str, float]:
    """ops/s of each of :data:`PQ_STEPS` in this process (32-byte RAW message, as the load
    generator's). ``delay``: seconds to wait, so that processes of a pool start together."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

    from hsmkms import pq

    time.sleep(delay)
    pkcs8 = (
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    message = bytes(range(32))
    dsa_seed, kem_seed = os.urandom(32), os.urandom(64)
    dsa = mldsa.MLDSA65PrivateKey.from_seed_bytes(dsa_seed)
    kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(kem_seed)
    _secret, ciphertext = kem.public_key().encapsulate()
    steps: dict[str, Callable[[], object]] = {
        PQ_PAIR: lambda: mlkem.MLKEM768PrivateKey.generate().private_bytes(*pkcs8),
        PQ_PAIR_SPKI: partial(pq.generate_pair, "ML_KEM_768"),
        PQ_SIGN: lambda: mldsa.MLDSA65PrivateKey.from_seed_bytes(dsa_seed).sign(message),
        PQ_SIGN_BARE: partial(dsa.sign, message),
        PQ_DECAP: lambda: mlkem.MLKEM768PrivateKey.from_seed_bytes(kem_seed).decapsulate(
            ciphertext
        ),
        PQ_DECAP_BARE: partial(kem.decapsulate, ciphertext),
    }
    out: dict[str, float] = {}
    for name, step in steps.items():
        step()
        out[name] = _rate(step, seconds, 10)
    return out


def post_quantum(seconds: float, processes: int) -> dict[str, tuple[float, float]]:
    """name -> (ops/s in one process, ops/s summed over ``processes`` at once, 0.0 when
    ``processes`` is 1) of the post-quantum steps in cryptography."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        one = pool.apply(_post_quantum, (seconds, 0.0))
    many: dict[str, float] = {}
    if processes > 1:
        with ctx.Pool(processes) as pool:
            # Spawned interpreters import at different speeds: each waits out the others.
            args = [(seconds, 1.0 - 0.1 * i) for i in range(processes)]
            for rates in pool.starmap(_post_quantum, args):
                for name, rate in rates.items():
                    many[name] = many.get(name, 0.0) + rate
    return {name: (rate, many.get(name, 0.0)) for name, rate in one.items()}


# The import steps measured by :func:`token_import`, by the name the report prints.
WRAPPING_KEY = "RSA_2048 wrapping key on the token"
REIMPORT = "reimport of 32 B (RSAES_OAEP_SHA_1)"
IMPORT_STEPS = (WRAPPING_KEY, REIMPORT)


def _token_import(home: str, seconds: float, delay: float) -> dict[str, float]:
    """ops/s of each of :data:`IMPORT_STEPS` in this process, on a wrapping key and a
    material of its own (another process's are its own too). The reimport first: each
    wrapping key made stays on the token, and an import searches the token for its own."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from hsmkms.config import Settings
    from hsmkms.home import ensure_home

    time.sleep(delay)
    settings = ensure_home(Settings.load(home=Path(home), env={}))
    os.environ["SOFTHSM2_CONF"] = str(settings.softhsm_conf_path)
    from hsmkms.hsm import open_token

    def made_id() -> bytes:
        return b"\x02" + os.urandom(32)  # 33 bytes: a wrapping key's id

    out: dict[str, float] = {}
    with open_token(settings.pkcs11_module, settings.token_label, settings.read_pin()) as token:
        wrapping = made_id()
        spki = token.create_wrapping_key(wrapping, "bench-wrap", 2048)
        public = serialization.load_der_public_key(spki)
        assert isinstance(public, rsa.RSAPublicKey)
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        encrypted = public.encrypt(os.urandom(32), oaep)
        context = b"hsmkms bench import\x00" + os.urandom(16)
        reimport = partial(
            token.import_key, wrapping, "RSAES_OAEP", "SHA1", encrypted, "SYMMETRIC_DEFAULT",
            None, context, lambda mid: "bench-imported",
        )  # fmt: skip
        reimport()  # the first import makes the token object; every later one finds it
        time.sleep(max(0.0, 1.0 - delay))  # then every process measures at once
        out[REIMPORT] = _rate(reimport, seconds, 10)
        made: list[bytes] = []

        def wrapping_key() -> None:
            made.append(made_id())
            token.create_wrapping_key(made[-1], "bench-wrap", 2048)

        out[WRAPPING_KEY] = _rate(wrapping_key, seconds)
        for wid in (wrapping, *made):  # not to slow the other processes' searches
            token.destroy_wrapping_key(wid)
    return out


def token_import(home: Path, seconds: float, processes: int) -> dict[str, tuple[float, float]]:
    """name -> (ops/s in one process, ops/s summed over ``processes`` at once, 0.0 when
    ``processes`` is 1) of the import operations' token steps."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        one = pool.apply(_token_import, (str(home), seconds, 0.0))
    many: dict[str, float] = {}
    if processes > 1:
        with ctx.Pool(processes) as pool:
            # As token_sign: the processes open the token 0.3 s apart, then measure together.
            args = [(str(home), seconds, 0.3 * i) for i in range(processes)]
            for rates in pool.starmap(_token_import, args):
                for name, rate in rates.items():
                    many[name] = many.get(name, 0.0) + rate
    return {name: (rate, many.get(name, 0.0)) for name, rate in one.items()}


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
