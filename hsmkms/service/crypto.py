"""Cryptographic operations: Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext),
GenerateDataKeyPair(WithoutPlaintext), GenerateRandom.

The encryption context is bound as AAD (hsmkms.blob), so Decrypt with a missing, extra or
different context fails as InvalidCiphertextException, as AWS documents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hsmkms import errors, pq
from hsmkms.service import asymmetric, custom_key_stores, recipient
from hsmkms.service.core import (
    Request,
    check_algorithm,
    check_dry_run,
    check_grant_tokens,
    check_usable,
    named_key_id,
    operation,
    resolve_key,
)
from hsmkms.specs import (
    DataKeyPairSpec,
    DataKeySpec,
    DryRunModifier,
    EncryptionAlgorithm,
    KeySpec,
    KeyUsage,
)

if TYPE_CHECKING:
    from hsmkms.service import Service
    from hsmkms.store import KeyRecord


def _usable_key(
    svc: Service, req: Request, member: str = "KeyId", action: str | None = None
) -> KeyRecord:
    check_grant_tokens(req)
    key = svc.authorized_key(req, req.required_text(member), action=action)
    check_usable(key)
    return key


def _asymmetric(key: KeyRecord) -> bool:
    return KeySpec(key.key_spec).asymmetric


@operation("Encrypt")
def encrypt(svc: Service, req: Request) -> dict[str, Any]:
    check_grant_tokens(req)
    key = svc.authorized_key(req, req.required_text("KeyId"))
    if _asymmetric(key):
        asymmetric.check_usage(key, KeyUsage.ENCRYPT_DECRYPT, req.operation)
        rsa = asymmetric.rsa_algorithm(key, req.text("EncryptionAlgorithm"))
        asymmetric.no_context(req.context())
        check_dry_run(req)
        blob = asymmetric.rsa_encrypt(svc, key, rsa, req.required_data("Plaintext"))
        return {"CiphertextBlob": blob, "KeyId": key.arn, "EncryptionAlgorithm": rsa}
    check_usable(key)
    algorithm = check_algorithm(key, req.text("EncryptionAlgorithm"))
    check_dry_run(req)
    blob, _material = svc.seal(key, req.required_data("Plaintext"), req.context())
    return {"CiphertextBlob": blob, "KeyId": key.arn, "EncryptionAlgorithm": algorithm}


def _names_asymmetric(svc: Service, req: Request, member: str) -> bool:
    """Whether the request's ``member`` (KeyId, SourceKeyId) names an asymmetric key: its
    ciphertext is then RSAES-OAEP, not an hsmkms blob. A name that resolves to nothing is
    left to the usual path, which answers as AWS does."""
    named = req.text(member)
    if named is None:
        return False
    try:
        return _asymmetric(resolve_key(svc, req.caller, named))
    except errors.NotFoundException:
        deleted = named_key_id(named)
        if deleted and svc.store.was_deleted(deleted):
            raise  # a deleted key: whatever the ciphertext, the key is not found
        return False


def _rsa_decrypt(
    svc: Service,
    req: Request,
    member: str,
    algorithm_member: str,
    context_member: str,
    action: str | None = None,
) -> tuple[KeyRecord, EncryptionAlgorithm, bytes]:
    """Decrypt an RSAES-OAEP ciphertext with the asymmetric key ``member`` names."""
    key = svc.authorized_key(req, req.required_text(member), action=action)
    asymmetric.check_usage(key, KeyUsage.ENCRYPT_DECRYPT, req.operation)
    algorithm = asymmetric.rsa_algorithm(key, req.text(algorithm_member))
    asymmetric.no_context(req.context(context_member), context_member)
    if _ignore_ciphertext(req):
        check_dry_run(req)
    _require_ciphertext(req)
    check_dry_run(req)
    plaintext = asymmetric.rsa_decrypt(svc, key, algorithm, req.required_data("CiphertextBlob"))
    return key, algorithm, plaintext


def _require_ciphertext(req: Request) -> None:
    if req.get("CiphertextBlob") is None:
        raise errors.ValidationException(
            "1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy "
            "constraint: Member must not be null"
        )


def _ignore_ciphertext(req: Request) -> bool:
    return req.dry_run and DryRunModifier.IGNORE_CIPHERTEXT in req.texts("DryRunModifiers")


def _dry_run_or_ciphertext(
    svc: Service, req: Request, key_member: str, algorithm: str, action: str | None = None
) -> None:
    """Decrypt and ReEncrypt: a DryRun with IGNORE_CIPHERTEXT checks the key named by
    ``key_member`` instead of the blob's, for ``action`` as the real call would (ReEncrypt:
    kms:ReEncryptFrom with the SourceEncryptionContext); otherwise the ciphertext is required."""
    if _ignore_ciphertext(req):
        if req.get(key_member) is None:
            raise errors.ValidationException(
                f"{key_member} is required when DryRunModifiers contains IGNORE_CIPHERTEXT."
            )
        key = _usable_key(svc, req, key_member, action)
        check_algorithm(key, req.text(algorithm))
        check_dry_run(req)
    _require_ciphertext(req)


@operation("Decrypt")
def decrypt(svc: Service, req: Request) -> dict[str, Any]:
    check_grant_tokens(req)
    recipient.attestation(svc, req)  # verified before anything else: a bad one releases nothing
    if _names_asymmetric(svc, req, "KeyId"):
        key, rsa, plain = _rsa_decrypt(
            svc, req, "KeyId", "EncryptionAlgorithm", "EncryptionContext"
        )
        answer = {"KeyId": key.arn, "Plaintext": plain, "EncryptionAlgorithm": rsa}
        return recipient.release(svc, req, answer, "Plaintext")
    _dry_run_or_ciphertext(svc, req, "KeyId", "EncryptionAlgorithm")
    key, plaintext, material = svc.unseal(
        req,
        req.required_data("CiphertextBlob"),
        req.context(),
        expected_key_id=req.text("KeyId"),
        algorithm=req.text("EncryptionAlgorithm"),
    )
    answer = {
        "KeyId": key.arn,
        "Plaintext": plaintext,
        "EncryptionAlgorithm": EncryptionAlgorithm.SYMMETRIC_DEFAULT,
        "KeyMaterialId": material,
    }
    return recipient.release(svc, req, answer, "Plaintext")


@operation("ReEncrypt")
def re_encrypt(svc: Service, req: Request) -> dict[str, Any]:
    check_grant_tokens(req)
    dest = svc.authorized_key(req, req.required_text("DestinationKeyId"), action="ReEncryptTo")
    dest_context = req.context("DestinationEncryptionContext")
    dest_algorithm: EncryptionAlgorithm
    if _asymmetric(dest):
        asymmetric.check_usage(dest, KeyUsage.ENCRYPT_DECRYPT, req.operation)
        dest_algorithm = asymmetric.rsa_algorithm(dest, req.text("DestinationEncryptionAlgorithm"))
        asymmetric.no_context(dest_context, "DestinationEncryptionContext")
    else:
        check_usable(dest)
        dest_algorithm = check_algorithm(dest, req.text("DestinationEncryptionAlgorithm"))
    out: dict[str, Any] = {}
    if _names_asymmetric(svc, req, "SourceKeyId"):
        source, source_algorithm, plaintext = _rsa_decrypt(
            svc, req, "SourceKeyId", "SourceEncryptionAlgorithm", "SourceEncryptionContext",
            action="ReEncryptFrom",
        )  # fmt: skip
    else:
        _dry_run_or_ciphertext(
            svc, req, "SourceKeyId", "SourceEncryptionAlgorithm", action="ReEncryptFrom"
        )
        source, plaintext, out["SourceKeyMaterialId"] = svc.unseal(
            req,
            req.required_data("CiphertextBlob"),
            req.context("SourceEncryptionContext"),
            expected_key_id=req.text("SourceKeyId"),
            algorithm=req.text("SourceEncryptionAlgorithm"),
            action="ReEncryptFrom",
        )
        source_algorithm = EncryptionAlgorithm.SYMMETRIC_DEFAULT
    if _asymmetric(dest):
        blob = asymmetric.rsa_encrypt(svc, dest, dest_algorithm, plaintext)
    else:
        blob, out["DestinationKeyMaterialId"] = svc.seal(dest, plaintext, dest_context)
    return {
        "CiphertextBlob": blob,
        "SourceKeyId": source.arn,
        "KeyId": dest.arn,
        "SourceEncryptionAlgorithm": source_algorithm,
        "DestinationEncryptionAlgorithm": dest_algorithm,
        **out,
    }


def _data_key_length(req: Request) -> int:
    spec, count = req.choice("KeySpec", DataKeySpec), req.number("NumberOfBytes")
    if spec is not None and count is not None:
        raise errors.ValidationException(
            "Please specify either number of bytes or key spec, not both."
        )
    if spec is not None:
        return spec.size
    if count is None:
        raise errors.ValidationException("Please specify either number of bytes or key spec.")
    return count


def _data_key(svc: Service, req: Request) -> tuple[KeyRecord, bytes, bytes, str]:
    recipient.attestation(svc, req)
    length = _data_key_length(req)
    key = _usable_key(svc, req)
    check_dry_run(req)
    plaintext = svc.random(length)
    blob, material = svc.seal(key, plaintext, req.context())
    return key, plaintext, blob, material


@operation("GenerateDataKey")
def generate_data_key(svc: Service, req: Request) -> dict[str, Any]:
    key, plaintext, blob, material = _data_key(svc, req)
    answer = {
        "CiphertextBlob": blob,
        "Plaintext": plaintext,
        "KeyId": key.arn,
        "KeyMaterialId": material,
    }
    return recipient.release(svc, req, answer, "Plaintext")


@operation("GenerateDataKeyWithoutPlaintext")
def generate_data_key_without_plaintext(svc: Service, req: Request) -> dict[str, Any]:
    key, _plaintext, blob, material = _data_key(svc, req)
    return {"CiphertextBlob": blob, "KeyId": key.arn, "KeyMaterialId": material}


def _check_pair_spec(svc: Service, spec: DataKeyPairSpec) -> None:
    if spec.china_only:
        raise errors.UnsupportedOperationException(
            f"KeyPairSpec {spec} is available only in China Regions; this endpoint serves "
            f"{svc.region}."  # China Regions are never served
        )
    if spec not in svc.keypair_specs:
        raise errors.UnsupportedOperationException(
            pq.UNSUPPORTED.get(spec, f"KeyPairSpec {spec} is not supported by hsmkms.")
        )


def _pair_request(svc: Service, req: Request) -> tuple[KeyRecord, DataKeyPairSpec]:
    recipient.attestation(svc, req)
    spec = DataKeyPairSpec(req.required_text("KeyPairSpec"))
    _check_pair_spec(svc, spec)
    key = _usable_key(svc, req)
    check_dry_run(req)
    assert key.current_material_id is not None
    # Before a pair is taken from the pool: a call the event loop must hand to a thread
    # (its master key's handle is not cached yet) would otherwise waste one.
    svc.check_handle(key.current_material_id)
    return key, spec


@operation("GenerateDataKeyPair")
def generate_data_key_pair(svc: Service, req: Request) -> dict[str, Any]:
    key, spec = _pair_request(svc, req)
    public, private = svc.key_pair(spec)
    blob, material = svc.seal(key, private, req.context())
    answer = {
        "PrivateKeyCiphertextBlob": blob,
        "PrivateKeyPlaintext": private,
        "PublicKey": public,
        "KeyId": key.arn,
        "KeyPairSpec": spec,
        "KeyMaterialId": material,
    }
    return recipient.release(svc, req, answer, "PrivateKeyPlaintext")


@operation("GenerateDataKeyPairWithoutPlaintext")
def generate_data_key_pair_without_plaintext(svc: Service, req: Request) -> dict[str, Any]:
    key, spec = _pair_request(svc, req)
    public, blob, material = svc.key_pair_sealed(key, spec, req.context())
    return {
        "PrivateKeyCiphertextBlob": blob,
        "PublicKey": public,
        "KeyId": key.arn,
        "KeyPairSpec": spec,
        "KeyMaterialId": material,
    }


@operation("GenerateRandom")
def generate_random(svc: Service, req: Request) -> dict[str, Any]:
    random = custom_key_stores.random_source(svc, req) or svc.random
    recipient.attestation(svc, req)
    count = req.number("NumberOfBytes")
    if count is None:
        raise errors.ValidationException("NumberOfBytes is required.")
    return recipient.release(svc, req, {"Plaintext": random(count)}, "Plaintext")
