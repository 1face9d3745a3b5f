"""The metadata store's records and interface. No key material is ever stored here.

Records are immutable values; a change is a new record written through the store. Times are
timezone-aware UTC datetimes in Python and epoch seconds (REAL) in SQL, which both SQLite and
PostgreSQL hold without dialect-specific types.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime


class StoreError(Exception):
    """The store failed (locked past its timeout, disk full, corrupt)."""


class Conflict(StoreError):
    """A unique constraint was violated (e.g. an alias name already taken)."""


class StateChanged(StoreError):
    """A conditional write found the record changed since it was read (another request, maybe
    in another process, got there first). Nothing was written; read again and decide again."""


class StoreUnavailable(StoreError):
    """The store cannot serve now, and the request changed nothing: retrying later may work."""


class StoreBusy(StoreUnavailable):
    """Another writer held the store's write lock past the busy timeout."""


class StoreFull(StoreUnavailable):
    """The store's disk (or file size limit) is full: no write can be made until space returns."""


def key_ref(key_id: str, region: str) -> str:
    """The store's name for the record of ``key_id`` in ``region``: the key id itself, but for
    a multi-Region key (``mrk-...``), whose primary and replicas share one key id and one set
    of materials, ``<key id>~<region>``: one record per Region (its policy, state, tags,
    aliases and grants), the materials under the bare key id."""
    return f"{key_id}~{region}" if key_id.startswith("mrk-") else key_id


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    account_id: str
    region: str
    key_usage: str
    key_spec: str
    origin: str
    key_manager: str
    state: str
    created_at: datetime
    policy: str
    description: str = ""
    current_material_id: str | None = None
    deletion_date: datetime | None = None
    pending_window_days: int | None = None
    multi_region: bool = False
    rotation_enabled: bool = False
    rotation_period_days: int | None = None
    next_rotation: datetime | None = None
    # The deletion sweep claimed this PendingDeletion key (Store.claim_for_deletion): its
    # material is being destroyed, and nothing may change it any more.
    deletion_claimed: bool = False
    # A multi-Region key's primary Region (the same in every record of the key); None for a
    # single-Region key.
    primary_region: str | None = None
    # A key in a custom key store: the store's id, and an external key store's key id.
    custom_key_store_id: str | None = None
    xks_key_id: str | None = None

    @property
    def arn(self) -> str:
        return f"arn:aws:kms:{self.region}:{self.account_id}:key/{self.key_id}"

    @property
    def ref(self) -> str:
        """This record's name in the store (:func:`key_ref`): what the per-Region methods
        (update, delete, tags, aliases, grants) take."""
        return key_ref(self.key_id, self.region)

    @property
    def is_replica(self) -> bool:
        return self.primary_region is not None and self.primary_region != self.region


@dataclass(frozen=True)
class MaterialRecord:
    """One key material of a KMS key: a token object with CKA_ID = id (a master key, a
    private key, an HMAC key)."""

    material_id: str  # 64 lowercase hex characters (32 bytes)
    key_id: str
    created_at: datetime
    rotation_type: str | None = None  # None for the first material; AUTOMATIC / ON_DEMAND
    public_key: bytes | None = None  # an asymmetric key's SubjectPublicKeyInfo DER
    # A post-quantum key's private seed, sealed under the token master key ``material_id``
    # (service/host_keys.py); None for every key whose private key is a token object.
    sealed_private: bytes | None = None
    # Imported material (Origin EXTERNAL): IMPORTED, PENDING_IMPORT (deleted or expired), or
    # EXPIRING (the expiry sweep claimed it and is destroying it; reads PENDING_IMPORT);
    # None for material the token generated.
    import_state: str | None = None
    pending_rotation: bool = False  # imported as NEW_KEY_MATERIAL, waits for RotateKeyOnDemand
    expiration_model: str | None = None
    valid_to: datetime | None = None
    description: str | None = None


# What the records of one multi-Region key share, kept equal in all of them by the store
# (besides the key id, spec, usage and origin, which never change).
SHARED_COLUMNS = frozenset(
    {"current_material_id", "rotation_enabled", "rotation_period_days", "next_rotation"}
)

# MaterialRecord.import_state of material the expiry sweep has claimed (see above).
EXPIRING = "EXPIRING"


from hsmkms.store.records import (  # noqa: E402  (re-exported: the records of the store)
    AliasRecord,
    CustomKeyStoreRecord,
    GrantRecord,
    ImportParametersRecord,
    KeyUsageRecord,
    LeaseRecord,
)
from hsmkms.store.wraps import WrapStore  # noqa: E402


class Store(WrapStore, ABC):
    """What the operation layer needs from a metadata store. Every write is durable on return."""

    # keys
    @abstractmethod
    def create_key(
        self, key: KeyRecord, material: MaterialRecord | None, tags: dict[str, str]
    ) -> None:
        """A new key with its first material (None: a key awaiting imported material)."""

    @abstractmethod
    def get_key(self, key_id: str) -> KeyRecord | None:
        """The record a ref names (:attr:`KeyRecord.ref`); a bare multi-Region key id names
        its primary's record."""

    @abstractmethod
    def keys_in_family(self, key_id: str) -> list[KeyRecord]:
        """Every record of ``key_id`` (a multi-Region key's primary and replicas; a
        single-Region key's one record), by Region."""

    @abstractmethod
    def create_replica(self, replica: KeyRecord, tags: dict[str, str]) -> None:
        """A multi-Region key's record in another Region: its materials are the key's own
        (:class:`Conflict` when that Region has one)."""

    @abstractmethod
    def set_primary_region(self, key_id: str, region: str) -> None:
        """Make the record in ``region`` the primary of every record of ``key_id``."""

    @abstractmethod
    def update_key(
        self, key_id: str, *, if_state: tuple[str, ...] | None = None, **changes: object
    ) -> KeyRecord:
        """Write ``changes``; with ``if_state``, only while the key's state is one of those
        (else :class:`StateChanged`): a state transition decided on a read must not overwrite
        one that another request made since. ``key_id`` is a ref (:attr:`KeyRecord.ref`);
        the properties a multi-Region key shares (:data:`SHARED_COLUMNS`) are written to
        every record of the key."""

    @abstractmethod
    def list_keys(
        self, account_id: str, region: str, after: str | None, limit: int
    ) -> list[KeyRecord]: ...

    @abstractmethod
    def delete_key(self, key_id: str, *, tombstone: bool = True) -> None:
        """Remove the record ``key_id`` (a ref) with its aliases, tags and grants, and, when
        no other record of the key remains, its materials and import parameters.
        ``tombstone=False`` (a seed run undoing the keys it made): leave no trace that it
        existed, so that the same KeyId can be made again; a key that ever made a blob needs
        its tombstone (written with the last record)."""

    @abstractmethod
    def was_deleted(self, key_id: str) -> bool:
        """Whether a key with this id existed and was deleted (its tombstone)."""

    @abstractmethod
    def keys_due_for_deletion(self, now: datetime) -> list[KeyRecord]:
        """PendingDeletion keys whose waiting period has ended by ``now`` (claimed or not)."""

    @abstractmethod
    def claim_for_deletion(self, key_id: str, now: datetime) -> bool:
        """In one transaction: mark the key claimed by the deletion sweep, only if it is still
        PendingDeletion and due by ``now`` (a key a sweep claimed before and crashed on stays
        claimable). False: it is not (a CancelKeyDeletion got there first). Once claimed,
        every conditional write that expects PendingDeletion fails with StateChanged, and the
        record reads ``deletion_claimed``."""

    # last use (GetKeyLastUsage)
    @abstractmethod
    def record_key_usage(self, uses: list[KeyUsageRecord]) -> None:
        """Keep each use unless the record holds a later one (several processes write)."""

    @abstractmethod
    def get_key_usage(self, key_id: str) -> KeyUsageRecord | None: ...

    @abstractmethod
    def get_usage_tracking_start(self) -> datetime:
        """When this store began recording uses (its schema gained them)."""

    # custom key stores
    @abstractmethod
    def create_custom_key_store(self, record: CustomKeyStoreRecord) -> None:
        """:class:`Conflict` when the name is taken in the account and Region."""

    @abstractmethod
    def get_custom_key_store(self, store_id: str) -> CustomKeyStoreRecord | None: ...

    @abstractmethod
    def list_custom_key_stores(
        self, account_id: str, region: str
    ) -> list[CustomKeyStoreRecord]: ...

    @abstractmethod
    def update_custom_key_store(self, store_id: str, **changes: object) -> CustomKeyStoreRecord: ...

    @abstractmethod
    def delete_custom_key_store(self, store_id: str) -> bool:
        """Only while no key names it (False: one does, nothing deleted)."""

    @abstractmethod
    def keys_in_custom_key_store(self, store_id: str) -> list[KeyRecord]: ...

    def usage_store(self) -> Store:
        """Where last uses are written and read: this store, or one beside it whose writes do
        not move this store's change marker (SQLite: a file of its own), so that a batch of
        last-use times empties no process's cache of key records."""
        return self

    @abstractmethod
    def all_key_usage(self) -> list[KeyUsageRecord]: ...

    # materials
    @abstractmethod
    def materials(self, key_id: str) -> list[MaterialRecord]: ...

    @abstractmethod
    def add_material(self, material: MaterialRecord, make_current: bool = True) -> None: ...

    @abstractmethod
    def all_material_ids(self) -> set[str]: ...

    @abstractmethod
    def all_materials(self) -> list[MaterialRecord]:
        """Every material of every key (for ``hsmkms doctor``: not for requests)."""

    # imported material
    @abstractmethod
    def put_imported_material(
        self,
        material: MaterialRecord,
        *,
        if_state: tuple[str, ...],
        state: str | None = None,
        make_current: bool = False,
    ) -> KeyRecord:
        """Record an import of ``material`` (a new row, or the import fields and public key
        of the row it already has), and with it the key's new ``state`` and current material;
        in one transaction, only while the key's state is one of ``if_state`` (else
        :class:`StateChanged`, nothing written). Returns the key as written."""

    @abstractmethod
    def remove_imported_material(
        self,
        key_id: str,
        material_id: str,
        *,
        if_state: tuple[str, ...],
        state: str | None,
        forget: bool,
    ) -> KeyRecord:
        """The material's import is undone: its row deleted (``forget``: it never became
        current) or marked PENDING_IMPORT; the key takes ``state`` (None: unchanged). One
        transaction, only while the key's state is one of ``if_state`` (else StateChanged)."""

    @abstractmethod
    def list_expired_materials(self, now: datetime) -> list[MaterialRecord]:
        """Imported materials whose ValidTo has passed by ``now``, and those EXPIRING."""

    @abstractmethod
    def claim_expired_material(self, material_id: str, now: datetime) -> bool:
        """Mark the material EXPIRING and its key PendingImport (unless PendingDeletion), only
        if it is still IMPORTED and expired by ``now``: True for the one caller that did."""

    @abstractmethod
    def finish_expiry(self, material_id: str) -> None:
        """An EXPIRING material's token object is gone: it reads PENDING_IMPORT."""

    @abstractmethod
    def rotate_to_imported(self, key_id: str, material_id: str, now: datetime, limit: int) -> bool:
        """Make the pending imported ``material_id`` the key's current material as an
        on-demand rotation at ``now``, in one transaction; only if the key is Enabled, has had
        fewer than ``limit`` on-demand rotations, and the material still waits (else False)."""

    @abstractmethod
    def add_import_parameters(self, parameters: ImportParametersRecord) -> None: ...

    @abstractmethod
    def get_import_parameters(self, import_id: str) -> ImportParametersRecord | None: ...

    @abstractmethod
    def list_import_parameters_due(self, now: datetime) -> list[ImportParametersRecord]:
        """Import parameters expired by ``now`` whose wrapping key is not yet destroyed."""

    @abstractmethod
    def list_import_parameters_of(self, key_id: str) -> list[ImportParametersRecord]:
        """The key's import parameters whose wrapping key is not yet destroyed."""

    @abstractmethod
    def mark_import_parameters_destroyed(self, import_id: str) -> None:
        """Their wrapping key is gone (destroyed first, so that a crash in between leaves a
        record the next sweep destroys again, never a wrapping key nobody will destroy)."""

    # rotation
    @abstractmethod
    def keys_due_for_rotation(self, now: datetime, limit: int) -> list[KeyRecord]:
        """Enabled keys with automatic rotation on whose next rotation is at or before
        ``now``, the most overdue first."""

    @abstractmethod
    def add_automatic_rotation(
        self,
        material: MaterialRecord,
        due: datetime,
        period_days: int,
        next_rotation: datetime,
        now: datetime,
    ) -> bool:
        """Make ``material`` the key's current material as its automatic rotation for the
        due date ``due``, and schedule the next at ``next_rotation``; in one transaction.

        Only if the key is still Enabled, with rotation on, the same period and due by
        ``now``, and no material is yet recorded for ``due`` (a unique key on the key and
        due date): else nothing is written and the answer is False. This is what keeps two
        processes from rotating one key twice for one due date, whatever their leases say."""

    @abstractmethod
    def add_on_demand_rotation(self, material: MaterialRecord, limit: int) -> bool:
        """Make ``material`` the key's current material as an on-demand rotation, in one
        transaction; only if the key is still Enabled and has had fewer than ``limit``
        on-demand rotations (else nothing is written and the answer is False)."""

    # leases
    @abstractmethod
    def acquire_lease(self, name: str, holder: str, now: datetime, ttl: float) -> bool:
        """Take or renew the lease ``name`` for ``ttl`` seconds from ``now``: True when
        ``holder`` holds it on return. Taken when absent or expired, renewed when ``holder``
        already holds it, refused while another holder's lease runs. Atomic across
        processes and nodes (a conditional UPDATE, else INSERT, in one write transaction)."""

    @abstractmethod
    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up, if ``holder`` holds it (another's lease is left alone)."""

    @abstractmethod
    def get_lease(self, name: str, now: datetime) -> LeaseRecord | None:
        """The lease ``name`` if some holder holds it at ``now`` (an expired one is None)."""

    # aliases
    @abstractmethod
    def create_alias(self, alias: AliasRecord) -> None:
        """Raise :class:`Conflict` when (account, region, name) exists."""

    @abstractmethod
    def get_alias(self, account_id: str, region: str, alias_name: str) -> AliasRecord | None: ...

    @abstractmethod
    def update_alias(
        self, account_id: str, region: str, alias_name: str, key_id: str, now: datetime
    ) -> None: ...

    @abstractmethod
    def delete_alias(self, account_id: str, region: str, alias_name: str) -> None: ...

    @abstractmethod
    def list_aliases(
        self,
        account_id: str,
        region: str,
        key_id: str | None,
        after: str | None,
        limit: int,
    ) -> list[AliasRecord]: ...

    @abstractmethod
    def aliases_of(self, key_id: str) -> list[AliasRecord]: ...

    # tags
    @abstractmethod
    def get_tags(self, key_id: str) -> dict[str, str]: ...

    @abstractmethod
    def set_tags(self, key_id: str, tags: dict[str, str]) -> None: ...

    @abstractmethod
    def remove_tags(self, key_id: str, tag_keys: list[str]) -> None: ...

    # grants
    @abstractmethod
    def create_grant(self, grant: GrantRecord) -> None: ...

    @abstractmethod
    def get_grant(self, grant_id: str) -> GrantRecord | None: ...

    @abstractmethod
    def list_grants(
        self, key_id: str, after: str | None, limit: int, grantee: str | None = None
    ) -> list[GrantRecord]:
        """The key's grants by grant id, after ``after``, at most ``limit``."""

    @abstractmethod
    def grants_for_grantees(self, key_id: str, grantees: list[str]) -> list[GrantRecord]:
        """The key's grants whose grantee principal is one of ``grantees``."""

    @abstractmethod
    def grants_named(self, key_id: str, name: str) -> list[GrantRecord]: ...

    @abstractmethod
    def retirable_grants(
        self, retiring_principal: str, after: str | None, limit: int
    ) -> list[GrantRecord]:
        """Grants of any key that ``retiring_principal`` may retire, by grant id."""

    @abstractmethod
    def delete_grant(self, grant_id: str) -> bool:
        """Remove a grant; False when it did not exist."""

    # change signal
    def change_marker(self) -> object:
        """A cheap value that tells whether anyone else wrote since it was last read.

        The contract: if the store's data changed between two calls, through any connection
        other than the one the marker is read on (another process, another node, another
        thread of this process), the two answers differ (compared with ``==``). Equal
        answers promise that nothing changed in between; different ones only that something
        may have. The per-process cache of the request path (service/cache.py) asks for it
        at most once per ``cache_ttl`` and keeps every entry while it stays the same.

        It must cost far less than a read of a record (SQLite: ``PRAGMA data_version``, no
        table read). A store that has no such signal keeps this default, a new value on every
        call: the cache then trusts nothing past ``cache_ttl``."""
        return object()

    @abstractmethod
    def close(self) -> None: ...


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
