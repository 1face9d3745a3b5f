"""Asymmetric and HMAC KMS keys: Sign, Verify, GetPublicKey, GenerateMac, VerifyMac,
DeriveSharedSecret, and the RSA halves of Encrypt, Decrypt and ReEncrypt (service/crypto.py).

Private-key operations run where the material lives (:meth:`MasterKeys.sign` and friends: on
the token); public-key ones (Verify, Encrypt) run on the host with the public key the store
keeps (service/public_keys.py), as a client would offline. Checks follow AWS's order: the key
(resolution, key policy and grants), its state, its usage, the algorithm, the message, DryRun.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from hsmkms import errors, pq
from hsmkms.service import host_keys, public_keys, quick, recipient
from hsmkms.service.core import (
    Request,
    check_dry_run,
    check_enabled,
    check_grant_tokens,
    operation,
)
from hsmkms.specs import (
    ALGORITHMS,
    HASH_BYTES,
    EncryptionAlgorithm,
    Family,
    KeyAgreementAlgorithm,
    KeySpec,
    KeyUsage,
    MacAlgorithm,
    MessageType,
    Origin,
    SigningAlgorithm,
    oaep_max_plaintext,
)

if TYPE_CHECKING:
    from hsmkms.service import Service
    from hsmkms.store import KeyRecord, MaterialRecord


def check_usage(key: KeyRecord, usage: KeyUsage, operation_name: str) -> KeySpec:
    """An Enabled key of ``usage``; its spec. InvalidKeyUsageException else, as AWS words it."""
    check_enabled(key)
    if key.key_usage != usage:
        raise errors.InvalidKeyUsageException(
            f"{key.arn} key usage is {key.key_usage} which is not valid for {operation_name}."
        )
    return KeySpec(key.key_spec)


def _key(svc: Service, req: Request, usage: KeyUsage) -> tuple[KeyRecord, KeySpec]:
    check_grant_tokens(req)
    key = svc.authorized_key(req, req.key_id)
    return key, check_usage(key, usage, req.operation)


def _incompatible(algorithm: str, spec: KeySpec) -> errors.KMSError:
    return errors.InvalidKeyUsageException(
        f"Algorithm {algorithm} is incompatible with key spec {spec}."
    )


def material_record(svc: Service, key: KeyRecord) -> MaterialRecord:
    """The key's (one) material's record."""
    material_id = key.current_material_id
    for m in svc.store.materials(key.key_id):
        if m.material_id == material_id:
            return m
    raise errors.KMSInternalException(f"{key.arn} has no record of its key material.")


def material(svc: Service, key: KeyRecord) -> tuple[str, bytes | None]:
    """The key's (one) material: (KeyMaterialId, public key SPKI or None for HMAC). Before a
    call on it, the handle check of the event loop (``Service.check_handle``)."""
    m = material_record(svc, key)
    return m.material_id, m.public_key


def _ready(svc: Service, spec: KeySpec, material_id: str) -> None:
    if spec in quick.SLOW_SPECS:
        quick.check_may_wait()
    svc.check_handle(material_id)


# -- Sign and Verify --------------------------------------------------------------------------


def _signing_input(req: Request, spec: KeySpec) -> tuple[SigningAlgorithm, bytes, bool]:
    """(algorithm, what is signed or verified, a flag): the flag says the data is a digest
    (RSA, ECDSA) or FIPS 204's mu (ML-DSA, EXTERNAL_MU) rather than the message itself."""
    algorithm = SigningAlgorithm(req.required_text("SigningAlgorithm"))
    if algorithm not in spec.signing_algorithms:
        raise _incompatible(algorithm, spec)
    message_type = req.choice("MessageType", MessageType) or MessageType.RAW
    message = req.required_data("Message")
    scheme, hash_name = ALGORITHMS[algorithm]
    if scheme == "ML_DSA":
        if message_type is MessageType.DIGEST:
            raise errors.ValidationException(
                f"MessageType DIGEST is not valid for {algorithm}: use RAW or EXTERNAL_MU."
            )
        external_mu = message_type is MessageType.EXTERNAL_MU
        if external_mu and len(message) != pq.MU_BYTES:
            raise errors.ValidationException(
                f"An EXTERNAL_MU message is the {pq.MU_BYTES}-byte mu of FIPS 204; this one is "
                f"{len(message)} bytes."
            )
        return algorithm, message, external_mu
    if message_type is MessageType.EXTERNAL_MU:
        raise errors.ValidationException(
            f"MessageType EXTERNAL_MU is valid only for ML-DSA keys, not {spec}."
        )
    if scheme == "EDDSA":
        if message_type is not MessageType.RAW:
            raise errors.ValidationException(
                f"Signing algorithm {algorithm} requires MessageType RAW."
            )
        return algorithm, message, False
    if scheme == "EDDSA_PH" and message_type is not MessageType.DIGEST:
        raise errors.ValidationException(
            f"Signing algorithm {algorithm} requires MessageType DIGEST."
        )
    if message_type is MessageType.DIGEST:
        if len(message) != HASH_BYTES[hash_name]:
            raise errors.ValidationException(f"Digest is invalid length for algorithm {algorithm}.")
        return algorithm, message, True
    return algorithm, hashlib.new(hash_name.lower(), message).digest(), True


@operation("Sign")
def sign(svc: Service, req: Request) -> dict[str, Any]:
    key, spec = _key(svc, req, KeyUsage.SIGN_VERIFY)
    algorithm, data, prehashed = _signing_input(req, spec)
    check_dry_run(req)
    m = material_record(svc, key)
    _ready(svc, spec, m.material_id)
    if spec.family is Family.ML_DSA:
        assert m.sealed_private is not None
        with host_keys.private_key(svc, key, m.material_id, m.sealed_private) as private:
            signature = pq.sign(private, data, external_mu=prehashed)
    else:
        signature = svc.masters.sign(m.material_id, algorithm, data)
    return {"KeyId": key.arn, "Signature": signature, "SigningAlgorithm": algorithm}


@operation("Verify")
def verify(svc: Service, req: Request) -> dict[str, Any]:
    key, spec = _key(svc, req, KeyUsage.SIGN_VERIFY)
    algorithm, data, digest = _signing_input(req, spec)
    signature = req.required_data("Signature")
    check_dry_run(req)
    if ALGORITHMS[algorithm][0] == "EDDSA_PH":
        raise errors.UnsupportedOperationException(
            f"{algorithm} (Ed25519ph) is not supported by hsmkms: neither the HSM's PKCS#11 "
            "library nor OpenSSL offers it. Use ED25519_SHA_512 with MessageType RAW."
        )
    _material_id, spki = material(svc, key)
    assert spki is not None
    valid = (
        pq.verify(spki, data, digest, signature)
        if spec.family is Family.ML_DSA
        else public_keys.verify(spki, algorithm, data, digest, signature)
    )
    if not valid:
        raise errors.KMSInvalidSignatureException("Signature is invalid.")
    return {"KeyId": key.arn, "SignatureValid": True, "SigningAlgorithm": algorithm}


# -- GetPublicKey -----------------------------------------------------------------------------


@operation("GetPublicKey")
def get_public_key(svc: Service, req: Request) -> dict[str, Any]:
    check_grant_tokens(req)
    key = svc.authorized_key(req, req.key_id)
    check_enabled(key)
    spec = KeySpec(key.key_spec)
    if not spec.asymmetric:
        raise errors.UnsupportedOperationException(
            f"{key.arn} is a {spec} key: only asymmetric KMS keys have a public key."
        )
    _material_id, spki = material(svc, key)
    out: dict[str, Any] = {
        "KeyId": key.arn,
        "PublicKey": spki,
        "CustomerMasterKeySpec": spec,
        "KeySpec": spec,
        "KeyUsage": key.key_usage,
    }
    out.update(algorithm_lists(spec, KeyUsage(key.key_usage)))
    return out


def algorithm_lists(spec: KeySpec, usage: KeyUsage) -> dict[str, list[str]]:
    """The one algorithm list DescribeKey and GetPublicKey show for the key's usage."""
    if usage is KeyUsage.ENCRYPT_DECRYPT:
        return {"EncryptionAlgorithms": list(spec.encryption_algorithms)}
    if usage is KeyUsage.SIGN_VERIFY:
        return {"SigningAlgorithms": list(spec.signing_algorithms)}
    if usage is KeyUsage.KEY_AGREEMENT:
        return {"KeyAgreementAlgorithms": list(spec.key_agreement_algorithms)}
    if usage is KeyUsage.GENERATE_VERIFY_MAC:
        return {"MacAlgorithms": list(spec.mac_algorithms)}
    if usage is KeyUsage.ENCAPSULATE_DECAPSULATE:
        return {"EncapsulationAlgorithms": list(spec.encapsulation_algorithms)}
    return {}


# -- GenerateMac and VerifyMac ----------------------------------------------------------------


def _mac_request(svc: Service, req: Request) -> tuple[KeyRecord, str, MacAlgorithm, bytes]:
    key, spec = _key(svc, req, KeyUsage.GENERATE_VERIFY_MAC)
    algorithm = MacAlgorithm(req.required_text("MacAlgorithm"))
    if algorithm not in spec.mac_algorithms:
        raise _incompatible(algorithm, spec)
    message = req.required_data("Message")
    mac = req.data("Mac")
    check_dry_run(req)
    material_id, _ = material(svc, key)
    _ready(svc, spec, material_id)
    if mac is not None:
        if not svc.masters.verify_mac(material_id, algorithm, message, mac):
            raise errors.KMSInvalidMacException("The MAC is not valid for the message and key.")
        return key, material_id, algorithm, b""
    return key, material_id, algorithm, svc.masters.mac(material_id, algorithm, message)


@operation("GenerateMac")
def generate_mac(svc: Service, req: Request) -> dict[str, Any]:
    key, _mid, algorithm, mac = _mac_request(svc, req)
    return {"Mac": mac, "MacAlgorithm": algorithm, "KeyId": key.arn}


@operation("VerifyMac")
def verify_mac(svc: Service, req: Request) -> dict[str, Any]:
    key, _mid, algorithm, _ = _mac_request(svc, req)
    return {"KeyId": key.arn, "MacValid": True, "MacAlgorithm": algorithm}


# -- DeriveSharedSecret -----------------------------------------------------------------------


@operation("DeriveSharedSecret")
def derive_shared_secret(svc: Service, req: Request) -> dict[str, Any]:
    recipient.attestation(svc, req)
    key, spec = _key(svc, req, KeyUsage.KEY_AGREEMENT)
    algorithm = KeyAgreementAlgorithm(req.required_text("KeyAgreementAlgorithm"))
    if algorithm not in spec.key_agreement_algorithms:
        raise _incompatible(algorithm, spec)
    assert spec.curve is not None
    try:
        point = public_keys.peer_point(req.required_data("PublicKey"), spec.curve.name)
    except public_keys.PeerKeyError as exc:
        raise errors.ValidationException(str(exc)) from None
    check_dry_run(req)
    material_id, _ = material(svc, key)
    _ready(svc, spec, material_id)
    secret = svc.masters.derive(material_id, point, (spec.curve.bits + 7) // 8)
    answer = {
        "KeyId": key.arn,
        "SharedSecret": secret,
        "KeyAgreementAlgorithm": algorithm,
        "KeyOrigin": Origin(key.origin),
    }
    return recipient.release(svc, req, answer, "SharedSecret")


# -- RSA Encrypt and Decrypt (called by service/crypto.py) ------------------------------------


def rsa_algorithm(key: KeyRecord, algorithm: str | None) -> EncryptionAlgorithm:
    """The EncryptionAlgorithm of an RSA ENCRYPT_DECRYPT key's request: required, and one of
    the key's."""
    spec = KeySpec(key.key_spec)
    if algorithm is None or algorithm == EncryptionAlgorithm.SYMMETRIC_DEFAULT:
        raise errors.InvalidKeyUsageException(
            f"{key.arn} is an asymmetric {spec} key: the request needs an EncryptionAlgorithm, "
            f"one of {', '.join(spec.encryption_algorithms)}."
        )
    if algorithm not in spec.encryption_algorithms:
        raise _incompatible(algorithm, spec)
    return EncryptionAlgorithm(algorithm)


def no_context(context: dict[str, str] | None, member: str = "EncryptionContext") -> None:
    if context:
        raise errors.ValidationException(
            f"{member} is not supported with asymmetric KMS keys: RSAES-OAEP binds no context."
        )


def rsa_encrypt(
    svc: Service, key: KeyRecord, algorithm: EncryptionAlgorithm, plaintext: bytes
) -> bytes:
    spec = KeySpec(key.key_spec)
    limit = oaep_max_plaintext(spec.bits, ALGORITHMS[algorithm][1])
    if len(plaintext) > limit:
        raise errors.ValidationException(
            f"Plaintext is {len(plaintext)} bytes; {algorithm} with a {spec} key encrypts at "
            f"most {limit} bytes."
        )
    _material_id, spki = material(svc, key)
    assert spki is not None
    return public_keys.encrypt(spki, algorithm, plaintext)


def rsa_decrypt(
    svc: Service, key: KeyRecord, algorithm: EncryptionAlgorithm, ciphertext: bytes
) -> bytes:
    spec = KeySpec(key.key_spec)
    if len(ciphertext) != spec.bits // 8:
        raise errors.InvalidCiphertextException(
            f"The ciphertext is not a {spec} RSAES-OAEP ciphertext ({spec.bits // 8} bytes)."
        )
    material_id, _ = material(svc, key)
    _ready(svc, spec, material_id)
    return svc.masters.decrypt(material_id, algorithm, ciphertext)
