"""Which calls may run on the server's event loop: the quick ones.

A thread hop costs ~100 us of a ~300 us request on 2 cores, so the wire layer runs quick
operations inline (see :meth:`hsmkms.kms.KMS.try_quick`). Quick means: no store write (SQLite
commits wait for the disk), no RSA generation (up to a second), no token-side key pair
generation; what is left is cached metadata, one or two AES-GCM calls on the token, and EC
pair generation on the host (< 0.5 ms; it holds the GIL on a thread just the same).

A quick call that finds it would have to wait after all raises :class:`WouldBlock` before
doing anything, and the caller runs it again on a thread: the RSA pool ran dry between the
check and the take, or the master key's token handle is not cached in this process yet (a key
another worker created: finding it searches every key on the token, 1-2 s at 10,000 keys;
see ``Service.check_handle``). The thread's search holds no lock that inline calls need, so
the event loop keeps serving the keys it knows meanwhile.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from hsmkms.service.core import named_key_id
from hsmkms.specs import DataKeyPairSpec, Family, KeySpec

if TYPE_CHECKING:
    from hsmkms.service import Service

QUICK_OPERATIONS = frozenset(
    {
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateRandom",
        # Asymmetric and HMAC keys: an RSA private-key step raises WouldBlock (to a thread)
        "Sign",
        "Verify",
        "GetPublicKey",
        "GenerateMac",
        "VerifyMac",
        "DeriveSharedSecret",
        "Encapsulate",
        "Decapsulate",
    }
)
PAIR_OPERATIONS = frozenset({"GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"})
# The operations that read key records through the per-process cache (service/cache.py).
DATA_PLANE = QUICK_OPERATIONS | PAIR_OPERATIONS

# Private-key steps that take longer than a thread hop (~100 us) several times over are no
# work for the event loop: they go to a thread. Measured on SoftHSM2 2.6.1 (one call, 2
# cores): sign RSA_2048 583 us (RSA_4096 ~5 ms), P-384 603 us, secp256k1 312 us, P-521
# 243 us (derive 389 us); ML-DSA on the host 0.4-1 ms; inline: P-256 57 us (derive 212 us),
# Ed25519 165 us, HMAC 18 us, ML-KEM tens of microseconds.
SLOW_SPECS = frozenset(
    {
        KeySpec.RSA_2048,
        KeySpec.RSA_3072,
        KeySpec.RSA_4096,
        KeySpec.ECC_NIST_P384,
        KeySpec.ECC_NIST_P521,
        KeySpec.ECC_SECG_P256K1,
        KeySpec.ML_DSA_44,
        KeySpec.ML_DSA_65,
        KeySpec.ML_DSA_87,
    }
)
# The quick operations that may use a key's private key, and the member naming that key.
_PRIVATE_STEP = {
    "Sign": "KeyId",
    "DeriveSharedSecret": "KeyId",
    "Decrypt": "KeyId",
    "ReEncrypt": "SourceKeyId",
}

# True while a call runs on the event loop: slow steps must raise WouldBlock instead.
NO_WAIT: ContextVar[bool] = ContextVar("hsmkms_no_wait", default=False)


class WouldBlock(Exception):
    """A call running inline reached a slow step before any side effect: run it on a thread."""


def runs_quickly(svc: Service, operation: str, params: dict[str, Any]) -> bool:
    if params.get("Recipient") is not None:
        return False  # verifying an attestation document: several ECDSA P-384 checks, ~ms
    if operation in _PRIVATE_STEP:
        return not _slow_key(svc, params.get(_PRIVATE_STEP[operation]))
    if operation in QUICK_OPERATIONS:
        return True
    if operation in PAIR_OPERATIONS:
        try:
            spec = DataKeyPairSpec(params.get("KeyPairSpec", ""))
        except ValueError:
            return True  # refused at once: no pair is made
        if spec in svc.masters.pair_specs:
            return False
        if spec.family is Family.RSA:
            return svc.pool.has_stock(spec)
        return True
    return False


def _slow_key(svc: Service, name: Any) -> bool:
    """Whether the key a request names by id or ARN has a slow private key, by the cached
    record: such a call goes to a thread at once instead of stopping inline at WouldBlock
    (which redid its checks; ~30 us of an RSA Sign). An alias, or a key this process has not
    cached, is decided inline as before."""
    key_id = named_key_id(name)
    if key_id is None:
        return False
    key = svc.store.peek_key(key_id)
    return key is not None and key.key_spec in SLOW_SPECS


def check_may_wait() -> None:
    if NO_WAIT.get():
        raise WouldBlock()
