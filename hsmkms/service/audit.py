"""The audit trail's one entry point (DESIGN decision 11): every request the operation layer
answers, allowed or refused, is handed to one sink from one place, :meth:`Service.dispatch`.

Today the sink records nothing (:data:`NO_AUDIT`); the audit trail fills it with
CloudTrail-shaped events. A sink sees the request (operation, caller, validated parameters)
and the AWS error it ended in, if any; it must never write plaintext, ciphertext or secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hsmkms import errors
    from hsmkms.service.core import Request


class AuditSink(Protocol):
    def record(
        self, req: Request, error: errors.KMSError | None, answer: dict[str, Any] | None = None
    ) -> None:
        """One request's outcome: ``error`` is None when it succeeded, and ``answer`` is then
        the operation's answer (with plaintext and ciphertext in it: never to be written)."""
        ...


class NoAudit:
    """The sink that records nothing."""

    def record(
        self, req: Request, error: errors.KMSError | None, answer: dict[str, Any] | None = None
    ) -> None:
        return None


NO_AUDIT: AuditSink = NoAudit()
