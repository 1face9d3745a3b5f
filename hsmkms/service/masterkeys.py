"""The master-key seam (DESIGN decision 9): where KMS key materials live, and what is done there.

The operation layer keeps every KMS rule (resolve the key, authorize, check its state, DryRun,
the blob format); what it asks of a material goes through :class:`MasterKeys` and names the
material by its KeyMaterialId (64 hex characters) alone. Whether that material is a token
object with a CKA_ID and a label (``hsmkms.masterkeys.TokenObjects``, the default) or a wrap
in the store under a token-resident domain key (the wrapped mode, for millions of keys) is
the implementation's business; so is which PKCS#11 calls make it happen.

Failures are the token layer's exceptions (:mod:`hsmkms.hsm`): IntegrityError for a wrong
tag, KeyNotFound for a material that is not there, TokenUnavailable, ... whatever holds the
material, it is the HSM that fails, and :mod:`hsmkms.service.faults` maps them to AWS's errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from hsmkms.specs import (
    DataKeyPairSpec,
    EncryptionAlgorithm,
    KeySpec,
    KeyUsage,
    MacAlgorithm,
    SigningAlgorithm,
    WrappingAlgorithm,
)


@dataclass(frozen=True)
class WrappedPrivateKey:
    """A data key pair's private key, wrapped where the material lives so that it never
    exists in host memory in plaintext. ``mechanism`` names how (``"AES_KEY_WRAP_PAD"`` or
    ``"AES_GCM"``, the codes of docs/ciphertext-format.md); ``data`` is what the wrap gave."""

    mechanism: str
    spec: DataKeyPairSpec
    data: bytes


@dataclass(frozen=True)
class ImportedMaterial:
    """An import's outcome: the KeyMaterialId (deterministic in the KMS key and the material:
    :func:`import_context`), an asymmetric key's SPKI DER, and whether the material was put
    where materials live now (False: it was there already, a reimport)."""

    material_id: str
    public_key: bytes | None
    created: bool


def import_context(key_id: str) -> bytes:
    """What an imported material's KeyMaterialId is derived over, with the material: fixed
    forever (blobs name materials by it, and two homes seeded alike must agree on it)."""
    return b"hsmkms KeyMaterialId v1\x00" + key_id.encode()


@dataclass(frozen=True)
class HeldMaterial:
    """A material as its holder lists it for ``hsmkms doctor``: whose it says it is, since
    when, the holder's own name for it (a token object's CKA_LABEL), and the domain key it is
    wrapped under (the wrapped mode; None: a token object)."""

    material_id: str
    label: str
    key_id: str | None  # None: not one hsmkms named (or a name it cannot read)
    created: datetime | None
    wrapped_under: str | None = None


class MasterKeys(Protocol):
    """What the operation layer asks of the place its key materials live."""

    @property
    def pair_specs(self) -> frozenset[DataKeyPairSpec]:
        """The data key pair specs generated (and wrapped) where the materials live rather
        than on the host; such generation is slow, so never on the event loop."""
        ...

    def create(self, key_id: str, created: datetime) -> str:
        """A new AES-256 material (a symmetric KMS key's) for KMS key ``key_id``; its
        KeyMaterialId. Raises TokenFull when there is no room (nothing was created)."""
        ...

    def create_private_key(
        self, key_id: str, created: datetime, spec: KeySpec, usage: KeyUsage
    ) -> tuple[str, bytes]:
        """A new private key of ``spec`` (RSA, ECC) for ``usage`` only: (KeyMaterialId, its
        public key as SubjectPublicKeyInfo DER). TokenFull when there is no room."""
        ...

    def create_hmac_key(self, key_id: str, created: datetime, spec: KeySpec) -> str:
        """A new HMAC key of ``spec`` (HMAC_224 ... HMAC_512); its KeyMaterialId."""
        ...

    def sign(self, material_id: str, algorithm: SigningAlgorithm, data: bytes) -> bytes:
        """A signature by the material: over the digest ``data`` (RSASSA, ECDSA: DER), or the
        message ``data`` (ED25519_SHA_512). MechanismUnsupported for an algorithm the holder
        cannot run (ED25519_PH_SHA_512 on SoftHSM2)."""
        ...

    def decrypt(self, material_id: str, algorithm: EncryptionAlgorithm, ciphertext: bytes) -> bytes:
        """RSAES-OAEP decryption (RSAES_OAEP_SHA_1 / _256); IntegrityError when it fails."""
        ...

    def derive(self, material_id: str, peer_point: bytes, length: int) -> bytes:
        """ECDH with an uncompressed peer point: the x-coordinate, ``length`` bytes."""
        ...

    def mac(self, material_id: str, algorithm: MacAlgorithm, message: bytes) -> bytes: ...

    def verify_mac(
        self, material_id: str, algorithm: MacAlgorithm, message: bytes, mac: bytes
    ) -> bool: ...

    def destroy(self, material_id: str) -> None:
        """Destroy the material for good. KeyNotFound if it is not there."""
        ...

    def create_wrapping_key(self, key_id: str, created: datetime, bits: int) -> tuple[str, bytes]:
        """An RSA wrapping key pair of ``bits`` for imports into ``key_id``, whose private key
        never leaves where the materials live: (its id, 66 hex characters; its SPKI DER)."""
        ...

    def destroy_wrapping_key(self, wrapping_id: str) -> None:
        """KeyNotFound if it is not there."""
        ...

    def import_material(
        self,
        wrapping_id: str,
        algorithm: WrappingAlgorithm,
        encrypted: bytes,
        key_id: str,
        created: datetime,
        spec: KeySpec,
        usage: KeyUsage,
    ) -> ImportedMaterial:
        """Unwrap ``encrypted`` (``algorithm`` under the wrapping key) into a material of
        ``spec`` for ``key_id``, never in plaintext outside the HSM where the HSM can unwrap
        it. IntegrityError: the wrap does not open; WrongKeyMaterial: it holds no key of
        ``spec``; KeyNotFound: the wrapping key is gone."""
        ...

    def holds(self, material_id: str) -> bool:
        """Whether the material exists, looking for it if need be (slow: the doctor's)."""
        ...

    def ready(self, material_id: str) -> bool:
        """Whether a call on the material would start at once, without first having to
        look for it (1-2 s at 10,000 keys): the event loop runs only such calls."""
        ...

    def seal(self, material_id: str, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM under the material: ciphertext || 16-byte tag (NIST SP 800-38D)."""
        ...

    def unseal(self, material_id: str, iv: bytes, sealed: bytes, aad: bytes) -> bytes:
        """The inverse of :meth:`seal`; IntegrityError when the tag does not verify."""
        ...

    def key_pair(self, spec: DataKeyPairSpec) -> tuple[bytes, bytes]:
        """A pair generated where the materials live: (SPKI DER, PKCS#8 DER)."""
        ...

    def key_pair_sealed(
        self, material_id: str, spec: DataKeyPairSpec
    ) -> tuple[bytes, WrappedPrivateKey]:
        """A pair whose private key is wrapped under the material where it was made: (SPKI
        DER, the wrapped private key)."""
        ...

    def unseal_private_key(self, material_id: str, wrapped: WrappedPrivateKey) -> bytes:
        """The PKCS#8 DER of a private key :meth:`key_pair_sealed` wrapped."""
        ...

    def random(self, n: int) -> bytes:
        """``n`` bytes from the HSM's random number generator."""
        ...

    def refresh(self) -> None:
        """Look again for materials another process created since this one last looked."""
        ...

    def status(self) -> dict[str, Any]:
        """The holder's health for ``/health``: ``ok`` and what it is."""
        ...

    def inventory(self) -> dict[str, HeldMaterial]:
        """Every material held, by KeyMaterialId (slow: the doctor's)."""
        ...

    def unsound(self, material_id: str, *, imported: bool = False) -> list[str]:
        """Why the material could leak (an attribute that lets its value out, a value that
        came out when asked, a size other than 256 bits); empty when it is sealed.
        ``imported``: material unwrapped into the HSM, which PKCS#11 never calls
        always-sensitive or never-extractable (it was outside once, by its nature)."""
        ...

    def objects_for(self, spec: KeySpec) -> int:
        """How many objects on the home's token a new material of ``spec`` takes (what
        ``token_max_objects`` counts): 1 for a token object, 0 for a wrap in the store."""
        ...

    def token_materials(self, recorded: int) -> int:
        """Of the ``recorded`` materials the store records, how many are token objects."""
        ...

    def maintain(self, still: Callable[[], bool]) -> None:
        """The holder's own background work, a bounded batch at a time while ``still()``
        (the server's scheduler calls it each round: the wrapped mode's domain-key rotation)."""
        ...

    def close(self) -> None: ...
