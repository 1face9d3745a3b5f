"""AWS KMS's request quotas, on demand (setting ``quotas``; off by default).

Placeholder: every charge is allowed. The operation layer calls :meth:`Quotas.charge` once
per request with no key (its operation's quota) and once per key it is allowed to use (the
key spec's quota), and :meth:`Quotas.refund` when a request runs again from the start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hsmkms.config import Settings
    from hsmkms.service.core import Request
    from hsmkms.store import KeyRecord


class Quotas:
    """No quotas: every request goes through."""

    def charge(self, req: Request, key: KeyRecord | None) -> None:
        return None

    def refund(self, req: Request) -> None:
        req.charges.clear()

    def close(self) -> None:
        return None


def from_settings(settings: Settings) -> Quotas:
    return Quotas()
