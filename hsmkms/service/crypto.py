"""Cryptographic operations: Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext),
GenerateDataKeyPair(WithoutPlaintext), GenerateRandom.

The encryption context is bound as AAD (hsmkms.blob), so Decrypt with a missing, extra or
different context fails as InvalidCiphertextException, as AWS documents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hsmkms import errors
from hsmkms.service.core import (
    Request,
    check_algorithm,
    check_dry_run,
    check_grant_tokens,
    check_usable,
    operation,
)

if TYPE_CHECKING:
    from hsmkms.service import Service

DATA_KEY_BYTES = {"AES_128": 16, "AES_256": 32}
CHINA_ONLY_SPECS = {"SM2"}


def _usable_key(svc: Service, req: Request, member: str = "KeyId") -> Any:
    check_grant_tokens(req)
    key = svc.authorized_key(req, req.params[member])
    check_usable(key)
    return key


@operation("Encrypt")
def encrypt(svc: Service, req: Request) -> dict[str, Any]:
    key = _usable_key(svc, req)
    algorithm = check_algorithm(key, req.get("EncryptionAlgorithm"))
    check_dry_run(req)
    blob, _material = svc.seal(key, req.params["Plaintext"], req.get("EncryptionContext"))
    return {"CiphertextBlob": blob, "KeyId": key.arn, "EncryptionAlgorithm": algorithm}


def _ignore_ciphertext(req: Request) -> bool:
    return req.dry_run and "IGNORE_CIPHERTEXT" in (req.get("DryRunModifiers") or [])


def _dry_run_or_ciphertext(svc: Service, req: Request, key_member: str, algorithm: str) -> None:
    """Decrypt and ReEncrypt: a DryRun with IGNORE_CIPHERTEXT checks the key named by
    ``key_member`` instead of the blob's; otherwise the ciphertext is required."""
    if _ignore_ciphertext(req):
        if req.get(key_member) is None:
            raise errors.ValidationException(
                f"{key_member} is required when DryRunModifiers contains IGNORE_CIPHERTEXT."
            )
        key = _usable_key(svc, req, key_member)
        check_algorithm(key, req.get(algorithm))
        check_dry_run(req)
    if req.get("CiphertextBlob") is None:
        raise errors.ValidationException(
            "1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy "
            "constraint: Member must not be null"
        )


@operation("Decrypt")
def decrypt(svc: Service, req: Request) -> dict[str, Any]:
    check_grant_tokens(req)
    if req.get("Recipient") is not None:
        raise errors.UnsupportedOperationException(
            "Recipient (Nitro Enclaves attestation) is not supported by hsmkms."
        )
    _dry_run_or_ciphertext(svc, req, "KeyId", "EncryptionAlgorithm")
    key, plaintext, material = svc.unseal(
        req,
        req.params["CiphertextBlob"],
        req.get("EncryptionContext"),
        expected_key_id=req.get("KeyId"),
        algorithm=req.get("EncryptionAlgorithm"),
    )
    return {
        "KeyId": key.arn,
        "Plaintext": plaintext,
        "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "KeyMaterialId": material,
    }


@operation("ReEncrypt")
def re_encrypt(svc: Service, req: Request) -> dict[str, Any]:
    check_grant_tokens(req)
    dest = svc.authorized_key(req, req.params["DestinationKeyId"], action="ReEncryptTo")
    check_usable(dest)
    dest_algorithm = check_algorithm(dest, req.get("DestinationEncryptionAlgorithm"))
    _dry_run_or_ciphertext(svc, req, "SourceKeyId", "SourceEncryptionAlgorithm")
    source, plaintext, source_material = svc.unseal(
        req,
        req.params["CiphertextBlob"],
        req.get("SourceEncryptionContext"),
        expected_key_id=req.get("SourceKeyId"),
        algorithm=req.get("SourceEncryptionAlgorithm"),
        action="ReEncryptFrom",
    )
    blob, dest_material = svc.seal(dest, plaintext, req.get("DestinationEncryptionContext"))
    return {
        "CiphertextBlob": blob,
        "SourceKeyId": source.arn,
        "KeyId": dest.arn,
        "SourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        "DestinationEncryptionAlgorithm": dest_algorithm,
        "SourceKeyMaterialId": source_material,
        "DestinationKeyMaterialId": dest_material,
    }


def _data_key_length(req: Request) -> int:
    spec, count = req.get("KeySpec"), req.get("NumberOfBytes")
    if spec is not None and count is not None:
        raise errors.ValidationException(
            "Please specify either number of bytes or key spec, not both."
        )
    if spec is None and count is None:
        raise errors.ValidationException("Please specify either number of bytes or key spec.")
    return DATA_KEY_BYTES[spec] if spec is not None else int(count)


def _data_key(svc: Service, req: Request) -> tuple[Any, bytes, bytes, str]:
    if req.get("Recipient") is not None:
        raise errors.UnsupportedOperationException(
            "Recipient (Nitro Enclaves attestation) is not supported by hsmkms."
        )
    length = _data_key_length(req)
    key = _usable_key(svc, req)
    check_dry_run(req)
    plaintext = svc.random(length)
    blob, material = svc.seal(key, plaintext, req.get("EncryptionContext"))
    return key, plaintext, blob, material


@operation("GenerateDataKey")
def generate_data_key(svc: Service, req: Request) -> dict[str, Any]:
    key, plaintext, blob, material = _data_key(svc, req)
    return {
        "CiphertextBlob": blob,
        "Plaintext": plaintext,
        "KeyId": key.arn,
        "KeyMaterialId": material,
    }


@operation("GenerateDataKeyWithoutPlaintext")
def generate_data_key_without_plaintext(svc: Service, req: Request) -> dict[str, Any]:
    key, _plaintext, blob, material = _data_key(svc, req)
    return {"CiphertextBlob": blob, "KeyId": key.arn, "KeyMaterialId": material}


def _check_pair_spec(svc: Service, spec: str) -> None:
    if spec in CHINA_ONLY_SPECS:
        raise errors.UnsupportedOperationException(
            f"KeyPairSpec {spec} is available only in China Regions; this endpoint serves "
            f"{svc.region}."
        )
    if spec not in svc.keypair_specs:
        raise errors.UnsupportedOperationException(
            f"KeyPairSpec {spec} is not supported by hsmkms."
        )


def _pair_request(svc: Service, req: Request) -> tuple[Any, str]:
    if req.get("Recipient") is not None:
        raise errors.UnsupportedOperationException(
            "Recipient (Nitro Enclaves attestation) is not supported by hsmkms."
        )
    spec = req.params["KeyPairSpec"]
    _check_pair_spec(svc, spec)
    key = _usable_key(svc, req)
    check_dry_run(req)
    assert key.current_material_id is not None
    # Before a pair is taken from the pool: a call the event loop must hand to a thread
    # (its master key's handle is not cached yet) would otherwise waste one.
    svc.check_handle(bytes.fromhex(key.current_material_id))
    return key, spec


@operation("GenerateDataKeyPair")
def generate_data_key_pair(svc: Service, req: Request) -> dict[str, Any]:
    key, spec = _pair_request(svc, req)
    public, private = svc.key_pair(spec)
    blob, material = svc.seal(key, private, req.get("EncryptionContext"))
    return {
        "PrivateKeyCiphertextBlob": blob,
        "PrivateKeyPlaintext": private,
        "PublicKey": public,
        "KeyId": key.arn,
        "KeyPairSpec": spec,
        "KeyMaterialId": material,
    }


@operation("GenerateDataKeyPairWithoutPlaintext")
def generate_data_key_pair_without_plaintext(svc: Service, req: Request) -> dict[str, Any]:
    key, spec = _pair_request(svc, req)
    public, blob, material = svc.key_pair_sealed(key, spec, req.get("EncryptionContext"))
    return {
        "PrivateKeyCiphertextBlob": blob,
        "PublicKey": public,
        "KeyId": key.arn,
        "KeyPairSpec": spec,
        "KeyMaterialId": material,
    }


@operation("GenerateRandom")
def generate_random(svc: Service, req: Request) -> dict[str, Any]:
    if req.get("CustomKeyStoreId") is not None:
        raise errors.UnsupportedOperationException(
            "Custom key stores are not supported by hsmkms."
        )
    if req.get("Recipient") is not None:
        raise errors.UnsupportedOperationException(
            "Recipient (Nitro Enclaves attestation) is not supported by hsmkms."
        )
    count = req.get("NumberOfBytes")
    if count is None:
        raise errors.ValidationException("NumberOfBytes is required.")
    return {"Plaintext": svc.random(int(count))}
