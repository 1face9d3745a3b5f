"""Post-quantum keys on the host: ML-KEM (FIPS 203) and ML-DSA (FIPS 204) in cryptography.

No PKCS#11 token here offers them (SoftHSM2 2.6.1 has no ML-KEM or ML-DSA mechanism, and
python-pkcs11 0.10.1 does not know PKCS#11 3.2's), so their private keys are seeds made from
the token's random number generator, kept sealed under a token master key (service/
host_keys.py) and expanded here for one operation (DESIGN decision 13). cryptography 50
(OpenSSL 3.5's implementations) does ML-KEM-768/1024 and ML-DSA-44/65/87, from seeds, with
the PKCS#8 seed format AWS returns (86 bytes for ML-KEM, 54 for ML-DSA).

ML-KEM-512 is refused (:data:`UNSUPPORTED`): cryptography 50 lacks it, and the compiled
wheels on PyPI that have it (pqcrypto 1.0.0 and mlkem 0.2.0, both Rust) make keys only from
their own randomness, so they can neither produce AWS's seed-format private key nor reload
one, and both say of themselves that they are unaudited; liboqs is not packaged for Debian 12
and liboqs-python would build it from downloaded source. A pure-Python ML-KEM is not
constant-time, so not an option.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

from hsmkms.specs import DataKeyPairSpec, KeySpec

UNSUPPORTED: dict[str, str] = {
    "ML_KEM_512": (
        "ML_KEM_512 is not supported by hsmkms: the HSM has no ML-KEM mechanism, and no "
        "constant-time ML-KEM-512 that keeps AWS's seed-format private key is available to "
        "it (cryptography/OpenSSL offer ML-KEM-768 and ML-KEM-1024). Use ML_KEM_768 or "
        "ML_KEM_1024."
    )
}

_PRIVATE: dict[str, Any] = {
    "ML_KEM_768": mlkem.MLKEM768PrivateKey,
    "ML_KEM_1024": mlkem.MLKEM1024PrivateKey,
    "ML_DSA_44": mldsa.MLDSA44PrivateKey,
    "ML_DSA_65": mldsa.MLDSA65PrivateKey,
    "ML_DSA_87": mldsa.MLDSA87PrivateKey,
}
# Seed lengths: ML-KEM d || z (FIPS 203 section 7.1), ML-DSA xi (FIPS 204 section 6.1).
SEED_BYTES = {
    "ML_KEM_768": 64,
    "ML_KEM_1024": 64,
    "ML_DSA_44": 32,
    "ML_DSA_65": 32,
    "ML_DSA_87": 32,
}
# Encapsulation ciphertexts (FIPS 203 table 3): a Decapsulate of another length is refused.
CIPHERTEXT_BYTES = {"ML_KEM_768": 1088, "ML_KEM_1024": 1568}
MU_BYTES = 64

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
_PKCS8 = (
    serialization.Encoding.DER,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
)


def supported(spec: KeySpec | DataKeyPairSpec | str) -> bool:
    return str(spec) in _PRIVATE


def from_seed(spec: KeySpec | DataKeyPairSpec | str, seed: bytes | bytearray) -> Any:
    """The private key of ``spec`` expanded from its seed."""
    return _PRIVATE[str(spec)].from_seed_bytes(bytes(seed))


def public_spki(private: Any) -> bytes:
    return bytes(private.public_key().public_bytes(*_SPKI))


def generate_pair(spec: DataKeyPairSpec | str) -> tuple[bytes, bytes]:
    """An ML-KEM data key pair: (SPKI DER, PKCS#8 DER in the seed format)."""
    private = _PRIVATE[str(spec)].generate()
    return public_spki(private), bytes(private.private_bytes(*_PKCS8))


def sign(private: Any, message: bytes, external_mu: bool) -> bytes:
    """ML-DSA (pure, empty context) over ``message``, or over ``message`` as FIPS 204's mu."""
    return bytes(private.sign_mu(message) if external_mu else private.sign(message))


def verify(public_der: bytes, message: bytes, external_mu: bool, signature: bytes) -> bool:
    public: Any = serialization.load_der_public_key(public_der)
    try:
        if external_mu:
            public.verify_mu(signature, message)
        else:
            public.verify(signature, message)
        return True
    except Exception:  # InvalidSignature, or a malformed signature (ValueError)
        return False


def encapsulate(public_der: bytes) -> tuple[bytes, bytes]:
    """(shared secret, ciphertext) for the ML-KEM public key."""
    public: Any = serialization.load_der_public_key(public_der)
    secret, ciphertext = public.encapsulate()
    return bytes(secret), bytes(ciphertext)


def decapsulate(private: Any, ciphertext: bytes) -> bytes:
    """The shared secret; a ciphertext of the right length but not ours gives FIPS 203's
    implicit-rejection secret, as AWS documents (the caller checks the length)."""
    return bytes(private.decapsulate(ciphertext))
