"""Imported key material (Origin EXTERNAL): GetParametersForImport, ImportKeyMaterial,
DeleteImportedKeyMaterial, and the sweep that deletes expired material and wrapping keys.

AWS behaviour copied (the API reference of each operation, botocore's model, the Developer
Guide "Importing key material"):

- A key created with Origin EXTERNAL has no material and is PendingImport. Its material is
  imported wrapped under a wrapping key that GetParametersForImport made where the materials
  live (an RSA pair on the token, valid 24 hours); the ImportToken names that record, which
  binds the KMS key, the wrapping algorithm and spec, and the expiry: a token of another key
  is InvalidImportTokenException, an expired one ExpiredImportTokenException. A token may be
  used again for the same key until it expires (a reimport).
- RSAES_OAEP_SHA_1/256 wrap any material but an RSA private key (which needs RSA_AES_KEY_WRAP),
  and not an ECC_NIST_P521 private key under an RSA_2048 wrapping key; RSAES_PKCS1_V1_5 is
  refused since October 2023.
- The KeyMaterialId of imported material is deterministic in the (KMS key, material) pair, so
  that the same material imported again is recognised: EXISTING_KEY_MATERIAL must be material
  the key has had (else IncorrectKeyMaterialException); NEW_KEY_MATERIAL must not be. ImportType
  defaults to NEW for a key that has never had material, EXISTING after; ImportType,
  KeyMaterialId and KeyMaterialDescription are for symmetric encryption keys only (asymmetric
  and HMAC keys keep the material of their first import).
- NEW material imported into a key that has material waits as PENDING_ROTATION until
  RotateKeyOnDemand makes it current (service/rotation.py); one may wait at a time.
- ExpirationModel defaults to KEY_MATERIAL_EXPIRES, which needs a ValidTo in the future and at
  most 365 days away; KEY_MATERIAL_DOES_NOT_EXPIRE forbids it. Expired material is deleted from
  the token by the scheduler (exactly one process claims it in the store), and the key becomes
  PendingImport until the same material is imported again.
- DeleteImportedKeyMaterial deletes one material (default: the current one) from the token and
  makes the key PendingImport (a PendingDeletion key keeps its state); material that was
  waiting for a rotation is forgotten instead, and the key's state is left alone, since nothing
  was ever encrypted under it.

One import, deletion or expiry of a key runs at a time, across processes: the store lease
``import:<key id>``.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from hsmkms import errors, hsm
from hsmkms.service.core import Request, now, operation
from hsmkms.service.masterkeys import ImportedMaterial
from hsmkms.specs import (
    ExpirationModel,
    Family,
    ImportState,
    ImportType,
    KeySpec,
    KeyState,
    KeyUsage,
    Origin,
    WrappingAlgorithm,
    WrappingKeySpec,
)
from hsmkms.store import EXPIRING, ImportParametersRecord, KeyRecord, MaterialRecord, StoreError

if TYPE_CHECKING:
    from hsmkms.service import Service

log = logging.getLogger("hsmkms.service.imports")

PARAMETERS_VALID = timedelta(hours=24)
MAX_VALID_TO = timedelta(days=365)
LEASE_SECONDS = 60.0
LEASE_WAIT_SECONDS = 10.0
_TOKEN_VERSION = b"\x01"
_WRAPPING_BITS = {
    WrappingKeySpec.RSA_2048: 2048,
    WrappingKeySpec.RSA_3072: 3072,
    WrappingKeySpec.RSA_4096: 4096,
}
_RSAES = (WrappingAlgorithm.RSAES_OAEP_SHA_1, WrappingAlgorithm.RSAES_OAEP_SHA_256)
# The families whose material can be imported into the token.
IMPORTABLE = frozenset({Family.AES, Family.HMAC, Family.RSA, Family.EC})
# Why the others cannot, as CreateKey Origin=EXTERNAL answers.
NOT_IMPORTABLE = {
    Family.EDWARDS: (
        "this HSM's PKCS#11 library cannot unwrap an Ed25519 private key (SoftHSM2 2.6.1 "
        "answers CKR_FUNCTION_FAILED), and hsmkms does not unwrap private keys on the host"
    ),
    Family.ML_DSA: "hsmkms makes post-quantum keys from the HSM's random number generator only",
    Family.ML_KEM: "hsmkms makes post-quantum keys from the HSM's random number generator only",
}
_IMPORT_STATES = (KeyState.PENDING_IMPORT, KeyState.ENABLED, KeyState.DISABLED)


def not_importable(spec: KeySpec) -> str | None:
    """Why material of ``spec`` cannot be imported (None: it can)."""
    if spec.family in IMPORTABLE:
        return None
    return NOT_IMPORTABLE.get(spec.family, f"{spec} key material cannot be imported")


def import_lease(key_id: str) -> str:
    return f"import:{key_id}"


def import_token(import_id: str) -> bytes:
    """The ImportToken of the import parameters ``import_id``: a version byte and the id."""
    return _TOKEN_VERSION + bytes.fromhex(import_id)


# -- checks ------------------------------------------------------------------------------
def _external_key(svc: Service, req: Request) -> KeyRecord:
    key = svc.authorized_key(req, req.key_id, allow_alias=False)
    if key.origin != Origin.EXTERNAL:
        raise errors.UnsupportedOperationException(
            f"{key.arn} origin is {key.origin} which is not valid for this operation."
        )
    return key


def _check_importable_state(key: KeyRecord) -> None:
    if key.state == KeyState.PENDING_DELETION or key.state not in _IMPORT_STATES:
        raise errors.KMSInvalidStateException(f"{key.arn} is {key.state}.")


def _check_algorithm(key: KeyRecord, algorithm: WrappingAlgorithm, spec: WrappingKeySpec) -> None:
    if algorithm is WrappingAlgorithm.RSAES_PKCS1_V1_5:
        raise errors.ValidationException(
            "The RSAES_PKCS1_V1_5 wrapping algorithm is no longer supported: use "
            "RSAES_OAEP_SHA_256, RSAES_OAEP_SHA_1 or an RSA_AES_KEY_WRAP algorithm."
        )
    if algorithm is WrappingAlgorithm.SM2PKE or spec is WrappingKeySpec.SM2:
        raise errors.UnsupportedOperationException(
            "SM2 wrapping is offered by AWS only in its China Regions; hsmkms wraps with RSA."
        )
    key_spec = KeySpec(key.key_spec)
    if algorithm in _RSAES and key_spec.family is Family.RSA:
        raise errors.ValidationException(
            f"{algorithm} cannot wrap RSA key material: to import an RSA private key, use "
            f"RSA_AES_KEY_WRAP_SHA_256 or RSA_AES_KEY_WRAP_SHA_1."
        )
    if (
        algorithm in _RSAES
        and key_spec is KeySpec.ECC_NIST_P521
        and spec is WrappingKeySpec.RSA_2048
    ):
        raise errors.ValidationException(
            f"{algorithm} with an RSA_2048 wrapping key cannot wrap ECC_NIST_P521 key material: "
            f"use an RSA_AES_KEY_WRAP algorithm or a longer wrapping key."
        )


class _Lease:
    """The key's import lease for the length of a ``with`` block (waits a little for it)."""

    def __init__(self, svc: Service, key: KeyRecord) -> None:
        self.svc, self.key = svc, key
        self.name, self.holder = import_lease(key.key_id), f"{uuid.uuid4()}"

    def __enter__(self) -> None:
        deadline = time.monotonic() + LEASE_WAIT_SECONDS
        while not self.svc.store.acquire_lease(self.name, self.holder, now(), LEASE_SECONDS):
            if time.monotonic() > deadline:
                raise errors.DependencyTimeoutException(
                    f"Another import, deletion or expiry of the key material of {self.key.arn} "
                    f"is in progress; retry."
                )
            # Short and jittered: a waiter must not lose every turn to newcomers (the tail
            # of concurrent imports into one key, docs/benchmarks.md).
            time.sleep(random.uniform(0.002, 0.02))

    def __exit__(self, *exc: object) -> None:
        self.svc.store.release_lease(self.name, self.holder)


# -- operations --------------------------------------------------------------------------
@operation("GetParametersForImport")
def get_parameters_for_import(svc: Service, req: Request) -> dict[str, Any]:
    algorithm = req.choice("WrappingAlgorithm", WrappingAlgorithm)
    spec = req.choice("WrappingKeySpec", WrappingKeySpec)
    assert algorithm is not None and spec is not None  # required by the model
    key = _external_key(svc, req)
    _check_importable_state(key)
    _check_algorithm(key, algorithm, spec)
    created = now()
    wrapping_id, public_key = svc.masters.create_wrapping_key(
        key.key_id, created, _WRAPPING_BITS[spec]
    )
    parameters = ImportParametersRecord(
        import_id=wrapping_id,
        key_id=key.key_id,
        wrapping_algorithm=algorithm,
        wrapping_spec=spec,
        public_key=public_key,
        created_at=created,
        expires_at=created + PARAMETERS_VALID,
    )
    try:
        svc.store.add_import_parameters(parameters)
    except StoreError:
        _destroy_wrapping_key(svc, wrapping_id)
        raise
    return {
        "KeyId": key.arn,
        "ImportToken": import_token(wrapping_id),
        "PublicKey": public_key,
        "ParametersValidTo": parameters.expires_at,
    }


def _parameters(svc: Service, key: KeyRecord, token: bytes) -> ImportParametersRecord:
    invalid = errors.InvalidImportTokenException(
        f"The import token is invalid or is associated with a different KMS key than {key.arn}."
    )
    if len(token) != 34 or token[:1] != _TOKEN_VERSION:
        raise invalid
    parameters = svc.store.get_import_parameters(token[1:].hex())
    if parameters is None or parameters.key_id != key.key_id:
        raise invalid
    if parameters.destroyed or parameters.expires_at <= now():
        raise errors.ExpiredImportTokenException(
            "The import token has expired. Use GetParametersForImport to get a new import token "
            "and public key, wrap the key material with the new public key, and try again."
        )
    return parameters


def _expiry(req: Request) -> tuple[ExpirationModel, datetime | None]:
    model = req.choice("ExpirationModel", ExpirationModel) or ExpirationModel.KEY_MATERIAL_EXPIRES
    valid_to: datetime | None = req.get("ValidTo")
    if model is ExpirationModel.KEY_MATERIAL_DOES_NOT_EXPIRE:
        if valid_to is not None:
            raise errors.ValidationException(
                "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE."
            )
        return model, None
    if valid_to is None:
        raise errors.ValidationException(
            "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES (the default)."
        )
    at = now()
    if valid_to <= at:
        raise errors.ValidationException("ValidTo must be a date and time in the future.")
    if valid_to > at + MAX_VALID_TO:
        raise errors.ValidationException("ValidTo must be at most 365 days from now.")
    return model, valid_to


def _import_type(req: Request, key: KeyRecord, materials: list[MaterialRecord]) -> ImportType:
    symmetric = key.key_spec == KeySpec.SYMMETRIC_DEFAULT
    for member in ("ImportType", "KeyMaterialId", "KeyMaterialDescription"):
        if req.get(member) is not None and not symmetric:
            raise errors.ValidationException(
                f"{member} is valid only for symmetric encryption KMS keys; {key.arn} is "
                f"{key.key_spec}."
            )
    chosen = req.choice("ImportType", ImportType)
    if chosen is None:
        chosen = ImportType.EXISTING_KEY_MATERIAL if materials else ImportType.NEW_KEY_MATERIAL
    if chosen is ImportType.NEW_KEY_MATERIAL and req.get("KeyMaterialId") is not None:
        raise errors.ValidationException(
            "You cannot specify a KeyMaterialId with ImportType NEW_KEY_MATERIAL."
        )
    return chosen


@operation("ImportKeyMaterial")
def import_key_material(svc: Service, req: Request) -> dict[str, Any]:
    key = _external_key(svc, req)
    _check_importable_state(key)
    parameters = _parameters(svc, key, req.data("ImportToken") or b"")
    model, valid_to = _expiry(req)
    encrypted = req.data("EncryptedKeyMaterial") or b""
    with _Lease(svc, key):
        key = svc.store.get_key(key.key_id) or key
        _check_importable_state(key)
        materials = svc.store.materials(key.key_id)
        import_type = _import_type(req, key, materials)
        spec = KeySpec(key.key_spec)
        try:
            got = _unwrap(svc, parameters, encrypted, key, spec)
        except hsm.IntegrityError:
            raise errors.InvalidCiphertextException(
                "The encrypted key material does not decrypt under the wrapping key of this "
                f"import token with {parameters.wrapping_algorithm}."
            ) from None
        except hsm.WrongKeyMaterial as exc:
            raise errors.IncorrectKeyMaterialException(f"{exc} ({key.arn} is {spec}).") from None
        except hsm.KeyNotFound:
            raise errors.ExpiredImportTokenException(
                "The wrapping key of this import token is gone: use GetParametersForImport to "
                "get a new import token and public key."
            ) from None
        record = MaterialRecord(got.material_id, key.key_id, now(), public_key=got.public_key)
        try:
            record = _decide(req, key, materials, import_type, record, model, valid_to)
            written = svc.store.put_imported_material(
                record,
                if_state=_IMPORT_STATES,
                state=_state_after_import(key, materials, record.material_id),
                make_current=key.current_material_id is None,
            )
        except BaseException:
            if got.created:
                svc.discard_new_material(record)
            raise
    log.info(
        "imported key material %s into KMS key %s (%s)",
        record.material_id,
        written.arn,
        "waits for RotateKeyOnDemand" if record.pending_rotation else written.state,
    )
    return {"KeyId": written.arn, "KeyMaterialId": record.material_id}


def _unwrap(
    svc: Service,
    parameters: ImportParametersRecord,
    encrypted: bytes,
    key: KeyRecord,
    spec: KeySpec,
) -> ImportedMaterial:
    """The import on the token; a wrapping key the store vouches for but this process's view
    of the token lacks (made by another process) is looked for once more."""
    for attempt in (1, 2):
        try:
            return svc.masters.import_material(
                parameters.import_id,
                WrappingAlgorithm(parameters.wrapping_algorithm),
                encrypted,
                key.key_id,
                now(),
                spec,
                KeyUsage(key.key_usage),
            )
        except hsm.KeyNotFound:
            if attempt == 2:
                raise
            try:
                svc.masters.refresh()
            except hsm.TokenError:
                raise hsm.KeyNotFound("wrapping key not visible") from None
    raise AssertionError("unreachable")


def _decide(
    req: Request,
    key: KeyRecord,
    materials: list[MaterialRecord],
    import_type: ImportType,
    imported: MaterialRecord,
    model: ExpirationModel,
    valid_to: datetime | None,
) -> MaterialRecord:
    """The material's record as this import leaves it, once AWS's rules allow the import."""
    mid = imported.material_id
    known = {m.material_id: m for m in materials}
    named = req.text("KeyMaterialId")
    if import_type is ImportType.EXISTING_KEY_MATERIAL:
        if named is not None and named not in known:
            raise errors.IncorrectKeyMaterialException(
                f"Key material {named} is not associated with {key.arn}."
            )
        if mid not in known or (named is not None and named != mid):
            raise errors.IncorrectKeyMaterialException(
                f"The key material is not the key material previously imported into {key.arn}"
                + (f" as {named}." if named else ".")
            )
        before = known[mid]
        return MaterialRecord(
            mid, key.key_id, before.created_at, before.rotation_type, imported.public_key,
            import_state=ImportState.IMPORTED, pending_rotation=before.pending_rotation,
            expiration_model=model, valid_to=valid_to,
            description=req.text("KeyMaterialDescription") or before.description,
        )  # fmt: skip
    if mid in known:
        raise errors.IncorrectKeyMaterialException(
            f"This key material is already associated with {key.arn} as {mid}: import it with "
            f"ImportType EXISTING_KEY_MATERIAL."
        )
    if any(m.pending_rotation for m in materials):
        raise errors.KMSInvalidStateException(
            f"{key.arn} already has new key material waiting for RotateKeyOnDemand."
        )
    return MaterialRecord(
        mid, key.key_id, imported.created_at, None, imported.public_key,
        import_state=ImportState.IMPORTED, pending_rotation=bool(materials),
        expiration_model=model, valid_to=valid_to,
        description=req.text("KeyMaterialDescription"),
    )  # fmt: skip


def _state_after_import(key: KeyRecord, materials: list[MaterialRecord], mid: str) -> str | None:
    """Enabled once every material of a PendingImport key is imported; else unchanged."""
    if key.state != KeyState.PENDING_IMPORT:
        return None
    others = [m for m in materials if m.material_id != mid and not m.pending_rotation]
    if any(m.import_state != ImportState.IMPORTED for m in others):
        return None
    return KeyState.ENABLED


@operation("DeleteImportedKeyMaterial")
def delete_imported_key_material(svc: Service, req: Request) -> dict[str, Any]:
    key = _external_key(svc, req)
    if key.deletion_claimed:
        raise errors.KMSInvalidStateException(f"{key.arn} is being deleted.")
    with _Lease(svc, key):
        key = svc.store.get_key(key.key_id) or key
        materials = {m.material_id: m for m in svc.store.materials(key.key_id)}
        named = req.text("KeyMaterialId")
        target = named or key.current_material_id
        if target is None:
            raise errors.KMSInvalidStateException(f"{key.arn} has no imported key material.")
        material = materials.get(target)
        if material is None:
            raise errors.NotFoundException(
                f"Key material {target} is not associated with {key.arn}."
            )
        # The token object first: once this answers, the material is gone from the HSM
        # (a crash before the record is written leaves a record a retry finishes).
        svc.destroy_material(target)
        forget = material.pending_rotation
        state = (
            None if forget or key.state == KeyState.PENDING_DELETION else KeyState.PENDING_IMPORT
        )
        svc.store.remove_imported_material(
            key.key_id,
            target,
            if_state=(*_IMPORT_STATES, KeyState.PENDING_DELETION),
            state=state,
            forget=forget,
        )
    log.info("deleted imported key material %s of KMS key %s", target, key.arn)
    return {"KeyId": key.arn, "KeyMaterialId": target}


# -- the scheduler's ---------------------------------------------------------------------
def sweep(svc: Service, at: datetime | None = None) -> list[str]:
    """Delete expired imported material from the token (each claimed by one process in the
    store before its token object is destroyed), and destroy the wrapping keys of expired
    import parameters. Returns the ids of the materials deleted."""
    when = at or now()
    deleted = []
    for material in svc.store.list_expired_materials(when):
        key = svc.store.get_key(material.key_id)
        if key is None:
            continue
        with _Lease(svc, key):
            if material.import_state != EXPIRING and not svc.store.claim_expired_material(
                material.material_id, when
            ):
                continue  # reimported, deleted, or claimed by another process since
            svc.destroy_material(material.material_id)
            svc.store.finish_expiry(material.material_id)
        log.info(
            "imported key material %s of KMS key %s expired: deleted from the HSM",
            material.material_id,
            key.arn,
        )
        deleted.append(material.material_id)
    for parameters in svc.store.list_import_parameters_due(when):
        _destroy_wrapping_key(svc, parameters.import_id)
        svc.store.mark_import_parameters_destroyed(parameters.import_id)
    return deleted


def retire(svc: Service, token: bytes) -> None:
    """Destroy the wrapping key of the import token ``token`` now (the seed file's, used
    once), rather than when its parameters expire."""
    parameters = svc.store.get_import_parameters(token[1:].hex())
    if parameters is not None and not parameters.destroyed:
        _destroy_wrapping_key(svc, parameters.import_id)
        svc.store.mark_import_parameters_destroyed(parameters.import_id)


def destroy_wrapping_keys(svc: Service, key_id: str) -> None:
    """Destroy the wrapping keys of a key being deleted (its records go with the key's)."""
    for parameters in svc.store.list_import_parameters_of(key_id):
        _destroy_wrapping_key(svc, parameters.import_id)


def _destroy_wrapping_key(svc: Service, wrapping_id: str) -> None:
    try:
        svc.masters.destroy_wrapping_key(wrapping_id)
    except hsm.KeyNotFound:
        pass  # already gone: an earlier sweep, interrupted after this step
