"""Data key pairs made on the host with cryptography (OpenSSL), and the specs KMS names.

Public keys leave as DER SubjectPublicKeyInfo (RFC 5280; RFC 3279/5480 for RSA and EC,
RFC 8410 for Ed25519); private keys as DER PKCS#8 PrivateKeyInfo, version 1 (RFC 5958).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from hsmkms import pq
from hsmkms.specs import DataKeyPairSpec, Family

log = logging.getLogger("hsmkms.keypairs")

# cryptography's curve for each curve name of hsmkms.specs (OpenSSL's names).
CURVES: dict[str, type[ec.EllipticCurve]] = {
    "secp256r1": ec.SECP256R1,
    "secp384r1": ec.SECP384R1,
    "secp521r1": ec.SECP521R1,
    "secp256k1": ec.SECP256K1,
}


def _private_key(spec: DataKeyPairSpec) -> PrivateKeyTypes:
    if spec.family is Family.RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.bits)
    if spec.family is Family.EC and spec.curve is not None:
        return ec.generate_private_key(CURVES[spec.curve.name]())
    if spec.family is Family.EDWARDS:
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unsupported key pair spec {spec}")


def encode_pair(private_key: PrivateKeyTypes) -> tuple[bytes, bytes]:
    """(SubjectPublicKeyInfo DER, PKCS#8 DER) of a private key."""
    public_der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return public_der, private_der


def generate(spec: str) -> tuple[bytes, bytes]:
    """A fresh pair for ``spec`` (a DataKeyPairSpec or its name) as (SPKI DER, PKCS#8 DER);
    ML-KEM's PKCS#8 is the 86-byte seed form AWS returns (hsmkms/pq.py)."""
    pair_spec = DataKeyPairSpec(spec)
    if pair_spec.family is Family.ML_KEM:
        return pq.generate_pair(pair_spec)
    return encode_pair(_private_key(pair_spec))


class PairPool:
    """A bounded stock of pre-generated pairs per spec, refilled by background threads.

    Each pair is handed out once and then forgotten; when the stock is empty the caller
    generates inline, so the pool only hides latency and never changes what is returned.
    The refill threads run at a lower CPU priority (nice +10, Linux: per thread), so that
    they use idle cores and give way to requests: RSA generation releases the GIL, so a
    refill and a request really do run side by side.
    """

    NICE = 10

    def __init__(
        self,
        specs: tuple[str, ...],
        size: int,
        make: Callable[[str], tuple[bytes, bytes]],
        threads: int = 1,
    ) -> None:
        self.size = size
        self._make = make
        self._stock: dict[str, queue.Queue[tuple[bytes, bytes]]] = {
            s: queue.Queue(maxsize=size) for s in specs
        }
        self._pending: dict[str, int] = dict.fromkeys(specs, 0)  # being generated now
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        if size > 0 and specs:
            for n in range(max(1, threads)):
                thread = threading.Thread(target=self._fill, name=f"pair-pool-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def take(self, spec: str) -> tuple[bytes, bytes] | None:
        stock = self._stock.get(spec)
        if stock is None:
            return None
        try:
            pair = stock.get_nowait()
        except queue.Empty:
            return None
        with self._wake:
            self._wake.notify()
        return pair

    def has_stock(self, spec: str) -> bool:
        stock = self._stock.get(spec)
        return stock is not None and not stock.empty()

    def stock(self) -> dict[str, int]:
        return {s: q.qsize() for s, q in self._stock.items()}

    def _claim(self) -> str | None:
        """The spec with the fewest pairs in stock or on the way, if any is short. Holds the
        lock, so that two refill threads never make the pair that would not fit."""
        short = {
            s: q.qsize() + self._pending[s]
            for s, q in self._stock.items()
            if q.qsize() + self._pending[s] < self.size
        }
        if not short:
            return None
        spec = min(short, key=short.__getitem__)
        self._pending[spec] += 1
        return spec

    def _fill(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.NICE)
        except (AttributeError, OSError):
            pass  # not Linux, or not allowed: refill at the normal priority
        while not self._stop.is_set():
            with self._wake:
                spec = self._claim()
                if spec is None:
                    self._wake.wait(1.0)
                    continue
            try:
                pair = self._make(spec)
                self._stock[spec].put_nowait(pair)
            except queue.Full:
                pass
            except Exception:  # keep refilling: requests generate inline meanwhile
                log.exception("pre-generating a %s key pair failed", spec)
                self._stop.wait(1.0)
            finally:
                with self._lock:
                    self._pending[spec] -= 1

    def close(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)
