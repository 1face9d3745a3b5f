"""Key material of a seed file: read from the entry (inline base64 or PEM, or a file), checked
against the key's spec as ImportKeyMaterial would check it, and wrapped for ImportKeyMaterial
as a client wraps it with OpenSSL."""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from hsmkms.specs import Family, KeySpec

# How seeded material is wrapped for ImportKeyMaterial: a 2048-bit wrapping key (the quickest
# to make on the token; it never leaves it), OAEP with SHA-1 (every PKCS#11 token has it).
WRAPPING_KEY_SPEC = "RSA_2048"
WRAP_SECRET = "RSAES_OAEP_SHA_1"  # symmetric and HMAC material
WRAP_PRIVATE_KEY = "RSA_AES_KEY_WRAP_SHA_1"  # PKCS#8 private keys (too long for OAEP alone)
# AWS's bounds on imported HMAC material, in bytes: the hash's length to its block size.
HMAC_MAX_BYTES = {224: 64, 256: 64, 384: 128, 512: 128}


def readable_by_others(path: Path, mode: int) -> str:
    """Why a file holding key material that others may read or write is refused."""
    return (
        f"{path} holds key material and is readable or writable by others (mode {mode:04o}): "
        f"run chmod 600 {path}"
    )


def read_material(
    values: dict[str, Any], spec: KeySpec | None, base: Path, fail: Callable[[str, str], None]
) -> bytes | None:
    """The entry's material, checked against its spec: raw bytes, or PKCS#8 DER."""
    inline, named = values.get("material"), values.get("material_file")
    if inline is None and named is None:
        return None
    name = "material" if inline is not None else "material_file"
    if inline is not None and named is not None:
        fail("material", "give material or material_file, not both")
        return None
    if spec is None:
        return None
    from hsmkms.service.imports import not_importable

    reason = not_importable(spec)
    if reason is not None:
        fail(name, f"{spec} key material cannot be imported: {reason}; leave it out to have "
             "the key generated")  # fmt: skip
        return None
    if inline is not None:
        text = inline.strip()
        if spec.asymmetric and text.startswith("-----BEGIN"):
            data = text.encode("ascii", "replace")
        else:
            try:
                data = base64.b64decode("".join(text.split()), validate=True)
            except (binascii.Error, ValueError):
                fail("material", "not base64 (the standard alphabet, with = padding)")
                return None
    else:
        assert named is not None
        file = base / named
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            data = file.read_bytes()
        except OSError as exc:
            fail("material_file", f"cannot read {file}: {exc.strerror}")
            return None
        if mode & 0o077:
            fail("material_file", readable_by_others(file, mode))
            return None
    try:
        return checked_material(spec, data)
    except ValueError as exc:
        fail(name, str(exc))
        return None


def checked_material(spec: KeySpec, data: bytes) -> bytes:
    """``data`` as ImportKeyMaterial of a ``spec`` key takes it, or ValueError saying why not:
    32 raw bytes (symmetric), the hash's length to its block's (HMAC), or a private key of the
    spec's size or curve, in PKCS#8 DER or PEM (PKCS#1 and SEC1 PEM are read too), as PKCS#8
    DER."""
    if spec.family is Family.AES:
        if len(data) != 32:
            raise ValueError(f"symmetric key material must be 32 bytes, not {len(data)}")
        return data
    if spec.family is Family.HMAC:
        low, high = spec.bits // 8, HMAC_MAX_BYTES[spec.bits]
        if not low <= len(data) <= high:
            raise ValueError(f"{spec} key material must be {low} to {high} bytes, not {len(data)}")
        return data
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            private = serialization.load_pem_private_key(data, password=None)
        else:
            private = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise ValueError("the private key is encrypted: give it unencrypted (mode 0600)") from None
    except ValueError:
        raise ValueError("not a private key in PKCS#8 DER or PEM") from None
    if spec.family is Family.RSA:
        if not isinstance(private, rsa.RSAPrivateKey) or private.key_size != spec.bits:
            raise ValueError(f"not an RSA private key of {spec.bits} bits, as {spec} needs")
    elif spec.family is Family.EC and spec.curve is not None:
        if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != (
            spec.curve.name
        ):
            raise ValueError(f"not an EC private key on {spec.curve.name}, as {spec} needs")
    else:
        raise ValueError(f"{spec} key material cannot be imported")
    return private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def wrap(public_key_der: bytes, algorithm: str, material: bytes) -> bytes:
    """``material`` wrapped under the wrapping key ``public_key_der`` (SubjectPublicKeyInfo) as
    AWS's instructions wrap it with OpenSSL: RSAES_OAEP_SHA_1, RSA-OAEP (MGF1 and hash SHA-1)
    of the material; RSA_AES_KEY_WRAP_SHA_1, RSA-OAEP of a fresh 256-bit AES key followed by
    that key's AES Key Wrap with Padding (RFC 5649) of the material."""
    public = serialization.load_der_public_key(public_key_der)
    assert isinstance(public, rsa.RSAPublicKey)
    oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    if algorithm == WRAP_SECRET:
        return public.encrypt(material, oaep)
    if algorithm == WRAP_PRIVATE_KEY:
        aes = os.urandom(32)
        return public.encrypt(aes, oaep) + aes_key_wrap_with_padding(aes, material)
    raise ValueError(f"the seed does not wrap with {algorithm}")
