"""The operation layer: KMS semantics over the master keys (:mod:`.masterkeys`) and a store.

One module per family of operations (keys, aliases, crypto, tags) registers its handlers in
``core.OPERATIONS``; :meth:`Service.dispatch` runs them, turns token and store faults into
AWS's errors (:mod:`.faults`) and hands every request's outcome to the audit sink
(:mod:`.audit`). Nothing here knows HTTP; nothing here knows whether a key material is a token
object, a wrap in the store, or which PKCS#11 calls use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from hsmkms import blob as blobfmt
from hsmkms import errors, hsm, keypairs, model
from hsmkms.config import Settings
from hsmkms.service import (  # noqa: F401  (register handlers)
    aliases,
    asymmetric,
    attestation,
    cache,
    crypto,
    custom_key_stores,
    external_keys,
    grants,
    host_keys,
    imports,
    kem,
    keys,
    keystore_router,
    multiregion,
    nonces,
    policy,
    quick,
    quotas,
    rotation,
    tags,
    usage,
)
from hsmkms.service.audit import NO_AUDIT, AuditSink
from hsmkms.service.core import CURRENT, OPERATIONS, Request, check_algorithm, check_usable
from hsmkms.service.faults import FAULTS, INVALID_CIPHERTEXT, translate
from hsmkms.service.masterkeys import MasterKeys, WrappedPrivateKey
from hsmkms.specs import SUPPORTED_PAIR_SPECS, DataKeyPairSpec, Family, KeySpec, KeyUsage
from hsmkms.store import KeyRecord, MaterialRecord, Store, StoreError, key_ref

if TYPE_CHECKING:
    from hsmkms.identity import Caller
    from hsmkms.service.scheduler import Scheduler

log = logging.getLogger("hsmkms.service")


class Service:
    """One process's operation layer. Thread-safe: the token layer serialises token calls
    and the store uses a connection per thread. Built by :mod:`hsmkms.compose`."""

    def __init__(
        self,
        settings: Settings,
        masters: MasterKeys,
        store: Store,
        *,
        audit: AuditSink = NO_AUDIT,
        open_masters: Callable[[Settings], MasterKeys] | None = None,
    ) -> None:
        self.settings = settings
        self.region = settings.region
        # The home's master keys, and those of the connected AWS_CLOUDHSM custom key stores,
        # each material's calls sent to the token that holds it (service/keystore_router.py).
        self.router = keystore_router.Router(masters)
        self.open_masters = open_masters  # the master keys of another token, by its settings
        self.masters = cast(MasterKeys, self.router)
        self.audit = audit
        # Key records, aliases, materials and grants from a short-lived per-process cache
        # (service/cache.py): the request path then reads no store at all.
        self.store: cache.CachedStore = cache.cached(store, settings.cache_ttl)
        self.keypair_specs: frozenset[DataKeyPairSpec] = frozenset(SUPPORTED_PAIR_SPECS)
        self.pool = keypairs.PairPool(
            tuple(
                s
                for s in SUPPORTED_PAIR_SPECS
                if s.family is Family.RSA and s not in masters.pair_specs
            ),
            settings.rsa_pool_size,
            keypairs.generate,
            settings.rsa_pool_threads,
        )
        # GCM IVs: a counter from a random start drawn from the token (service/nonces.py),
        # not one C_GenerateRandom per request.
        self.ivs = nonces.IvSequence(self.random)
        self.scheduler: Scheduler | None = None
        # AWS's request quotas when the `quotas` setting asks for them (service/quotas.py).
        self.quotas = quotas.from_settings(settings)
        # Each key's last use, noted per request and written in batches (service/usage.py),
        # past the cache: a batch of last-use times empties no cached key record.
        self.usage = usage.LastUsage(self.store.inner.usage_store())
        # Attestation documents of Recipient parameters, verified against the trust anchors.
        self.attestation = attestation.Verifier.from_file(
            settings.attestation_trust_anchors, settings.attestation_max_age
        )

    # -- dispatch --------------------------------------------------------------------------
    def dispatch(self, operation: str, params: dict[str, Any], caller: Caller) -> dict:
        """Run one operation: check its input against the model, find its handler, run it,
        map faults, audit the outcome (refusals of the input and unknown operations too)."""
        req = Request(operation, params, caller)
        current = CURRENT.set(req)
        # The data plane reads through the cache; every other operation reads the store itself,
        # so a client that inspects or changes a key sees what the store holds now.
        fresh = cache.FRESH.set(operation not in quick.DATA_PLANE)
        # On the event loop a handle-cache miss must not search the token (seconds at
        # 10,000 keys): the token raises WouldSearch instead, and the call goes to a thread.
        no_search = hsm.NO_SEARCH.set(quick.NO_WAIT.get())
        try:
            try:
                self.audit.admit(req)  # a required trail that cannot write: refused, not run
                handler = OPERATIONS.get(operation)
                if handler is None:
                    if operation in model.operations():
                        raise errors.UnsupportedOperationException(
                            f"{operation} is not supported by hsmkms yet."
                        )
                    raise errors.UnknownOperationException(f"Unknown operation {operation}.")
                model.validate_input(operation, params)
                self.quotas.charge(req, None)
                answer = self._run(handler, req)
            except FAULTS as fault:
                raise translate(fault, operation) from None
            except quick.WouldBlock:
                self.quotas.refund(req)  # it runs again, from the start, on a thread
                raise
        except errors.KMSError as exc:
            self.audit.record(req, exc)
            raise
        finally:
            hsm.NO_SEARCH.reset(no_search)
            cache.FRESH.reset(fresh)
            CURRENT.reset(current)
        self.usage.note(req)
        self.audit.record(req, None, answer)
        return answer

    def _run(self, handler: Any, req: Request) -> dict:
        """The handler's answer. A material the store vouched for but this process's view of
        the token lacks (another worker created it) is looked for once more, then retried."""
        try:
            return handler(self, req)
        except hsm.WouldSearch:
            raise quick.WouldBlock() from None
        except hsm.KeyNotFound:
            if quick.NO_WAIT.get():
                raise quick.WouldBlock() from None  # re-initialising is thread work too
            try:
                self.masters.refresh()
            except hsm.TokenError:
                raise hsm.KeyNotFound("master key not visible") from None
            self.quotas.refund(req)
            again = req.again()
            self.quotas.charge(again, None)
            answer = handler(self, again)
            req.used[:] = again.used  # what the run that answered used
            return answer

    # -- helpers for the operation modules ---------------------------------------------
    def authorized_key(
        self, req: Request, key_id: str, *, allow_alias: bool = True, action: str | None = None
    ) -> KeyRecord:
        """The key ``key_id`` names, once the caller may do ``action`` (default: the request's
        operation) on it: key policy, then grants (:func:`policy.authorize`)."""
        key = keys.resolve_key(self, req.caller, key_id, allow_alias)
        policy.authorize(self, req, key, action or req.operation, requested=key_id)
        self.used_key(req, key)
        return key

    def used_key(self, req: Request, key: KeyRecord) -> None:
        """``req`` was allowed to use ``key``: charge the key spec's quota, note the use
        (GetKeyLastUsage counts it once the request succeeds)."""
        self.quotas.charge(req, key)
        req.used.append(key)

    def region_of(self, caller: Caller) -> str:
        """The Region a request runs in: its SigV4 scope's, else the default ``region``."""
        return caller.region or self.region

    def random(self, n: int) -> bytes:
        return self.masters.random(n)

    def new_material(
        self,
        key_id: str,
        created: datetime,
        rotation_type: str | None = None,
        spec: KeySpec = KeySpec.SYMMETRIC_DEFAULT,
        usage: KeyUsage = KeyUsage.ENCRYPT_DECRYPT,
    ) -> MaterialRecord:
        """A new key material of ``spec`` for ``key_id``, made before the record that names it:
        an AES-256 master key, an HMAC key, or a private key allowed ``usage`` alone."""
        sealed = None
        self._check_room(KeySpec.SYMMETRIC_DEFAULT if spec.family in host_keys.FAMILIES else spec)
        if spec.family is Family.AES:
            material_id, public = self.masters.create(key_id, created), None
        elif spec.family is Family.HMAC:
            material_id, public = self.masters.create_hmac_key(key_id, created, spec), None
        elif spec.family in (Family.RSA, Family.EC, Family.EDWARDS):
            material_id, public = self.masters.create_private_key(key_id, created, spec, usage)
        elif spec.family in host_keys.FAMILIES:
            material_id, public, sealed = host_keys.create(self, key_id, created, spec)
        else:
            raise errors.UnsupportedOperationException(
                f"KeySpec {spec} is not supported by hsmkms yet."
            )
        return MaterialRecord(material_id, key_id, created, rotation_type, public, sealed)

    def _check_room(self, spec: KeySpec) -> None:
        """``token_max_objects``: refuse a new token object once the token holds that many
        materials, as the store records them (a wrapped material takes no token object)."""
        limit = self.settings.token_max_objects
        if not limit or not self.masters.objects_for(spec):
            return
        if self.masters.token_materials(len(self.store.inner.all_material_ids())) >= limit:
            raise errors.LimitExceededException(
                f"The HSM holds the {limit} key materials hsmkms may keep on it "
                "(token_max_objects): delete keys you no longer need, or raise the setting if "
                "the HSM has room."
            )

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
            self.masters.destroy(material.material_id)
        except (StoreError, hsm.TokenError) as exc:
            log.warning(
                "left an orphan master key %s of key %s on the token: %s",
                material.material_id,
                material.key_id,
                exc,
            )

    def destroy_material(self, material_id: str) -> None:
        try:
            self.masters.destroy(material_id)
        except hsm.KeyNotFound:
            pass  # already gone: a sweep interrupted after this step

    def check_handle(self, material_id: str) -> None:
        """Before a call on the event loop (``quick.NO_WAIT``) names a material this process
        cannot use at once (a key another worker created: finding it on the token searches
        every key, 1-2 s at 10,000 keys on SoftHSM2), raise :class:`quick.WouldBlock` instead,
        before the call has done anything, and the wire layer runs it again on a thread, where
        the search blocks no one else. Every data-plane call names its material here:
        :meth:`seal`, :meth:`unseal`, and the data key pair operations before they take a pair
        (service/crypto.py)."""
        if quick.NO_WAIT.get() and not self.masters.ready(material_id):
            raise quick.WouldBlock()

    def seal(
        self, key: KeyRecord, plaintext: bytes, context: dict[str, str] | None
    ) -> tuple[bytes, str]:
        """Encrypt under the key's current material: (blob, KeyMaterialId). A key in an
        external key store encrypts twice: under its material here, then under its external
        key, through the store's proxy."""
        material_id = key.current_material_id
        assert material_id is not None
        key_store = None
        if key.custom_key_store_id:
            quick.check_may_wait()  # a store's token or proxy: no work for the event loop
            key_store = custom_key_stores.check_available(self, key)
        self.check_handle(material_id)
        header = blobfmt.sealed_header(key.key_id, bytes.fromhex(material_id))
        iv = self.ivs.next()
        aad = header + blobfmt.encode_context(context)
        sealed = self.masters.seal(material_id, iv, plaintext, aad)
        inner = blobfmt.seal(header, iv, sealed)
        if key.xks_key_id:
            assert key_store is not None  # check_available answered for the key's store
            return external_keys.external_seal(self, key, key_store, inner, context), material_id
        return inner, material_id

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
            raise errors.InvalidCiphertextException(INVALID_CIPHERTEXT) from None
        key = self.store.get_key(key_ref(parsed.key_id, self.region_of(req.caller)))
        if key is None or key.region != self.region_of(req.caller):
            if self.store.was_deleted(parsed.key_id):
                raise errors.NotFoundException(
                    f"The KMS key {parsed.key_id} that encrypted this ciphertext was deleted."
                )
            raise errors.InvalidCiphertextException(INVALID_CIPHERTEXT)
        if expected_key_id is not None:
            named = keys.resolve_key(self, req.caller, expected_key_id)
            if named.key_id != key.key_id:
                raise errors.IncorrectKeyException(
                    "The key ID in the request does not identify a CMK that can perform this "
                    "operation."
                )
        policy.authorize(self, req, key, action or req.operation, requested=expected_key_id)
        self.used_key(req, key)
        check_usable(key)
        check_algorithm(key, algorithm)
        material_id = parsed.material_hex
        if not self._has_material(key.key_id, material_id):
            raise errors.InvalidCiphertextException(INVALID_CIPHERTEXT)
        if req.dry_run:
            raise errors.DryRunOperationException(
                "The request would have succeeded, but the DryRun option is set."
            )
        key_store = None
        if key.custom_key_store_id:
            quick.check_may_wait()
            key_store = custom_key_stores.check_available(self, key)
        if parsed.kind == blobfmt.KIND_EXTERNAL:
            parsed = external_keys.external_unseal(self, key, key_store, parsed, context)
        self.check_handle(material_id)
        aad = parsed.aad(context)
        if parsed.kind == blobfmt.KIND_SEALED:
            plaintext = self.masters.unseal(material_id, parsed.iv, parsed.body, aad)
        else:
            # Check the binding tag (header, context, wrapped bytes) before unwrapping.
            self.masters.unseal(material_id, parsed.iv, parsed.tag, aad)
            assert parsed.wrap_mechanism is not None and parsed.spec is not None
            plaintext = self.masters.unseal_private_key(
                material_id, WrappedPrivateKey(parsed.wrap_mechanism, parsed.spec, parsed.body)
            )
        return key, bytes(plaintext), material_id

    def _has_material(self, key_id: str, material_id: str) -> bool:
        """Whether ``material_id`` is one of the key's materials. A cached list of them may
        predate a rotation made by another process, whose new blobs must decrypt here at once:
        a miss is asked once more of the store behind the cache."""
        for store in (self.store, self.store.inner):
            if any(m.material_id == material_id for m in store.materials(key_id)):
                return True
        return False

    def key_pair(self, spec: str) -> tuple[bytes, bytes]:
        """A fresh (SPKI DER, PKCS#8 DER), from the token or the host as configured."""
        spec = DataKeyPairSpec(spec)
        if spec in self.masters.pair_specs:
            return self.masters.key_pair(spec)
        pair = self.pool.take(spec)
        if pair is None:
            if spec.family is Family.RSA:
                quick.check_may_wait()  # an RSA generation is no work for the event loop
            pair = keypairs.generate(spec)
        return pair

    def runs_quickly(self, operation: str, params: dict[str, Any]) -> bool:
        """Whether ``operation`` may run on the server's event loop (service/quick.py)."""
        return quick.runs_quickly(self, operation, params)

    def key_pair_sealed(
        self, key: KeyRecord, spec: DataKeyPairSpec, context: dict[str, str] | None
    ) -> tuple[bytes, bytes, str]:
        """A fresh pair whose private key leaves only as a blob: (SPKI, blob, KeyMaterialId).

        Where the materials make the pair, the private key is wrapped there and never enters
        host memory."""
        if spec not in self.masters.pair_specs or key.custom_key_store_id:
            public, private = self.key_pair(spec)
            blob, sealed_under = self.seal(key, private, context)
            return public, blob, sealed_under
        material_id = key.current_material_id
        assert material_id is not None
        public, wrapped = self.masters.key_pair_sealed(material_id, spec)
        header = blobfmt.wrapped_header(
            key.key_id, bytes.fromhex(material_id), wrapped.mechanism, spec
        )
        iv = self.ivs.next()
        aad = header + blobfmt.encode_context(context) + wrapped.data
        tag = self.masters.seal(material_id, iv, b"", aad)
        return public, blobfmt.wrapped(header, iv, wrapped.data, tag), material_id

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

    def pool_stock(self) -> dict[str, int]:
        """Pre-generated pairs in stock in this process, by spec (empty: no pool)."""
        return self.pool.stock() if self.pool.size else {}

    def health(self) -> dict[str, Any]:
        token: dict[str, Any]
        try:
            token = self.masters.status()
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
        self.quotas.close()
        self.usage.close()
        self.audit.close()
        self.store.close()
        try:
            self.masters.close()
        except hsm.TokenError:
            pass
