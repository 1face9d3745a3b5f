"""The ciphertext blob: hsmkms's own versioned, self-describing format (docs/ciphertext-format.md).

Decrypt needs no KeyId: the blob names its KMS key and key material. Every header byte and the
canonical encryption context are bound into the AES-GCM tag as AAD, so a flipped bit anywhere,
or a different context, fails authentication.

    offset  size  field
    0       1     magic 0x48 ('H')
    1       1     format version, 0x01
    2       1     kind: 0x01 sealed payload, 0x02 token-wrapped private key; bit 0x80 set:
                  the key id is a multi-Region key's (mrk-<32 hex>), not a UUID
    3       16    KMS key id (UUID, big-endian bytes; or the 32 hex digits of mrk-...)
    19      32    key material id (the master key object's CKA_ID)
    kind 0x01 (sealed):
    51      12    IV
    63      n     AES-256-GCM ciphertext of the plaintext
    63+n    16    GCM tag                      AAD = bytes 0..50 || context
    kind 0x02 (wrapped private key; the token cannot wrap with GCM):
    51      1     wrap mechanism: 0x01 AES_KEY_WRAP_PAD (RFC 5649), 0x02 AES_GCM
    52      1     data key pair spec code (DataKeyPairSpec.blob_code, hsmkms/specs.py)
    53      12    IV of the binding tag
    65      n     wrapped private key, as the token's C_WrapKey gave it
    65+n    16    GCM tag of an empty plaintext   AAD = bytes 0..52 || context || wrapped key
    kind 0x03 (a key in an external key store: double encryption):
    51      n     the external layer: the proxy's AES-GCM (service/xks_client.py pack) of a
                  kind 0x01 blob of the same key, with AAD = bytes 0..50 || context
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Final

from hsmkms.specs import DataKeyPairSpec

MAGIC: Final = 0x48
VERSION: Final = 0x01
KIND_SEALED: Final = 0x01
KIND_WRAPPED: Final = 0x02
KIND_EXTERNAL: Final = 0x03
IV_LEN: Final = 12
TAG_LEN: Final = 16
MATERIAL_LEN: Final = 32
_PREFIX = struct.Struct(">BBB16s32s")  # magic, version, kind, key id, material id
PREFIX_LEN: Final = _PREFIX.size  # 51

MULTI_REGION: Final = 0x80  # flag in the kind byte: the key id is mrk-<32 hex>
WRAP_MECHANISMS: Final = {0x01: "AES_KEY_WRAP_PAD", 0x02: "AES_GCM"}
WRAP_CODES: Final = {v: k for k, v in WRAP_MECHANISMS.items()}


class MalformedBlob(ValueError):
    """The bytes are not an hsmkms ciphertext blob of a known version."""


@dataclass(frozen=True)
class Blob:
    """A parsed blob. ``aad_prefix`` is the header part of the AAD (bytes 0..header end)."""

    kind: int
    key_id: str
    material_id: bytes
    iv: bytes
    body: bytes  # sealed: ciphertext || tag; wrapped: the wrapped key (tag separate)
    tag: bytes
    header: bytes
    wrap_mechanism: str | None = None
    spec: DataKeyPairSpec | None = None

    @property
    def material_hex(self) -> str:
        return self.material_id.hex()

    def aad(self, context: dict[str, str] | None) -> bytes:
        aad = self.header + encode_context(context)
        if self.kind == KIND_WRAPPED:
            aad += self.body
        return aad


def encode_context(context: dict[str, str] | None) -> bytes:
    """Canonical encryption context: u32 count, then each pair sorted by the key's UTF-8 bytes
    as (u32 length, key bytes, u32 length, value bytes). Case-sensitive and injective."""
    items = sorted(
        ((k.encode("utf-8"), v.encode("utf-8")) for k, v in (context or {}).items()),
    )
    out = [struct.pack(">I", len(items))]
    for k, v in items:
        out.append(struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v)
    return b"".join(out)


def _key_id_bytes(kind: int, key_id: str) -> tuple[int, bytes]:
    if key_id.startswith("mrk-"):
        return kind | MULTI_REGION, bytes.fromhex(key_id[4:])
    return kind, uuid.UUID(key_id).bytes


def sealed_header(key_id: str, material_id: bytes) -> bytes:
    kind, key_bytes = _key_id_bytes(KIND_SEALED, key_id)
    return _PREFIX.pack(MAGIC, VERSION, kind, key_bytes, material_id)


def external_header(key_id: str, material_id: bytes) -> bytes:
    kind, key_bytes = _key_id_bytes(KIND_EXTERNAL, key_id)
    return _PREFIX.pack(MAGIC, VERSION, kind, key_bytes, material_id)


def wrapped_header(key_id: str, material_id: bytes, mechanism: str, spec: DataKeyPairSpec) -> bytes:
    if not spec.blob_code:
        raise ValueError(f"no blob code is assigned to {spec}")
    kind, key_bytes = _key_id_bytes(KIND_WRAPPED, key_id)
    return _PREFIX.pack(MAGIC, VERSION, kind, key_bytes, material_id) + bytes(
        (WRAP_CODES[mechanism], spec.blob_code)
    )


def parse(data: bytes) -> Blob:
    """Split a blob into its fields; raise :class:`MalformedBlob` on anything unexpected."""
    if len(data) < PREFIX_LEN:
        raise MalformedBlob("too short")
    magic, version, kind, key_bytes, material = _PREFIX.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise MalformedBlob("not an hsmkms blob of a known version")
    if kind & MULTI_REGION:
        kind &= ~MULTI_REGION
        key_id = "mrk-" + key_bytes.hex()
    else:
        key_id = str(uuid.UUID(bytes=key_bytes))
    if kind == KIND_SEALED:
        rest = data[PREFIX_LEN:]
        if len(rest) < IV_LEN + TAG_LEN:
            raise MalformedBlob("too short")
        return Blob(
            kind=kind,
            key_id=key_id,
            material_id=material,
            iv=rest[:IV_LEN],
            body=rest[IV_LEN:],
            tag=rest[-TAG_LEN:],
            header=data[:PREFIX_LEN],
        )
    if kind == KIND_WRAPPED:
        if len(data) < PREFIX_LEN + 2 + IV_LEN + 1 + TAG_LEN:
            raise MalformedBlob("too short")
        mech_code, spec = data[PREFIX_LEN], DataKeyPairSpec.by_blob_code(data[PREFIX_LEN + 1])
        if mech_code not in WRAP_MECHANISMS or spec is None:
            raise MalformedBlob("unknown wrap mechanism or key pair spec")
        header_len = PREFIX_LEN + 2
        iv = data[header_len : header_len + IV_LEN]
        return Blob(
            kind=kind,
            key_id=key_id,
            material_id=material,
            iv=iv,
            body=data[header_len + IV_LEN : -TAG_LEN],
            tag=data[-TAG_LEN:],
            header=data[:header_len],
            wrap_mechanism=WRAP_MECHANISMS[mech_code],
            spec=spec,
        )
    if kind == KIND_EXTERNAL:
        if len(data) < PREFIX_LEN + 2:
            raise MalformedBlob("too short")
        return Blob(
            kind=kind,
            key_id=key_id,
            material_id=material,
            iv=b"",
            body=data[PREFIX_LEN:],
            tag=b"",
            header=data[:PREFIX_LEN],
        )
    raise MalformedBlob("unknown blob kind")


def seal(header: bytes, iv: bytes, ciphertext_and_tag: bytes) -> bytes:
    return header + iv + ciphertext_and_tag


def wrapped(header: bytes, iv: bytes, wrapped_key: bytes, tag: bytes) -> bytes:
    return header + iv + wrapped_key + tag
