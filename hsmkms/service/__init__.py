"""The operation layer: KMS semantics over a token (``hsmkms.hsm``) and a store.

One module per family of operations (keys, aliases, crypto, tags) registers its handlers in
``core.OPERATIONS``; :meth:`Service.dispatch` runs them and turns token and store failures into
AWS's errors. Nothing here knows HTTP; nothing here names a PKCS#11 session or mechanism.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hsmkms import blob as blobfmt
from hsmkms import errors, hsm, keypairs, model
from hsmkms.config import Settings
from hsmkms.service import (  # noqa: F401  (register handlers)
    aliases,
    cache,
    crypto,
    grants,
    keys,
    nonces,
    policy,
    quick,
    rotation,
    tags,
)
from hsmkms.service.core import OPERATIONS, Request, check_algorithm, check_usable
from hsmkms.service.doctor import material_label
from hsmkms.store import (
    KeyRecord,
    MaterialRecord,
    StateChanged,
    Store,
    StoreBusy,
    StoreError,
    StoreFull,
    StoreUnavailable,
    open_store,
)

if TYPE_CHECKING:
    from hsmkms.kms import Caller
    from hsmkms.service.scheduler import Scheduler

log = logging.getLogger("hsmkms.service")

_INVALID_CIPHERTEXT = (
    "The ciphertext is not valid, was altered, or was encrypted under another encryption "
    "context."
)


class Service:
    """One process's operation layer. Thread-safe: the token layer serialises token calls
    and the store uses a connection per thread."""

    def __init__(self, settings: Settings, token: Any, store: Store) -> None:
        self.settings = settings
        self.region = settings.region
        self.token = token
        # Key records, aliases, materials and grants from a short-lived per-process cache
        # (service/cache.py): the request path then reads no store at all.
        self.store: Store = cache.cached(store, settings.cache_ttl)
        token_specs = frozenset(getattr(token, "keypair_specs", frozenset()))
        self.keypair_specs = frozenset(keypairs.SUPPORTED_SPECS)
        self._token_specs = token_specs if settings.keypair_source == "token" else frozenset()
        self.pool = keypairs.PairPool(
            tuple(s for s in keypairs.RSA_BITS if s not in self._token_specs),
            settings.rsa_pool_size,
            keypairs.generate,
            settings.rsa_pool_threads,
        )
        # GCM IVs: a counter from a random start drawn from the token (service/nonces.py),
        # not one C_GenerateRandom per request.
        self.ivs = nonces.IvSequence(self.random)
        self.scheduler: Scheduler | None = None

    @classmethod
    def open(cls, settings: Settings, *, preload_keys: bool = True) -> Service:
        """``preload_keys=False``: the token's key handles are looked up on first use, not now
        (for a process that only checks that the token and store open)."""
        from hsmkms.home import ensure_home

        ensure_home(settings)
        try:
            token = hsm.open_token(
                settings.pkcs11_module, settings.token_label, settings.read_pin(),
                preload=preload_keys,
            )
        except hsm.TokenError as exc:
            raise errors.KMSInternalException(f"cannot open the token: {exc}") from None
        store = open_store(settings.store_path, busy_timeout=settings.store_busy_timeout)
        return cls(settings, token, store)

    def default_caller(self) -> Caller:
        """The first identity of the credentials file: the embedded default's admin."""
        from hsmkms.home import read_credentials
        from hsmkms.kms import Caller

        ident = next(iter(read_credentials(self.settings.credentials_path).values()))
        return Caller(ident.account_id, ident.principal_arn, ident.access_key_id)

    # -- dispatch --------------------------------------------------------------------------
    def dispatch(self, operation: str, params: dict[str, Any], caller: Caller) -> dict:
        handler = OPERATIONS.get(operation)
        if handler is None:
            if operation in model.operations():
                raise errors.UnsupportedOperationException(
                    f"{operation} is not supported by hsmkms yet."
                )
            raise errors.UnknownOperationException(f"Unknown operation {operation}.")
        # The data plane reads through the cache; every other operation reads the store itself,
        # so a client that inspects or changes a key sees what the store holds now.
        fresh = cache.FRESH.set(operation not in quick.DATA_PLANE)
        # On the event loop a handle-cache miss must not search the token (seconds at
        # 10,000 keys): the token raises WouldSearch instead, and the call goes to a thread.
        inline = quick.NO_WAIT.get()
        no_search = hsm.NO_SEARCH.set(inline)
        try:
            try:
                return handler(self, Request(operation, params, caller))
            except hsm.WouldSearch:
                raise quick.WouldBlock() from None
            except hsm.KeyNotFound:
                if inline:
                    raise quick.WouldBlock() from None  # re-initialising is thread work too
                # The store vouched for the material but this process's view of the token
                # lacks it (another worker created it); re-read the token once and retry.
                try:
                    self.token.refresh()
                except hsm.TokenError:
                    raise hsm.KeyNotFound("master key not visible") from None
                return handler(self, Request(operation, params, caller))
        except errors.KMSError:
            raise
        except hsm.IntegrityError:
            raise errors.InvalidCiphertextException(_INVALID_CIPHERTEXT) from None
        except hsm.TokenUnavailable:
            raise errors.KeyUnavailableException(
                "The HSM that holds the key material is not available now; retry later."
            ) from None
        except hsm.KeyNotFound:
            raise errors.KeyUnavailableException(
                "The key material of this KMS key is missing from the HSM."
            ) from None
        except hsm.MechanismUnsupported as exc:
            raise errors.UnsupportedOperationException(f"The HSM cannot do this: {exc}") from None
        except hsm.TokenFull as exc:
            log.error("%s refused: %s", operation, exc)
            raise errors.KMSInternalException(
                "The HSM has no room to store a new key. Nothing was created; retry when "
                "space has been freed."
            ) from None
        except hsm.LoginFailed:
            # Logged once by the token layer; a traceback per request would drown the log.
            raise errors.KeyUnavailableException(
                "The HSM refused hsmkms's login; an operator must restart hsmkms with the "
                "right PIN."
            ) from None
        except hsm.TokenError:
            log.exception("token failure in %s", operation)
            raise errors.KMSInternalException("The HSM failed; see the server log.") from None
        except StoreBusy as exc:
            # Conditions that pass, not faults: one log line each, no traceback.
            log.warning("%s refused: %s", operation, exc)
            raise errors.DependencyTimeoutException(
                "The metadata store is busy: another writer held its lock too long. Nothing "
                "was changed; retry the request."
            ) from None
        except StoreFull as exc:
            log.error("%s refused: %s", operation, exc)
            raise errors.KMSInternalException(
                "The metadata store is out of disk space. Nothing was changed; retry when "
                "space has been freed."
            ) from None
        except StoreUnavailable as exc:
            log.error("%s refused: %s", operation, exc)
            raise errors.KMSInternalException(
                "The metadata store cannot be read or written now. Nothing was changed; "
                "retry later."
            ) from None
        except StateChanged:
            # Handlers that write conditionally decide again on a lost race; one that
            # did not still must not answer a stale decision.
            raise errors.KMSInvalidStateException(
                "The KMS key changed while this request ran; describe it and retry."
            ) from None
        except StoreError:
            log.exception("store failure in %s", operation)
            raise errors.KMSInternalException(
                "The metadata store failed; see the server log."
            ) from None
        finally:
            hsm.NO_SEARCH.reset(no_search)
            cache.FRESH.reset(fresh)

    # -- helpers for the operation modules ---------------------------------------------
    def authorized_key(
        self, req: Request, key_id: str, *, allow_alias: bool = True, action: str | None = None
    ) -> KeyRecord:
        """The key ``key_id`` names, once the caller may do ``action`` (default: the request's
        operation) on it: key policy, then grants (:func:`policy.authorize`)."""
        key = keys.resolve_key(self, req.caller, key_id, allow_alias)
        policy.authorize(self, req, key, action or req.operation, requested=key_id)
        return key

    def random(self, n: int) -> bytes:
        return bytes(self.token.random(n))

    def new_material(self, key_id: str, created: datetime, rotation_type: str | None = None
                     ) -> MaterialRecord:
        """A new master key object on the token; its CKA_ID is the KeyMaterialId."""
        material = self.random(blobfmt.MATERIAL_LEN)
        # The label says whose material this is and since when: `hsmkms doctor` reads it to
        # tell an orphan of a crash long ago from a creation whose record is being written.
        self.token.create_master_key(material, material_label(key_id, material, created))
        return MaterialRecord(material.hex(), key_id, created, rotation_type)

    def discard_new_material(self, material: MaterialRecord) -> None:
        """Undo :meth:`new_material` after the store refused the record that names it.

        Only once the store answers that no record names the material: a write that failed
        ambiguously (a lost connection during COMMIT) may have landed, and destroying the
        material of a key that exists would lose every ciphertext under it. Whatever is left
        is an orphan, which ``hsmkms doctor`` reports (and ``--fix`` destroys)."""
        try:
            recorded = self.store.materials(material.key_id)
            if any(m.material_id == material.material_id for m in recorded):
                return
            self.token.destroy_master_key(bytes.fromhex(material.material_id))
        except (StoreError, hsm.TokenError) as exc:
            log.warning(
                "left an orphan master key %s of key %s on the token: %s",
                material.material_id, material.key_id, exc,
            )

    def destroy_material(self, material_hex: str) -> None:
        try:
            self.token.destroy_master_key(bytes.fromhex(material_hex))
        except hsm.KeyNotFound:
            pass  # already gone: a sweep interrupted after this step

    def check_handle(self, material: bytes) -> None:
        """Before a call on the event loop (``quick.NO_WAIT``) asks the token for a master key
        whose handle this process has not looked up yet (a key another worker created): the
        token would search every key for it (1-2 s at 10,000 keys on SoftHSM2). Raise
        :class:`quick.WouldBlock` instead, before the call has done anything, and the wire
        layer runs it again on a thread, where the search blocks no one else. Every data-plane
        call names its master key here: :meth:`seal`, :meth:`unseal`, and the data key pair
        operations before they take a pair (service/crypto.py)."""
        if quick.NO_WAIT.get():
            has_master = getattr(self.token, "has_master", None)  # stand-ins may lack it
            if has_master is not None and not has_master(material):
                raise quick.WouldBlock()

    def seal(self, key: KeyRecord, plaintext: bytes, context: dict[str, str] | None
             ) -> tuple[bytes, str]:
        """Encrypt under the key's current material: (blob, KeyMaterialId)."""
        material_hex = key.current_material_id
        assert material_hex is not None
        material = bytes.fromhex(material_hex)
        self.check_handle(material)
        header = blobfmt.sealed_header(key.key_id, material)
        iv = self.ivs.next()
        aad = header + blobfmt.encode_context(context)
        sealed = self.token.encrypt(material, iv, plaintext, aad)
        return blobfmt.seal(header, iv, sealed), material_hex

    def unseal(
        self,
        req: Request,
        data: bytes,
        context: dict[str, str] | None,
        *,
        expected_key_id: str | None,
        algorithm: str | None,
        action: str | None = None,
    ) -> tuple[KeyRecord, bytes, str]:
        """Decrypt a blob: (key, plaintext, KeyMaterialId), with AWS's checks in AWS's order."""
        try:
            parsed = blobfmt.parse(data)
        except blobfmt.MalformedBlob:
            raise errors.InvalidCiphertextException(_INVALID_CIPHERTEXT) from None
        key = self.store.get_key(parsed.key_id)
        if key is None or key.region != self.region:
            if self.store.was_deleted(parsed.key_id):
                raise errors.NotFoundException(
                    f"The KMS key {parsed.key_id} that encrypted this ciphertext was deleted."
                )
            raise errors.InvalidCiphertextException(_INVALID_CIPHERTEXT)
        if expected_key_id is not None:
            named = keys.resolve_key(self, req.caller, expected_key_id)
            if named.key_id != key.key_id:
                raise errors.IncorrectKeyException(
                    "The key ID in the request does not identify a CMK that can perform this "
                    "operation."
                )
        policy.authorize(self, req, key, action or req.operation, requested=expected_key_id)
        check_usable(key)
        check_algorithm(key, algorithm)
        material_hex = parsed.material_hex
        if not self._has_material(key.key_id, material_hex):
            raise errors.InvalidCiphertextException(_INVALID_CIPHERTEXT)
        if req.dry_run:
            raise errors.DryRunOperationException(
                "The request would have succeeded, but the DryRun option is set."
            )
        self.check_handle(parsed.material_id)
        aad = parsed.aad(context)
        if parsed.kind == blobfmt.KIND_SEALED:
            plaintext = self.token.decrypt(parsed.material_id, parsed.iv, parsed.body, aad)
        else:
            # Check the binding tag (header, context, wrapped bytes) before unwrapping.
            self.token.decrypt(parsed.material_id, parsed.iv, parsed.tag, aad)
            assert parsed.wrap_mechanism is not None and parsed.spec is not None
            plaintext = self.token.unwrap_private_key(
                parsed.material_id,
                hsm.WrappedKey(parsed.wrap_mechanism, parsed.spec, parsed.body),
            )
        return key, bytes(plaintext), material_hex

    def _has_material(self, key_id: str, material_hex: str) -> bool:
        """Whether ``material_hex`` is one of the key's materials. A cached list of them may
        predate a rotation made by another process, whose new blobs must decrypt here at once:
        a miss is asked once more of the store behind the cache."""
        if any(m.material_id == material_hex for m in self.store.materials(key_id)):
            return True
        behind = getattr(self.store, "inner", None)  # service/cache.py's CachedStore
        return behind is not None and any(
            m.material_id == material_hex for m in behind.materials(key_id)
        )

    def key_pair(self, spec: str) -> tuple[bytes, bytes]:
        """A fresh (SPKI DER, PKCS#8 DER), from the token or the host as configured."""
        if spec in self._token_specs:
            public, private = self.token.generate_key_pair(spec)
            return bytes(public), bytes(private)
        pair = self.pool.take(spec)
        if pair is None:
            if spec in keypairs.RSA_BITS:
                quick.check_may_wait()  # an RSA generation is no work for the event loop
            pair = keypairs.generate(spec)
        return pair

    @property
    def token_pair_specs(self) -> frozenset[str]:
        """The specs whose pairs the token generates (slow: never on the event loop)."""
        return self._token_specs

    def runs_quickly(self, operation: str, params: dict[str, Any]) -> bool:
        """Whether ``operation`` may run on the server's event loop (service/quick.py)."""
        return quick.runs_quickly(self, operation, params)

    def key_pair_sealed(
        self, key: KeyRecord, spec: str, context: dict[str, str] | None
    ) -> tuple[bytes, bytes, str]:
        """A fresh pair whose private key leaves only as a blob: (SPKI, blob, KeyMaterialId).

        On the token, the private key is wrapped there and never enters host memory."""
        if spec not in self._token_specs:
            public, private = self.key_pair(spec)
            blob, sealed_under = self.seal(key, private, context)
            return public, blob, sealed_under
        material_hex = key.current_material_id
        assert material_hex is not None
        material = bytes.fromhex(material_hex)
        public, wrapped = self.token.generate_wrapped_key_pair(spec, material)
        header = blobfmt.wrapped_header(key.key_id, material, wrapped.mechanism, spec)
        iv = self.ivs.next()
        aad = header + blobfmt.encode_context(context) + wrapped.data
        tag = self.token.encrypt(material, iv, b"", aad)
        return bytes(public), blobfmt.wrapped(header, iv, wrapped.data, tag), material_hex

    # -- life of the process -----------------------------------------------------------
    def sweep(self) -> list[str]:
        return keys.sweep(self)

    def start_scheduler(self, interval: float | None = None) -> Scheduler:
        """Run the scheduler in the background: due automatic rotations and deletion sweeps
        every ``interval`` seconds (default: the ``scheduler_interval`` setting), done by one
        process at a time of all that share the store (see :mod:`hsmkms.service.scheduler`)."""
        from hsmkms.service.scheduler import Scheduler

        if self.scheduler is None:
            self.scheduler = Scheduler(self, interval or self.settings.scheduler_interval)
            self.scheduler.start()
        return self.scheduler

    # The name the server's lifespan calls (hsmkms.api.app._start_background).
    start_sweeper = start_scheduler

    def health(self) -> dict[str, Any]:
        token: dict[str, Any]
        try:
            status = self.token.status()
            token = {"ok": status.ok, "label": status.label, "manufacturer": status.manufacturer,
                     "model": status.model, "detail": status.detail}
        except hsm.TokenError as exc:
            token = {"ok": False, "detail": str(exc)}
        out: dict[str, Any] = {"ok": bool(token["ok"]), "token": token}
        if self.pool.size:
            out["keypair_pool"] = self.pool.stock()
        return out

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()
        self.pool.close()
        self.store.close()
        try:
            self.token.close()
        except hsm.TokenError:
            pass

