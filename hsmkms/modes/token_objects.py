"""The token-object mode: each key material is a master key object on the token.

A material is an AES-256 secret key with ``CKA_TOKEN``, ``CKA_PRIVATE``, ``CKA_SENSITIVE``,
not ``CKA_EXTRACTABLE``, not ``CKA_MODIFIABLE`` (DESIGN decision 3); its ``CKA_ID`` is the
32 bytes whose hex is AWS's KeyMaterialId, and its ``CKA_LABEL`` names the KMS key and the
time it was made, so that ``hsmkms doctor`` can tell an orphan a crash left long ago from a
creation whose record is being written right now. Every verb is one call of the token layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from hsmkms import hsm
from hsmkms.service.masterkeys import (
    HeldMaterial,
    ImportedMaterial,
    WrappedPrivateKey,
    import_context,
)
from hsmkms.specs import (
    ALGORITHMS,
    DataKeyPairSpec,
    EncryptionAlgorithm,
    Family,
    KeySpec,
    KeyUsage,
    MacAlgorithm,
    SigningAlgorithm,
    WrappingAlgorithm,
)

MATERIAL_BYTES = 32
DOMAIN_LABEL = "hsmkms-domain:"  # CKA_LABEL prefix of the wrapped mode's domain keys
# A wrapping key's CKA_ID: a marker byte and 32 random bytes (33: never taken for a material).
_WRAPPING_MARKER = b"W"
# How each WrappingAlgorithm wraps: the token layer's scheme and the OAEP hash.
_WRAPPINGS = {
    WrappingAlgorithm.RSAES_OAEP_SHA_1: ("RSAES_OAEP", "SHA1"),
    WrappingAlgorithm.RSAES_OAEP_SHA_256: ("RSAES_OAEP", "SHA256"),
    WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_1: ("RSA_AES_KEY_WRAP", "SHA1"),
    WrappingAlgorithm.RSA_AES_KEY_WRAP_SHA_256: ("RSA_AES_KEY_WRAP", "SHA256"),
}
# The one PKCS#11 usage of an asymmetric KMS key's private key, by KeyUsage.
_USES = {
    KeyUsage.SIGN_VERIFY: "sign",
    KeyUsage.ENCRYPT_DECRYPT: "decrypt",
    KeyUsage.KEY_AGREEMENT: "derive",
}

_LABEL = re.compile(
    r"^hsmkms:(?P<key>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r":(?P<mid>[0-9a-f]{16})(?::(?P<created>\d{1,12}))?(?P<moved>:moved)?$"
)


def material_label(key_id: str, material_id: bytes, created: datetime, moved: bool = False) -> str:
    """CKA_LABEL of a master key: ``hsmkms:<key id>:<material id prefix>:<unix seconds>``,
    and ``:moved`` for one unwrapped onto the token from the wrapped mode (``hsmkms migrate``)."""
    label = f"hsmkms:{key_id}:{material_id.hex()[:16]}:{int(created.timestamp())}"
    return label + ":moved" if moved else label


@dataclass(frozen=True)
class Label:
    key_id: str
    created: datetime | None  # None on labels written before the time was part of them
    moved: bool = False  # unwrapped onto the token from a wrap


def parse_material_label(label: str, material_id: bytes) -> Label | None:
    """The key and creation time a label names, if it is one of ours for this material."""
    m = _LABEL.match(label)
    if m is None or m["mid"] != material_id.hex()[:16]:
        return None
    created = m["created"]
    when = datetime.fromtimestamp(int(created), UTC) if created else None
    return Label(m["key"], when, moved=bool(m["moved"]))


class TokenObjects:
    """:class:`hsmkms.service.masterkeys.MasterKeys` over one token, a token object per
    material. ``token_pairs``: data key pairs are generated (and their private keys wrapped)
    on the token, for the specs the token can make (the ``keypair_source = "token"``
    setting); otherwise the host makes them."""

    def __init__(self, token: hsm.Token, *, token_pairs: bool = False) -> None:
        self.token = token
        self._pair_specs: frozenset[DataKeyPairSpec] = (
            frozenset(DataKeyPairSpec(s) for s in token.keypair_specs)
            if token_pairs
            else frozenset()
        )

    @property
    def pair_specs(self) -> frozenset[DataKeyPairSpec]:
        return self._pair_specs

    def create(self, key_id: str, created: datetime) -> str:
        material = self.token.random(MATERIAL_BYTES)
        self.token.create_master_key(material, material_label(key_id, material, created))
        return material.hex()

    def create_private_key(
        self, key_id: str, created: datetime, spec: KeySpec, usage: KeyUsage
    ) -> tuple[str, bytes]:
        material = self.token.random(MATERIAL_BYTES)
        label = material_label(key_id, material, created)
        spki = self.token.create_private_key(material, label, spec, _USES[usage])
        return material.hex(), bytes(spki)

    def create_hmac_key(self, key_id: str, created: datetime, spec: KeySpec) -> str:
        material = self.token.random(MATERIAL_BYTES)
        self.token.create_secret_key(material, material_label(key_id, material, created), spec.bits)
        return material.hex()

    def sign(self, material_id: str, algorithm: SigningAlgorithm, data: bytes) -> bytes:
        scheme, hash_name = ALGORITHMS[algorithm]
        if scheme == "EDDSA_PH":
            # SoftHSM2 2.6.1 signs pure Ed25519 when asked for Ed25519ph (it ignores
            # CK_EDDSA_PARAMS.phFlag): a silently wrong signature. No token known to us
            # does it right, and cryptography has no Ed25519ph for the host.
            raise hsm.MechanismUnsupported(
                f"{algorithm} (Ed25519ph, RFC 8032) is not supported by this HSM's PKCS#11 "
                f"library; sign with ED25519_SHA_512 (MessageType RAW) instead"
            )
        return bytes(self.token.sign(bytes.fromhex(material_id), scheme, hash_name, data))

    def decrypt(self, material_id: str, algorithm: EncryptionAlgorithm, ciphertext: bytes) -> bytes:
        _scheme, hash_name = ALGORITHMS[algorithm]
        return bytes(self.token.decrypt_oaep(bytes.fromhex(material_id), hash_name, ciphertext))

    def derive(self, material_id: str, peer_point: bytes, length: int) -> bytes:
        return bytes(self.token.derive(bytes.fromhex(material_id), peer_point, length))

    def mac(self, material_id: str, algorithm: MacAlgorithm, message: bytes) -> bytes:
        _scheme, hash_name = ALGORITHMS[algorithm]
        return bytes(self.token.mac(bytes.fromhex(material_id), hash_name, message))

    def verify_mac(
        self, material_id: str, algorithm: MacAlgorithm, message: bytes, mac: bytes
    ) -> bool:
        _scheme, hash_name = ALGORITHMS[algorithm]
        return self.token.verify_mac(bytes.fromhex(material_id), hash_name, message, mac)

    def destroy(self, material_id: str) -> None:
        self.token.destroy_master_key(bytes.fromhex(material_id))

    def create_wrapping_key(self, key_id: str, created: datetime, bits: int) -> tuple[str, bytes]:
        wrapping_id = _WRAPPING_MARKER + self.token.random(MATERIAL_BYTES)
        label = f"hsmkms-wrap:{key_id}:{int(created.timestamp())}"
        spki = self.token.create_wrapping_key(wrapping_id, label, bits)
        return wrapping_id.hex(), bytes(spki)

    def destroy_wrapping_key(self, wrapping_id: str) -> None:
        self.token.destroy_wrapping_key(bytes.fromhex(wrapping_id))

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
        scheme, hash_name = _WRAPPINGS[algorithm]
        use = _USES[usage] if spec.family not in (Family.AES, Family.HMAC) else None
        got = self.token.import_key(
            bytes.fromhex(wrapping_id),
            scheme,
            hash_name,
            encrypted,
            spec,
            use,
            import_context(key_id),
            lambda mid: material_label(key_id, mid, created),
        )
        public = None if got.public_key is None else bytes(got.public_key)
        return ImportedMaterial(got.material_id.hex(), public, got.created)

    def holds(self, material_id: str) -> bool:
        return self.token.has_master_key(bytes.fromhex(material_id))

    def ready(self, material_id: str) -> bool:
        return self.token.has_master(bytes.fromhex(material_id))

    def seal(self, material_id: str, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self.token.encrypt(bytes.fromhex(material_id), iv, plaintext, aad)

    def unseal(self, material_id: str, iv: bytes, sealed: bytes, aad: bytes) -> bytes:
        return self.token.decrypt(bytes.fromhex(material_id), iv, sealed, aad)

    def key_pair(self, spec: DataKeyPairSpec) -> tuple[bytes, bytes]:
        public, private = self.token.generate_key_pair(spec)
        return bytes(public), bytes(private)

    def key_pair_sealed(
        self, material_id: str, spec: DataKeyPairSpec
    ) -> tuple[bytes, WrappedPrivateKey]:
        public, wrapped = self.token.generate_wrapped_key_pair(spec, bytes.fromhex(material_id))
        return bytes(public), WrappedPrivateKey(
            wrapped.mechanism, DataKeyPairSpec(wrapped.spec), wrapped.data
        )

    def unseal_private_key(self, material_id: str, wrapped: WrappedPrivateKey) -> bytes:
        key = hsm.WrappedKey(wrapped.mechanism, wrapped.spec, wrapped.data)
        return bytes(self.token.unwrap_private_key(bytes.fromhex(material_id), key))

    def random(self, n: int) -> bytes:
        return bytes(self.token.random(n))

    def refresh(self) -> None:
        self.token.refresh()

    def status(self) -> dict[str, Any]:
        status = self.token.status()
        return {
            "ok": status.ok,
            "label": status.label,
            "manufacturer": status.manufacturer,
            "model": status.model,
            "detail": status.detail,
        }

    def inventory(self) -> dict[str, HeldMaterial]:
        held = {}
        for mid, label in self.token.list_master_keys():
            if label.startswith(DOMAIN_LABEL):
                continue  # a domain key of the wrapped mode: it holds no KMS key's material
            parsed = parse_material_label(label, mid)
            held[mid.hex()] = HeldMaterial(
                mid.hex(),
                label,
                parsed.key_id if parsed else None,
                parsed.created if parsed else None,
            )
        return held

    def unsound(self, material_id: str, *, imported: bool = False) -> list[str]:
        check = self.token.check_master_key(bytes.fromhex(material_id))
        label = parse_material_label(check.label, bytes.fromhex(material_id))
        if imported or (label is not None and label.moved):
            # Unwrapped (an import, or a move from the wrapped mode): CKA_ALWAYS_SENSITIVE and
            # CKA_NEVER_EXTRACTABLE are false by PKCS#11, and SoftHSM2 leaves CKA_VALUE_LEN 0
            # (the import measured it: hsm/imports.py).
            bits = 256 if check.kind == "AES" and check.bits == 0 else check.bits
            check = replace(check, always_sensitive=True, never_extractable=True, bits=bits)
        right_size = check.bits == 256 or check.kind != "AES"  # other kinds: their spec's
        usages = [
            name
            for name, allowed in (
                ("CKA_SIGN", check.sign),
                ("CKA_DECRYPT", check.decrypt),
                ("CKA_DERIVE", check.derive),
            )
            if allowed
        ]
        # A master key encrypts and wraps, never signs or derives; a private or HMAC key
        # has the one usage of its KMS key (an HMAC key signs, and verifies).
        extra_usage = check.sign or check.derive if check.kind == "AES" else len(usages) > 1
        if check.sealed and right_size and not extra_usage:
            return []
        reasons = [
            name
            for name, bad in (
                ("CKA_SENSITIVE false", not check.sensitive),
                ("CKA_EXTRACTABLE true", check.extractable),
                ("CKA_MODIFIABLE true", check.modifiable),
                ("not a token object", not check.token),
                ("not private", not check.private),
                ("its value was readable", check.value_readable),
                ("it could be wrapped out", check.wrappable),
                (f"{check.bits}-bit, not 256", not right_size),
                (f"allowed {' and '.join(usages) or 'CKA_SIGN'} beyond its use", extra_usage),
            )
            if bad
        ]
        return reasons or ["not sealed"]

    def objects_for(self, spec: KeySpec) -> int:
        return 1

    def token_materials(self, recorded: int) -> int:
        return recorded

    def maintain(self, still: Callable[[], bool]) -> None:
        """Nothing: a token object needs no background work."""

    def close(self) -> None:
        self.token.close()
