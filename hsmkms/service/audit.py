"""The audit trail's one entry point (DESIGN decision 11): every request the operation layer
answers, allowed or refused, is handed to one sink from one place, :meth:`Service.dispatch`.

The sink is chosen where the Service is built (:func:`hsmkms.compose.build_service`): by
default :data:`NO_AUDIT`, which records nothing; with the ``audit_file`` or ``audit_stdout``
setting, :class:`hsmkms.audit.sinks.AuditTrail`, which writes one CloudTrail-shaped, hash-chained
JSON event per request (docs/audit.md). A sink sees the request (operation, caller, validated
parameters, the keys it used) and the AWS error it ended in, or its answer; it must never write
plaintext, ciphertext or secrets. A sink that cannot write and must (``audit_required``) raises
KMSInternalException from :meth:`~AuditSink.record`, and the client gets that instead.
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
        the operation's answer (with plaintext and ciphertext in it: never to be written).
        Raises KMSInternalException when the event cannot be written and must be."""
        ...

    def admit(self, req: Request) -> None:
        """Before ``req`` runs: raise the AWS error that refuses it (KMSInternalException) if
        the sink is known unable to write its event and must; else nothing."""
        ...

    def close(self) -> None:
        """Flush what was written to stable storage and let go of the files."""
        ...


class NoAudit:
    """The sink that records nothing."""

    def record(
        self, req: Request, error: errors.KMSError | None, answer: dict[str, Any] | None = None
    ) -> None:
        return None

    def admit(self, req: Request) -> None:
        return None

    def close(self) -> None:
        return None


NO_AUDIT: AuditSink = NoAudit()
