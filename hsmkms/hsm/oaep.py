"""RSAES-OAEP decoding on the host, in constant time, around a raw RSA decryption on the token.

Why: SoftHSM2 2.6.1 does CKM_RSA_PKCS_OAEP with SHA-1 only (SHA-256 answers
CKR_ARGUMENTS_BAD), and RSAES_OAEP_SHA_256 is the algorithm most clients pick. The private
key stays on the token: the token computes EM = c^d mod n (CKM_RSA_X_509), and only the OAEP
decoding of EM (RFC 8017 section 7.1.2, step 3) runs here. That step is where padding oracles
live (Manger's attack), so it is not written in Python: OpenSSL's constant-time
``RSA_padding_check_PKCS1_OAEP_mgf1`` does it, reached through cryptography's ``decrypt``
with an *identity* RSA key.

The identity key: primes p, q just below 2^(k/2) (the largest two, found by Miller-Rabin,
checked again by OpenSSL's key check when the key is loaded), d = dP = dQ = 1 and
e = lambda(n) + 1, so that e*d = 1 mod lambda(n) is a valid RSA key (RSA_check_key passes)
whose private operation maps x to x^1 = x for every x < n. Its n exceeds every k-bit modulus a
token makes whose primes are not within a few thousand of 2^(k/2) (a token's n is checked
against it before use), so EM passes through OpenSSL's blinded, constant-time modular
exponentiation unchanged, and OpenSSL then decodes it in constant time, failing every bad
padding with the same ``ValueError("Decryption failed")``. The key is public knowledge and
protects nothing: it is a decoder, not a secret.
"""

from __future__ import annotations

import functools
import math

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# 2^(bits/2) - delta is prime for the two deltas: the largest two primes below 2^(bits/2).
_DELTAS = {2048: (105, 179), 3072: (3453, 4977), 4096: (1557, 2543)}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1,
    "SHA224": hashes.SHA224,
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}


class OaepError(ValueError):
    """The ciphertext does not decode (any reason: OpenSSL does not tell, on purpose)."""


@functools.cache
def _identity_key(bits: int) -> rsa.RSAPrivateKey:
    half = bits // 2
    p, q = (2**half - delta for delta in _DELTAS[bits])
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=1,
        dmp1=1,
        dmq1=1,
        iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(lam + 1, p * q),
    )
    return numbers.private_key()  # with OpenSSL's key check (primality included)


def supports(modulus: int) -> bool:
    """Whether a token key of this modulus can be decoded here: a size with an identity key,
    whose n is larger than the token's."""
    bits = modulus.bit_length()
    return bits in _DELTAS and _identity_key(bits).public_key().public_numbers().n > modulus


def decode(encoded: bytes, modulus_bits: int, hash_name: str) -> bytes:
    """The message inside EM (the raw RSA decryption, ``modulus_bits // 8`` bytes), RSAES-OAEP
    with MGF1 and ``hash_name`` ("SHA1", "SHA256", ...) both ways, an empty label. Raises
    :class:`OaepError` for every bad encoding alike."""
    k = modulus_bits // 8
    if len(encoded) != k:  # a token answers k bytes; anything else is its bug, not the data's
        raise OaepError("the raw decryption is not as long as the modulus")
    algorithm = _HASHES[hash_name]()
    pad = padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)
    try:
        return _identity_key(modulus_bits).decrypt(bytes(encoded), pad)
    except ValueError:
        raise OaepError("Decryption failed") from None
