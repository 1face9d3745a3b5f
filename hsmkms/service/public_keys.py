"""Public-key operations on the host: Verify, asymmetric Encrypt, a DeriveSharedSecret peer key.

They use only an asymmetric KMS key's public key (the SubjectPublicKeyInfo the store keeps),
so they run in ``cryptography`` (OpenSSL) rather than on the token, as AWS's own clients do
offline. Every private-key operation stays on the token (DESIGN decision 13).
"""

from __future__ import annotations

import functools

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from hsmkms.specs import ALGORITHMS, EncryptionAlgorithm, SigningAlgorithm

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1,
    "SHA256": hashes.SHA256,
    "SHA384": hashes.SHA384,
    "SHA512": hashes.SHA512,
}
_CURVES = {"secp256r1", "secp384r1", "secp521r1", "secp256k1"}


class PeerKeyError(ValueError):
    """A DeriveSharedSecret PublicKey that is not an EC key on the KMS key's curve."""


@functools.lru_cache(maxsize=1024)
def load(spki: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
    """The public key of an SPKI the store holds (cached: keys are immutable)."""
    key = serialization.load_der_public_key(spki)
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    return key


def hash_of(algorithm: SigningAlgorithm | EncryptionAlgorithm) -> hashes.HashAlgorithm:
    return _HASHES[ALGORITHMS[algorithm][1]]()


def verify(
    spki: bytes, algorithm: SigningAlgorithm, data: bytes, digest: bool, signature: bytes
) -> bool:
    """Whether ``signature`` is the key's over ``data`` (the message, or its digest)."""
    scheme = ALGORITHMS[algorithm][0]
    key = load(spki)
    try:
        if scheme == "EDDSA":
            assert isinstance(key, ed25519.Ed25519PublicKey)
            key.verify(signature, data)
            return True
        h = hash_of(algorithm)
        chosen: hashes.HashAlgorithm | utils.Prehashed = utils.Prehashed(h) if digest else h
        if scheme == "ECDSA":
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(signature, data, ec.ECDSA(chosen))
        else:
            assert isinstance(key, rsa.RSAPublicKey)
            pad = (
                padding.PSS(padding.MGF1(h), padding.PSS.DIGEST_LENGTH)
                if scheme == "PSS"
                else padding.PKCS1v15()
            )
            key.verify(signature, data, pad, chosen)
        return True
    except (InvalidSignature, ValueError):
        return False  # a malformed signature (not DER, wrong length) verifies nothing


def encrypt(spki: bytes, algorithm: EncryptionAlgorithm, plaintext: bytes) -> bytes:
    """RSAES-OAEP with MGF1 and the algorithm's hash both ways, an empty label."""
    key = load(spki)
    assert isinstance(key, rsa.RSAPublicKey)
    h = hash_of(algorithm)
    return key.encrypt(plaintext, padding.OAEP(padding.MGF1(h), h, None))


def peer_point(peer_spki: bytes, curve_name: str) -> bytes:
    """The uncompressed point of a peer's EC SubjectPublicKeyInfo on ``curve_name``."""
    try:
        peer = serialization.load_der_public_key(peer_spki)
    except (ValueError, UnsupportedAlgorithm):
        raise PeerKeyError("PublicKey is not a DER-encoded X.509 SubjectPublicKeyInfo.") from None
    if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name not in _CURVES:
        raise PeerKeyError("PublicKey is not an elliptic curve public key.")
    if peer.curve.name != curve_name:
        raise PeerKeyError(
            f"PublicKey is on curve {peer.curve.name}; the KMS key's curve is {curve_name}."
        )
    return peer.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
