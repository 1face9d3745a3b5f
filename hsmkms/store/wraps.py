"""The store's side of the wrapped master-key mode (DESIGN decision 9): domain keys, and each
key material wrapped under one. The store never holds an unwrapped material; a wrap is opened
only by its domain key, which never leaves the token.

A domain key is ``active`` (new materials are wrapped under it; one at a time), ``retiring``
(a rotation moves its materials to the active one; they still open under it meanwhile),
``retired`` (no material is wrapped under it any more; its token object is being destroyed)
or ``destroyed``. A wrap is written only under the active domain key (checked in the same
transaction), so a rotation that found no material left under a retiring key can retire it
knowing none will come.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

ACTIVE, RETIRING, RETIRED, DESTROYED = "active", "retiring", "retired", "destroyed"


@dataclass(frozen=True)
class DomainKeyRecord:
    """A domain key: its CKA_ID (64 hex), its state, when it was made."""

    domain_id: str
    state: str
    created_at: datetime


@dataclass(frozen=True)
class WrappedMaterialRecord:
    """One key material, wrapped: the KMS key it was made for, its KeySpec (``SYMMETRIC_DEFAULT``
    for an AES-256 master key; HMAC, RSA, ECC), its one private-key use (sign, decrypt,
    derive; None for secret keys), the domain key, how it was wrapped and the wrap, an
    asymmetric key's SPKI DER, and when it was made."""

    material_id: str
    key_id: str
    spec: str
    use: str | None
    domain_id: str
    mechanism: str
    wrapped: bytes
    public_key: bytes | None
    created_at: datetime


@dataclass(frozen=True)
class Rewrap:
    """A wrap moved from one domain key to another (compare-and-set on ``old_domain``)."""

    material_id: str
    old_domain: str
    new_domain: str
    mechanism: str
    wrapped: bytes


class WrapStore(ABC):
    """What the wrapped mode needs from the store."""

    @abstractmethod
    def domain_keys(self) -> list[DomainKeyRecord]:
        """Every domain key not destroyed, oldest first."""

    @abstractmethod
    def add_domain_key(self, domain_id: str, created_at: datetime, *, first: bool = False) -> bool:
        """``domain_id`` becomes the active domain key; the one active before is retiring.
        ``first``: only if no domain key is active (in one transaction; False when one is:
        concurrent first CreateKeys on a fresh home agree on one domain key)."""

    @abstractmethod
    def set_domain_key_state(self, domain_id: str, state: str) -> None: ...

    @abstractmethod
    def retire_domain_key(self, domain_id: str) -> bool:
        """A retiring domain key under which no material is wrapped becomes retired (in one
        transaction); False when a wrap is still under it, or it is not retiring."""

    @abstractmethod
    def put_wrap(self, wrap: WrappedMaterialRecord) -> bool:
        """Store a new wrap, if its domain key is the active one (False: it is not any more,
        wrap under the active one). Conflict if the material id is taken."""

    @abstractmethod
    def get_wrap(self, material_id: str) -> WrappedMaterialRecord | None: ...

    @abstractmethod
    def delete_wrap(self, material_id: str) -> bool: ...

    @abstractmethod
    def wraps(
        self, *, after: str = "", limit: int = 1000, domain_id: str | None = None
    ) -> list[WrappedMaterialRecord]:
        """A page of wraps (under ``domain_id`` only, if given) by material id after ``after``."""

    @abstractmethod
    def count_wraps(self, domain_id: str | None = None) -> int: ...

    @abstractmethod
    def rewrap(self, moves: Sequence[Rewrap]) -> int:
        """Apply the moves whose wrap is still under their old domain key (one transaction);
        how many were applied."""
