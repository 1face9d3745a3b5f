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

from hsmkms.specs import DataKeyPairSpec, Family

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

# True while a call runs on the event loop: slow steps must raise WouldBlock instead.
NO_WAIT: ContextVar[bool] = ContextVar("hsmkms_no_wait", default=False)


class WouldBlock(Exception):
    """A call running inline reached a slow step before any side effect: run it on a thread."""


def runs_quickly(svc: Service, operation: str, params: dict[str, Any]) -> bool:
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


def check_may_wait() -> None:
    if NO_WAIT.get():
        raise WouldBlock()
