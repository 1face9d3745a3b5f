"""AWS KMS's request quotas, on demand (setting ``quotas``; off by default; docs/quotas.md).

The operation layer calls :meth:`Quotas.charge` once per request with no key (the
operation's own quota, GenerateRandom's share of the symmetric quota, GenerateDataKeyPair's
per-spec quota) and once per key it is allowed to use (the shared quota of the key's type,
for the cryptographic operations that count in it), and :meth:`Quotas.refund` when a request
runs again from the start. A request over any quota raises ThrottlingException (HTTP 400,
AWS's words) and gives back what it took: a refused request costs nothing and has done
nothing (it is refused before its handler runs, or at its first use of a key, before any
token call or store write).

Buckets are per (caller's account, Region), as AWS's quotas are (a cross-account request
counts against the caller's account), hold one second of their rate, and live in
``<home>/quotas.bin``, shared by every process on the home (:mod:`.quota_buckets`). With the
setting off, :class:`Quotas` does nothing at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING

from hsmkms import errors
from hsmkms.config import PAIR_QUOTA, ConfigError, QuotaSetting
from hsmkms.service import quota_table
from hsmkms.service.quota_buckets import Bucket, SharedBuckets

if TYPE_CHECKING:
    from hsmkms.config import Settings
    from hsmkms.service.core import Request
    from hsmkms.store import KeyRecord

# AWS KMS's ThrottlingException message (AWS KMS Developer Guide, "Throttling AWS KMS requests").
MESSAGE = (
    "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
)
FILE_NAME = "quotas.bin"
_PAIR_OPERATIONS = ("GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext")
_CACHE_MAX = 1 << 16

# A quota a request counts in: (bucket name, Region; "" for the request's own).
Quota = tuple[str, str]

_UNMETERED: ContextVar[bool] = ContextVar("hsmkms_unmetered", default=False)


@contextmanager
def unmetered() -> Iterator[None]:
    """Requests dispatched in this context are not charged: an operator's own work (applying
    a seed file at start-up), which no client's quota should pay for."""
    token = _UNMETERED.set(True)
    try:
        yield
    finally:
        _UNMETERED.reset(token)


class Quotas:
    """No quotas: every request goes through."""

    def charge(self, req: Request, key: KeyRecord | None) -> None:
        return None

    def refund(self, req: Request) -> None:
        req.charges.clear()

    def close(self) -> None:
        return None


class Metered(Quotas):
    """The quotas of ``setting``, in the shared buckets of ``buckets``; ``region`` is the
    Region of a request whose caller names none."""

    def __init__(self, setting: QuotaSetting, buckets: SharedBuckets, region: str) -> None:
        self.setting = setting
        self.buckets = buckets
        self.region = region
        self._cache: dict[tuple[str, str, str], Bucket | None] = {}
        self._by_operation: dict[str, tuple[Quota, ...]] = {}
        self._shared: dict[tuple[str, str], str | None] = {}

    def rate(self, region: str, name: str) -> float | None:
        """Requests per second allowed to bucket ``name`` in ``region`` (None: no limit)."""
        rate = self.setting.rates.get(name)
        if rate is None and self.setting.profile == "aws":
            rate = quota_table.aws_rate(region, name)
        return rate

    def charge(self, req: Request, key: KeyRecord | None) -> None:
        quotas: tuple[Quota, ...] | None
        if key is None:
            quotas = self._by_operation.get(req.operation)
            if quotas is None:
                quotas = self._operation_quotas(req)
        else:
            shared = self._shared_quota(req.operation, key.key_spec)
            quotas = () if shared is None else ((shared, ""),)
        if not quotas or _UNMETERED.get():
            return
        caller = req.caller
        home = caller.region or self.region
        wanted = []
        for name, region in quotas:
            bucket = self._bucket(caller.account_id, region or home, name)
            # A shared quota once a request (ReEncrypt's two keys of one type).
            if bucket is not None and (key is None or bucket not in req.charges):
                wanted.append(bucket)
        if not wanted:
            return
        if not self.buckets.take(wanted):
            self.refund(req)
            raise errors.ThrottlingException(MESSAGE)
        req.charges.extend(wanted)

    def refund(self, req: Request) -> None:
        if req.charges:
            self.buckets.give(req.charges)
            req.charges.clear()

    def close(self) -> None:
        self.buckets.close()

    def _operation_quotas(self, req: Request) -> tuple[Quota, ...]:
        """The quotas ``req`` counts in before it uses any key, as (name, Region; "": the
        request's): its operation's own, GenerateRandom's share of the symmetric quota,
        GenerateDataKeyPair's per-spec quota, what AWS counts in another Region (only those
        with a rate: whether one has does not depend on the Region)."""
        operation = req.operation
        quotas: list[Quota] = [(operation, "")]
        varies = False  # with the request's members
        if operation == "GenerateRandom":
            quotas.append(("symmetric", ""))
        elif operation in _PAIR_OPERATIONS:
            quotas.append((PAIR_QUOTA + str(req.params.get("KeyPairSpec")), ""))
            varies = True
        elsewhere = quota_table.ELSEWHERE.get(operation)
        if elsewhere is not None:
            member, name, times = elsewhere
            quotas += [(name, str(req.params.get(member)))] * times
            varies = True
        found = tuple(q for q in quotas if self.rate(self.region, q[0]) is not None)
        if not varies:  # the same for every request of the operation
            self._by_operation[operation] = found
        return found

    def _shared_quota(self, operation: str, key_spec: str) -> str | None:
        """The shared quota ``operation`` counts in with a key of ``key_spec``, if any."""
        try:
            return self._shared[operation, key_spec]
        except KeyError:
            pass
        shared = quota_table.shared_quota(key_spec)
        if shared is not None and operation not in quota_table.SHARED_OPERATIONS[shared]:
            shared = None
        self._shared[operation, key_spec] = shared
        return shared

    def _bucket(self, account: str, region: str, name: str) -> Bucket | None:
        """The bucket of quota ``name`` for (``account``, ``region``), None if unlimited."""
        ident = (account, region, name)
        try:
            return self._cache[ident]
        except KeyError:
            pass
        rate = self.rate(region, name)
        bucket = None if rate is None else Bucket.named("/".join(ident), rate)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[ident] = bucket
        return bucket


def from_settings(settings: Settings) -> Quotas:
    """The ``quotas`` setting's quotas, their buckets in ``<home>/quotas.bin``."""
    setting = settings.quota_setting()
    if not setting:
        return Quotas()
    path = Path(settings.home) / FILE_NAME
    try:
        buckets = SharedBuckets(path)
    except OSError as exc:
        raise ConfigError(
            f"quotas: cannot open the bucket file {path}: {exc.strerror or exc}"
        ) from None
    return Metered(setting, buckets, settings.region)
