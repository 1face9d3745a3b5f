"""Post-quantum KMS keys (ML-DSA, ML-KEM) whose private key the token cannot hold.

DESIGN decision 13: where the token lacks the mechanism, the key is held wrapped under a
token master key and unwrapped into host memory only for the operation. Such a key's material
is an ordinary AES-256 master key on the token (CKA_ID = the KeyMaterialId, made and
destroyed like a symmetric key's); its private seed comes from the token's random number
generator, is sealed once under that master key with AES-256-GCM, and only the sealed bytes
are stored (``key_materials.sealed_private``: IV || ciphertext || tag, the AAD naming the
KMS key, the material and the spec, so a seal moved to another key or spec does not open).
For each Sign or Decapsulate the token unseals the seed into a bytearray, cryptography
expands it (hsmkms/pq.py), the operation runs, and the bytearray is zeroed. Python cannot
promise that no other copy of it survives in memory until it is reused; the token-held
keys (every other spec) have no such window. ``hsmkms doctor`` lists these keys as host keys.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hsmkms import errors, hsm, pq
from hsmkms.specs import Family, KeySpec

if TYPE_CHECKING:
    from hsmkms.service import Service
    from hsmkms.store import KeyRecord

IV_BYTES = 12
FAMILIES = frozenset({Family.ML_DSA, Family.ML_KEM})


def check_supported(spec: KeySpec) -> None:
    if not pq.supported(spec):
        raise errors.UnsupportedOperationException(
            pq.UNSUPPORTED.get(spec, f"KeySpec {spec} is not supported by hsmkms yet.")
        )


def _aad(key_id: str, material_id: str, spec: KeySpec) -> bytes:
    return f"hsmkms:sealed-private:v1:{key_id}:{material_id}:{spec}".encode()


def create(svc: Service, key_id: str, created: datetime, spec: KeySpec) -> tuple[str, bytes, bytes]:
    """A new material for a post-quantum key: (KeyMaterialId, public SPKI, sealed seed)."""
    check_supported(spec)
    material_id = svc.masters.create(key_id, created)
    seed = bytearray(svc.masters.random(pq.SEED_BYTES[spec]))
    try:
        public = pq.public_spki(pq.from_seed(spec, seed))
        iv = svc.ivs.next()
        sealed = svc.masters.seal(material_id, iv, bytes(seed), _aad(key_id, material_id, spec))
    except BaseException:
        svc.destroy_material(material_id)
        raise
    finally:
        seed[:] = bytes(len(seed))
    return material_id, public, iv + sealed


@contextlib.contextmanager
def private_key(svc: Service, key: KeyRecord, material_id: str, sealed: bytes) -> Iterator[Any]:
    """The key's private key, expanded from its unsealed seed for the length of the block."""
    spec = KeySpec(key.key_spec)
    svc.check_handle(material_id)
    try:
        seed = bytearray(
            svc.masters.unseal(
                material_id,
                sealed[:IV_BYTES],
                sealed[IV_BYTES:],
                _aad(key.key_id, material_id, spec),
            )
        )
    except hsm.IntegrityError:
        # The store's seal does not open under the key's own master key: damage, not a
        # caller's bad ciphertext.
        raise errors.KMSInternalException(
            f"The sealed private key of {key.arn} does not open under its master key."
        ) from None
    try:
        yield pq.from_seed(spec, seed)
    finally:
        seed[:] = bytes(len(seed))
