"""ML-KEM KMS keys (FIPS 203): Encapsulate and Decapsulate.

Encapsulate needs only the public key (on the host, as a client would). Decapsulate unseals the
private seed for the one call (service/host_keys.py). A ciphertext of the wrong length is
InvalidCiphertextException; any other ciphertext yields FIPS 203's implicit-rejection secret,
as AWS documents: Decapsulate never tells a forged ciphertext from a good one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hsmkms import errors, pq
from hsmkms.service import host_keys
from hsmkms.service.asymmetric import check_usage, material_record
from hsmkms.service.core import Request, check_dry_run, check_grant_tokens, operation
from hsmkms.specs import EncapsulationAlgorithm, KeySpec, KeyUsage

if TYPE_CHECKING:
    from hsmkms.service import Service
    from hsmkms.store import KeyRecord


def _key(svc: Service, req: Request) -> tuple[KeyRecord, KeySpec, EncapsulationAlgorithm]:
    check_grant_tokens(req)
    key = svc.authorized_key(req, req.key_id)
    spec = check_usage(key, KeyUsage.ENCAPSULATE_DECAPSULATE, req.operation)
    algorithm = EncapsulationAlgorithm(req.required_text("EncapsulationAlgorithm"))
    if algorithm not in spec.encapsulation_algorithms:
        raise errors.InvalidKeyUsageException(
            f"Algorithm {algorithm} is incompatible with key spec {spec}."
        )
    return key, spec, algorithm


@operation("Encapsulate")
def encapsulate(svc: Service, req: Request) -> dict[str, Any]:
    key, _spec, algorithm = _key(svc, req)
    check_dry_run(req)
    m = material_record(svc, key)
    assert m.public_key is not None
    secret, ciphertext = pq.encapsulate(m.public_key)
    return {
        "KeyId": key.arn,
        "SharedSecret": secret,
        "SharedSecretCiphertextBlob": ciphertext,
        "EncapsulationAlgorithm": algorithm,
    }


@operation("Decapsulate")
def decapsulate(svc: Service, req: Request) -> dict[str, Any]:
    key, spec, algorithm = _key(svc, req)
    ciphertext = req.required_data("SharedSecretCiphertextBlob")
    size = pq.CIPHERTEXT_BYTES[spec]
    if len(ciphertext) != size:
        raise errors.InvalidCiphertextException(
            f"An {spec} ciphertext is {size} bytes; this one is {len(ciphertext)}."
        )
    check_dry_run(req)
    m = material_record(svc, key)
    assert m.sealed_private is not None
    with host_keys.private_key(svc, key, m.material_id, m.sealed_private) as private:
        secret = pq.decapsulate(private, ciphertext)
    return {"KeyId": key.arn, "SharedSecret": secret, "EncapsulationAlgorithm": algorithm}
