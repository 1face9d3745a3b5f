"""Keys in custom key stores: CreateKey's checks, and the double encryption of a key in an
external key store (its material here, then its external key through the store's proxy)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from hsmkms import errors
from hsmkms.service import xks_client
from hsmkms.service.core import Request
from hsmkms.service.custom_key_stores import (
    CLOUDHSM,
    EXTERNAL,
    _own_store,
    proxy,
    require_connected,
)
from hsmkms.store import CustomKeyStoreRecord, KeyRecord

if TYPE_CHECKING:
    from hsmkms.service import Service


# -- double encryption of keys in an external key store ----------------------------------------
def _xks_meta(key: KeyRecord) -> dict[str, str]:
    from hsmkms.service.core import CURRENT

    req = CURRENT.get()
    principal = req.caller.principal_arn if req else "hsmkms"
    operation_name = req.operation if req else "Internal"
    request_id = req.request_id if req else secrets.token_hex(16)
    return xks_client.request_metadata(principal, key.arn, operation_name, request_id)


def external_seal(
    svc: Service,
    key: KeyRecord,
    store: CustomKeyStoreRecord,
    inner: bytes,
    context: dict[str, str] | None,
) -> bytes:
    """``inner`` (the blob made under the key's material) encrypted again under the key's
    external key by the store's proxy, bound to the key, material and context."""
    from hsmkms import blob as blobfmt

    header = blobfmt.external_header(key.key_id, inner[19 : 19 + blobfmt.MATERIAL_LEN])
    aad = header + blobfmt.encode_context(context)
    assert key.xks_key_id is not None
    try:
        packed = proxy(svc, store).encrypt(key.xks_key_id, inner, aad, _xks_meta(key))
    except xks_client.XksFailure as exc:
        raise errors.KMSInvalidStateException(exc.message) from None
    return header + packed


def external_unseal(
    svc: Service,
    key: KeyRecord,
    store: CustomKeyStoreRecord | None,
    parsed: Any,
    context: dict[str, str] | None,
) -> Any:
    """The inner blob of a kind 0x03 blob, parsed, once the store's proxy decrypted it."""
    from hsmkms import blob as blobfmt
    from hsmkms.service.faults import INVALID_CIPHERTEXT

    if not key.xks_key_id or store is None:
        raise errors.InvalidCiphertextException(INVALID_CIPHERTEXT)
    aad = parsed.header + blobfmt.encode_context(context)
    try:
        inner = proxy(svc, store).decrypt(key.xks_key_id, parsed.body, aad, _xks_meta(key))
    except ValueError:
        raise errors.InvalidCiphertextException(INVALID_CIPHERTEXT) from None
    except xks_client.XksFailure as exc:
        raise errors.KMSInvalidStateException(exc.message) from None
    try:
        inner_blob = blobfmt.parse(inner)
    except blobfmt.MalformedBlob:
        raise errors.InvalidCiphertextException(INVALID_CIPHERTEXT) from None
    if (
        inner_blob.kind != blobfmt.KIND_SEALED
        or inner_blob.key_id != parsed.key_id
        or inner_blob.material_id != parsed.material_id
    ):
        raise errors.InvalidCiphertextException(INVALID_CIPHERTEXT)
    return inner_blob


# -- CreateKey in a custom key store ------------------------------------------------------------
def prepare_key(svc: Service, req: Request, key_id: str, origin: str) -> dict[str, Any]:
    """Check a CreateKey that names a custom key store; the KeyRecord fields it adds. The
    store must be connected; an external key store's key must exist in its proxy, be an
    enabled AES-256 key for ENCRYPT and DECRYPT, and be the key of no other KMS key there."""
    store = _own_store(svc, req)
    wanted = CLOUDHSM if store.store_type == CLOUDHSM else EXTERNAL
    if origin != wanted:
        raise errors.ValidationException(
            f"Origin {origin} does not match custom key store {store.store_id} of type "
            f"{store.store_type}: use Origin {wanted}."
        )
    require_connected(svc, store, req.request_id)
    fields: dict[str, Any] = {"custom_key_store_id": store.store_id}
    if store.store_type == CLOUDHSM:
        svc.router.assign(key_id, store.store_id)
        return fields
    xks_key_id = req.text("XksKeyId")
    if not xks_key_id:
        raise errors.ValidationException("A key in an external key store needs an XksKeyId.")
    if any(k.xks_key_id == xks_key_id for k in svc.store.keys_in_custom_key_store(store.store_id)):
        raise errors.XksKeyAlreadyInUseException(
            f"External key {xks_key_id} is the external key of another KMS key in this store."
        )
    meta = xks_client.request_metadata(req.caller.principal_arn, None, "CreateKey", req.request_id)
    try:
        described = proxy(svc, store).metadata(xks_key_id, meta)
    except xks_client.XksFailure as exc:
        if exc.kind == "KeyNotFoundException":
            raise errors.XksKeyNotFoundException(exc.message) from None
        if exc.kind in ("InvalidStateException", "InvalidKeyUsageException"):
            raise errors.XksKeyInvalidConfigurationException(exc.message) from None
        raise errors.CustomKeyStoreInvalidStateException(exc.message) from None
    usage = described.get("keyUsage") or []
    if (
        described.get("keySpec") != "AES_256"
        or not {"ENCRYPT", "DECRYPT"} <= set(usage)
        or described.get("keyStatus") != "ENABLED"
    ):
        raise errors.XksKeyInvalidConfigurationException(
            f"External key {xks_key_id} must be an enabled AES_256 key for ENCRYPT and DECRYPT "
            f"(the proxy says {described.get('keySpec')}, {usage}, {described.get('keyStatus')})."
        )
    fields["xks_key_id"] = xks_key_id
    return fields
