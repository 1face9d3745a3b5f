"""AES-GCM (NIST SP 800-38D) built from the token's AES-ECB, for a token or a transport that
does not carry CKM_AES_GCM: p11-kit 0.24's RPC (Debian 12) passes only mechanisms on its
allow-list, and CK_GCM_PARAMS is not on it, so C_EncryptInit(CKM_AES_GCM) answers
CKR_MECHANISM_INVALID on the client side and the mechanism is purged from the list.

The key stays on the token: one C_Encrypt(CKM_AES_ECB) per call enciphers the hash subkey
block (0^128), the pre-counter block J0 and the counter blocks; the XOR with the data and
GHASH run here. The output is byte-identical to C_Encrypt(CKM_AES_GCM) with a 96-bit IV and a
128-bit tag (tests compare it with ``cryptography``'s AESGCM). What the host then sees, H and
the keystream of this one message, is what the token would compute for anyone holding the
session anyway; the setting is ``token_mechanisms_off = "AES_GCM"`` to choose it on a token
that has GCM, and capabilities.py chooses it by itself where GCM is not offered.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

_R = 0xE1 << 120  # the GCM reduction polynomial, bit-reflected (SP 800-38D, 6.3)


def _mul(x: int, y: int) -> int:
    """x * y in GF(2^128), SP 800-38D algorithm 1 (blocks as big-endian integers)."""
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def _ghash(h: int, aad: bytes, data: bytes) -> bytes:
    y = 0
    for part in (aad, data):
        for off in range(0, len(part), 16):
            block = part[off : off + 16].ljust(16, b"\0")
            y = _mul(y ^ int.from_bytes(block, "big"), h)
    lengths = (8 * len(aad)).to_bytes(8, "big") + (8 * len(data)).to_bytes(8, "big")
    return _mul(y ^ int.from_bytes(lengths, "big"), h).to_bytes(16, "big")


def _blocks(iv: bytes, n: int) -> bytes:
    """0^128, J0 = IV || 0^31 || 1, then inc32(J0) ... for ``n`` counter blocks."""
    out = [bytes(16), iv + (1).to_bytes(4, "big")]
    out += [iv + ((1 + i) % 2**32).to_bytes(4, "big") for i in range(1, n + 1)]
    return b"".join(out)


def _keystream(ecb: Callable[[bytes], bytes], iv: bytes, length: int) -> tuple[int, bytes, bytes]:
    if len(iv) != 12:
        raise ValueError("GCM from ECB takes a 96-bit IV")
    n = (length + 15) // 16
    out = ecb(_blocks(iv, n))
    return int.from_bytes(out[:16], "big"), out[16:32], out[32 : 32 + length]


def encrypt(ecb: Callable[[bytes], bytes], iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """ciphertext || 16-byte tag, as CKM_AES_GCM gives them; ``ecb`` enciphers blocks."""
    h, ej0, stream = _keystream(ecb, iv, len(plaintext))
    ct = bytes(a ^ b for a, b in zip(plaintext, stream, strict=True))
    tag = bytes(a ^ b for a, b in zip(ej0, _ghash(h, aad, ct), strict=True))
    return ct + tag


def decrypt(
    ecb: Callable[[bytes], bytes], iv: bytes, ciphertext_and_tag: bytes, aad: bytes
) -> bytes | None:
    """The plaintext, or None when the tag does not verify."""
    ct, tag = ciphertext_and_tag[:-16], ciphertext_and_tag[-16:]
    h, ej0, stream = _keystream(ecb, iv, len(ct))
    want = bytes(a ^ b for a, b in zip(ej0, _ghash(h, aad, ct), strict=True))
    if not hmac.compare_digest(want, tag):
        return None
    return bytes(a ^ b for a, b in zip(ct, stream, strict=True))
