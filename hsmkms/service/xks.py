"""hsmkms as an external key store proxy: the operations of the XKS proxy API v1
(aws/aws-kms-xksproxy-api-spec, "GetKeyMetadata", "Encrypt", "Decrypt", "GetHealthStatus")
over the operation layer's store and master keys. The wire is :mod:`hsmkms.api.xks`.

An external key id is the key id of a KMS key of the XKS credential's account, in that
credential's Region (the caller's): a symmetric key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT) on this
home's token, not one in a custom key store. Its state is the XKS keyStatus: ENABLED when the
KMS key is Enabled, DISABLED in every other state. hsmkms's key policies and grants do not apply:
they are for callers of hsmkms's own KMS API, and the XKS credential stands for AWS KMS.

Encrypt is AES-256-GCM under the key's current material, on the token, with the spec's AAD:

    AAD' = uint16_be(len(aad)) || aad || uint8(len(metadata)) || metadata

where ``metadata`` is the ``ciphertextMetadata`` this proxy answers: ``0x01`` (its format)
followed by the first 16 bytes of the KeyMaterialId (17 bytes of the 20 the spec allows). AWS
KMS stores it in its blob and hands it back on Decrypt, which finds the material by it, so a
ciphertext made before a rotation still decrypts; and since it is in the AAD, an altered one
fails the tag. The ciphertext data integrity value (Appendix C) is SHA-256 over
``aad || metadata || iv || ciphertext || tag``, computed before the ciphertext is decrypted once
more to check it, as the spec recommends.

Errors are the operation layer's (:mod:`hsmkms.errors`); the wire names them as the spec does.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.metadata
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from hsmkms import errors, hsm
from hsmkms.service import cache
from hsmkms.service.faults import FAULTS, INVALID_CIPHERTEXT, translate
from hsmkms.specs import KeySpec, KeyState, KeyUsage
from hsmkms.store import KeyRecord, MaterialRecord, key_ref

if TYPE_CHECKING:
    from hsmkms.identity import Caller
    from hsmkms.service import Service

T = TypeVar("T")

METADATA_FORMAT = 1
MATERIAL_PREFIX = 16  # bytes of the KeyMaterialId in the ciphertextMetadata
IV_BYTES = 12
TAG_BYTES = 16
# A health check slower than this leaves little of AWS KMS's 250 ms per call: DEGRADED.
SLOW_HEALTH = 0.1

# The XKS keyUsage of each KMS key usage (PKCS#11's names for what a key may do).
_USAGES = {
    KeyUsage.ENCRYPT_DECRYPT: ["ENCRYPT", "DECRYPT"],
    KeyUsage.SIGN_VERIFY: ["SIGN", "VERIFY"],
    KeyUsage.GENERATE_VERIFY_MAC: ["SIGN", "VERIFY"],
    KeyUsage.KEY_AGREEMENT: ["DERIVE"],
    KeyUsage.ENCAPSULATE_DECAPSULATE: ["ENCRYPT", "DECRYPT"],
}


def aad_input(aad: bytes, metadata: bytes) -> bytes:
    """The AAD of the AES-GCM operation (the spec's Encrypt, ciphertextMetadata): both lengths
    in, so that metadata passed as AAD, or AAD as metadata, does not decrypt."""
    return len(aad).to_bytes(2, "big") + aad + bytes((len(metadata),)) + metadata


def integrity_value(aad: bytes, metadata: bytes, iv: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """The ciphertext data integrity value, SHA_256 (the spec's Appendix C)."""
    return hashlib.sha256(aad + metadata + iv + ciphertext + tag).digest()


class XksProxy:
    """The four XKS operations over one process's operation layer; thread-safe as it is."""

    def __init__(self, svc: Service, clock: Callable[[], float] = time.perf_counter) -> None:
        self.svc = svc
        self.clock = clock

    # -- the operations ------------------------------------------------------------------------
    def metadata(self, caller: Caller, external_key_id: str) -> dict[str, Any]:
        """GetKeyMetadata: keySpec, keyUsage, keyStatus, read from the store as it is now."""
        fresh = cache.FRESH.set(True)
        try:
            key = self._guarded("GetKeyMetadata", lambda: self._key(caller, external_key_id))
        finally:
            cache.FRESH.reset(fresh)
        spec = KeySpec(key.key_spec)
        return {
            "keySpec": "AES_256" if spec is KeySpec.SYMMETRIC_DEFAULT else str(spec),
            "keyUsage": list(_USAGES.get(KeyUsage(key.key_usage), [])),
            "keyStatus": "ENABLED" if key.state == KeyState.ENABLED else "DISABLED",
        }

    def encrypt(
        self, caller: Caller, external_key_id: str, plaintext: bytes, aad: bytes, integrity: bool
    ) -> dict[str, bytes]:
        """Encrypt: the spec's answer fields (bytes; the wire encodes them in Base64)."""

        def run() -> dict[str, bytes]:
            key = self._usable(caller, external_key_id)
            material_id = key.current_material_id
            if material_id is None:
                raise errors.KMSInvalidStateException(f"{key.arn} has no key material.")
            metadata = bytes((METADATA_FORMAT,)) + bytes.fromhex(material_id)[:MATERIAL_PREFIX]
            iv = self.svc.ivs.next()
            sealed = self.svc.masters.seal(material_id, iv, plaintext, aad_input(aad, metadata))
            ciphertext, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
            answer = {
                "ciphertext": ciphertext,
                "ciphertextMetadata": metadata,
                "initializationVector": iv,
                "authenticationTag": tag,
            }
            if integrity:
                # Before the check below, as Appendix C asks: a bit flipped after this point
                # fails the check rather than hiding under a value computed over it.
                answer["ciphertextDataIntegrityValue"] = integrity_value(
                    aad, metadata, iv, ciphertext, tag
                )
                again = self.svc.masters.unseal(
                    material_id, iv, ciphertext + tag, aad_input(aad, metadata)
                )
                if not hmac.compare_digest(again, plaintext):
                    raise errors.KMSInternalException(
                        "The ciphertext made did not decrypt to the plaintext: nothing returned."
                    )
            return answer

        return self._guarded("Encrypt", run)

    def decrypt(
        self,
        caller: Caller,
        external_key_id: str,
        ciphertext: bytes,
        aad: bytes,
        metadata: bytes,
        iv: bytes,
        tag: bytes,
    ) -> dict[str, bytes]:
        """Decrypt: ``{"plaintext": ...}``; InvalidCiphertextException when the metadata names
        no material of the key or the tag does not verify (ciphertext, IV, AAD, metadata)."""

        def run() -> dict[str, bytes]:
            key = self._usable(caller, external_key_id)
            material = self._material(key, metadata)
            if material is None or len(iv) != IV_BYTES:
                # Every ciphertext this proxy makes has a 12-byte IV and its metadata.
                raise errors.InvalidCiphertextException(INVALID_CIPHERTEXT)
            plaintext = self.svc.masters.unseal(
                material.material_id, iv, ciphertext + tag, aad_input(aad, metadata)
            )
            return {"plaintext": bytes(plaintext)}

        return self._guarded("Decrypt", run)

    def health(self) -> dict[str, Any]:
        """GetHealthStatus: the token's state as the spec's ekmFleetDetails (one entry).

        ACTIVE: logged in, and a random number came back within SLOW_HEALTH; DEGRADED: it
        did, but slower; UNAVAILABLE: the token is not logged in or failed. No test key: an
        AES-GCM call would need a material on the token that no KMS key owns, which ``hsmkms
        doctor`` reports as an orphan; C_GenerateRandom exercises the session as well."""
        masters = self.svc.masters
        started = self.clock()
        status: dict[str, Any] = {}
        try:
            status = masters.status()
            ok = bool(status.get("ok"))
            if ok:
                masters.random(16)
        except hsm.TokenError:
            ok = False
        slow = self.clock() - started > SLOW_HEALTH
        state = "UNAVAILABLE" if not ok else "DEGRADED" if slow else "ACTIVE"
        manufacturer = _text(status.get("manufacturer"), "unknown")
        return {
            "xksProxyFleetSize": 1,
            "xksProxyVendor": "hsmkms",
            "xksProxyModel": f"hsmkms {_version()} (XKS proxy API v1)",
            "ekmVendor": manufacturer,
            "ekmFleetDetails": [
                {
                    "id": _text(status.get("label"), self.svc.settings.token_label),
                    "model": f"{manufacturer} {_text(status.get('model'), 'PKCS#11 token')}",
                    "healthStatus": state,
                }
            ],
        }

    # -- steps -----------------------------------------------------------------------------------
    def _key(self, caller: Caller, external_key_id: str) -> KeyRecord:
        region = self.svc.region_of(caller)
        key = self.svc.store.get_key(key_ref(external_key_id, region))
        if key is None or key.account_id != caller.account_id or key.region != region:
            raise errors.NotFoundException(
                f"No KMS key {external_key_id} in account {caller.account_id}, Region {region}."
            )
        if key.custom_key_store_id:
            raise errors.NotFoundException(
                f"{key.arn} is in a custom key store: the XKS API serves keys on hsmkms's own "
                "token only."
            )
        return key

    def _usable(self, caller: Caller, external_key_id: str) -> KeyRecord:
        key = self._key(caller, external_key_id)
        if key.key_spec != KeySpec.SYMMETRIC_DEFAULT or key.key_usage != KeyUsage.ENCRYPT_DECRYPT:
            raise errors.InvalidKeyUsageException(
                f"{key.arn} is a {key.key_spec} key for {key.key_usage}: the XKS API encrypts "
                "with symmetric (SYMMETRIC_DEFAULT) keys only."
            )
        if key.state != KeyState.ENABLED:
            raise errors.KMSInvalidStateException(f"{key.arn} is {key.state}.")
        return key

    def _material(self, key: KeyRecord, metadata: bytes) -> MaterialRecord | None:
        """The key's material the ciphertextMetadata names. A cached list may predate a
        rotation another process made: a miss asks the store behind the cache once more."""
        if len(metadata) != 1 + MATERIAL_PREFIX or metadata[0] != METADATA_FORMAT:
            return None
        prefix = metadata[1:]
        for store in (self.svc.store, self.svc.store.inner):
            for material in store.materials(key.key_id):
                if bytes.fromhex(material.material_id)[:MATERIAL_PREFIX] == prefix:
                    return material
        return None

    def _guarded(self, operation: str, run: Callable[[], T]) -> T:
        """``run()`` with the token's and store's faults as AWS's errors; a material this
        process does not see yet (another worker made it) is looked for once more."""
        try:
            try:
                return run()
            except hsm.KeyNotFound:
                self.svc.masters.refresh()
                return run()
        except FAULTS as fault:
            raise translate(fault, f"XKS {operation}") from None


def _text(value: Any, default: str) -> str:
    """A token's CK_TOKEN_INFO text (blank-padded), or ``default`` when it has none."""
    text = str(value or "").strip()
    return text or default


def _version() -> str:
    try:
        return importlib.metadata.version("hsmkms")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"
