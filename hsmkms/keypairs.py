"""Data key pairs made on the host with cryptography (OpenSSL), and the specs KMS names.

Public keys leave as DER SubjectPublicKeyInfo (RFC 5280; RFC 3279/5480 for RSA and EC,
RFC 8410 for Ed25519); private keys as DER PKCS#8 PrivateKeyInfo, version 1 (RFC 5958).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

RSA_BITS: Final = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
EC_CURVES: Final[dict[str, type[ec.EllipticCurve]]] = {
    "ECC_NIST_P256": ec.SECP256R1,
    "ECC_NIST_P384": ec.SECP384R1,
    "ECC_NIST_P521": ec.SECP521R1,
    "ECC_SECG_P256K1": ec.SECP256K1,
}
SUPPORTED_SPECS: Final = (*RSA_BITS, *EC_CURVES, "ECC_NIST_EDWARDS25519")


def _private_key(spec: str) -> PrivateKeyTypes:
    if spec in RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS[spec])
    if spec in EC_CURVES:
        return ec.generate_private_key(EC_CURVES[spec]())
    if spec == "ECC_NIST_EDWARDS25519":
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
    """A fresh pair for ``spec`` as (SPKI DER, PKCS#8 DER)."""
    return encode_pair(_private_key(spec))


class PairPool:
    """A bounded stock of pre-generated pairs per spec, refilled by a background thread.

    Each pair is handed out once and then forgotten; when the stock is empty the caller
    generates inline, so the pool only hides latency and never changes what is returned.
    """

    def __init__(
        self, specs: tuple[str, ...], size: int, make: Callable[[str], tuple[bytes, bytes]]
    ) -> None:
        self.size = size
        self._make = make
        self._stock: dict[str, queue.Queue[tuple[bytes, bytes]]] = {
            s: queue.Queue(maxsize=size) for s in specs
        }
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if size > 0 and specs:
            self._thread = threading.Thread(target=self._fill, name="pair-pool", daemon=True)
            self._thread.start()

    def take(self, spec: str) -> tuple[bytes, bytes] | None:
        stock = self._stock.get(spec)
        if stock is None:
            return None
        try:
            pair = stock.get_nowait()
        except queue.Empty:
            return None
        self._wake.set()
        return pair

    def stock(self) -> dict[str, int]:
        return {s: q.qsize() for s, q in self._stock.items()}

    def _fill(self) -> None:
        while not self._stop.is_set():
            short = [s for s, q in self._stock.items() if not q.full()]
            if not short:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            for spec in short:
                if self._stop.is_set():
                    return
                try:
                    self._stock[spec].put_nowait(self._make(spec))
                except queue.Full:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
