"""Token and store faults as AWS's errors: one table, one applier (the shape of httpx's
``_exceptions.map_exceptions``).

Each row names a fault of the layers below (:mod:`hsmkms.hsm`, :mod:`hsmkms.store`), the AWS
error a client gets for it, the message, and how the server log records it. The first row
whose fault class matches wins, so a subclass stands above its base. Messages never carry key
material, and a row that logs no traceback is a condition that passes (a busy store, a full
disk), not a bug: one line each keeps the log readable under load. :meth:`Service.dispatch`
applies it: ``except FAULTS as fault: raise translate(fault, operation)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from hsmkms import errors, hsm
from hsmkms.store import (
    StateChanged,
    StoreBusy,
    StoreError,
    StoreFull,
    StoreUnavailable,
)

log = logging.getLogger("hsmkms.service")

INVALID_CIPHERTEXT = (
    "The ciphertext is not valid, was altered, or was encrypted under another encryption context."
)

# How a fault is logged: not at all, one line (the fault's text, no traceback), or the
# whole traceback (a failure nobody foresaw, to be read by whoever runs the server).
Log = Literal["none", "warning", "error", "traceback"]


@dataclass(frozen=True)
class Fault:
    fault: type[Exception]
    error: type[errors.KMSError]
    message: str  # "{detail}" is the fault's own text (token layer's, never key material)
    log: Log = "none"
    layer: str = ""  # what failed, in a traceback's log line: "token" or "store"


TABLE: tuple[Fault, ...] = (
    # -- the token ------------------------------------------------------------------------
    Fault(hsm.IntegrityError, errors.InvalidCiphertextException, INVALID_CIPHERTEXT),
    # A call past its deadline (hsm/deadline.py): a hung HSM, or one slower than the setting.
    Fault(
        hsm.TokenTimeout,
        errors.DependencyTimeoutException,
        "The HSM did not answer in time; retry later.",
        "warning",
    ),
    Fault(
        hsm.TokenUnavailable,
        errors.KeyUnavailableException,
        "The HSM that holds the key material is not available now; retry later.",
    ),
    Fault(
        hsm.KeyNotFound,
        errors.KeyUnavailableException,
        "The key material of this KMS key is missing from the HSM.",
    ),
    Fault(
        hsm.MechanismUnsupported,
        errors.UnsupportedOperationException,
        "The HSM cannot do this: {detail}",
    ),
    Fault(
        hsm.TokenFull,
        errors.KMSInternalException,
        "The HSM has no room to store a new key. Nothing was created; retry when space has "
        "been freed.",
        "error",
    ),
    # Logged once by the token layer; a traceback per request would drown the log.
    Fault(
        hsm.LoginFailed,
        errors.KeyUnavailableException,
        "The HSM refused hsmkms's login; an operator must restart hsmkms with the right PIN.",
    ),
    Fault(
        hsm.TokenError,
        errors.KMSInternalException,
        "The HSM failed; see the server log.",
        "traceback",
        "token",
    ),
    # -- the store ------------------------------------------------------------------------
    Fault(
        StoreBusy,
        errors.DependencyTimeoutException,
        "The metadata store is busy: another writer held its lock too long. Nothing was "
        "changed; retry the request.",
        "warning",
    ),
    Fault(
        StoreFull,
        errors.KMSInternalException,
        "The metadata store is out of disk space. Nothing was changed; retry when space has "
        "been freed.",
        "error",
    ),
    Fault(
        StoreUnavailable,
        errors.KMSInternalException,
        "The metadata store cannot be read or written now. Nothing was changed; retry later.",
        "error",
    ),
    # Handlers that write conditionally decide again on a lost race; one that did not still
    # must not answer a stale decision.
    Fault(
        StateChanged,
        errors.KMSInvalidStateException,
        "The KMS key changed while this request ran; describe it and retry.",
    ),
    Fault(
        StoreError,
        errors.KMSInternalException,
        "The metadata store failed; see the server log.",
        "traceback",
        "store",
    ),
)

_LEVELS = {"warning": logging.WARNING, "error": logging.ERROR}
# Every fault the table names, for an ``except`` clause.
FAULTS: tuple[type[Exception], ...] = tuple(row.fault for row in TABLE)


def translate(exc: Exception, operation: str) -> errors.KMSError:
    """The AWS error for a token or store fault, logged as its row says."""
    row = next(r for r in TABLE if isinstance(exc, r.fault))
    if row.log == "traceback":
        log.error("%s failure in %s", row.layer, operation, exc_info=exc)
    elif row.log != "none":
        log.log(_LEVELS[row.log], "%s refused: %s", operation, exc)
    return row.error(row.message.format(detail=exc))
