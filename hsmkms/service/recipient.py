"""The ``Recipient`` parameter: a secret released to an attested enclave, never in plaintext.

Decrypt, GenerateDataKey, GenerateDataKeyPair, GenerateRandom and DeriveSharedSecret take
``Recipient {KeyEncryptionAlgorithm: RSAES_OAEP_SHA_256, AttestationDocument}``. The document
is verified first (:mod:`.attestation`; its PCRs feed the key policy's
``kms:RecipientAttestation:*`` condition keys), and the answer then carries, instead of the
plaintext field, ``CiphertextForRecipient``: the secret in a CMS EnvelopedData (RFC 5652) as
AWS KMS emits it and the AWS Nitro Enclaves SDK parses it:

    ContentInfo { envelopedData, [0] EnvelopedData {
      version 2,
      recipientInfos { KeyTransRecipientInfo { version 2,
          rid subjectKeyIdentifier (SHA-256 of the enclave's SubjectPublicKeyInfo),
          keyEncryptionAlgorithm RSAES-OAEP (SHA-256, MGF1 with SHA-256),
          encryptedKey: the content key under the enclave's public key } },
      encryptedContentInfo { data, AES-256-CBC with a 16-byte IV, the secret (PKCS#7 padded) }
    } }

in BER whose outer structures have indefinite lengths, as AWS KMS's envelopes do (the SDK's
parser needs that; see :func:`_indefinite`).

The content key and IV come from the token's random number generator; the encryption runs on
the host (OpenSSL, through cryptography): the secret is on the host already, in the answer
it replaces, and no key of the token is involved.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from asn1crypto import algos, cms
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from hsmkms import errors
from hsmkms.service.attestation import Attestation

if TYPE_CHECKING:
    from hsmkms.service import Service
    from hsmkms.service.core import Request

ALGORITHM = "RSAES_OAEP_SHA_256"


def attestation(svc: Service, req: Request) -> Attestation | None:
    """The request's verified attestation document, or None without ``Recipient``; verified
    once per request (a bad one is ValidationException, before anything is released)."""
    recipient = req.get("Recipient")
    if recipient is None:
        return None
    if req.attestation is not None:
        return req.attestation  # type: ignore[no-any-return]
    algorithm = recipient.get("KeyEncryptionAlgorithm") or ALGORITHM
    if algorithm != ALGORITHM:
        raise errors.ValidationException(
            f"KeyEncryptionAlgorithm {algorithm} is not supported: use {ALGORITHM}."
        )
    document = recipient.get("AttestationDocument")
    if not document:
        raise errors.ValidationException(
            "Recipient needs an AttestationDocument: the attested environment's signed "
            "attestation document."
        )
    verified = svc.attestation.verify(bytes(document))
    req.attestation = verified
    return verified


def release(svc: Service, req: Request, answer: dict[str, Any], field: str) -> dict[str, Any]:
    """``answer`` as the caller receives it: with a Recipient, ``field`` (the plaintext)
    replaced by CiphertextForRecipient."""
    verified = attestation(svc, req)
    if verified is None:
        return answer
    secret = answer.pop(field)
    answer["CiphertextForRecipient"] = envelope(bytes(secret), verified.public_key, svc.random)
    return answer


def envelope(secret: bytes, public_key: rsa.RSAPublicKey, random: Any) -> bytes:
    """``secret`` in a CMS EnvelopedData to ``public_key`` (the form in the module doc)."""
    cek, iv = random(32), random(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(secret) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    content = encryptor.update(padded) + encryptor.finalize()
    wrapped = public_key.encrypt(
        cek,
        asym_padding.OAEP(
            mgf=asym_padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        ),
    )
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sha256 = algos.DigestAlgorithm({"algorithm": "sha256"})
    oaep = algos.RSAESOAEPParams(
        {
            "hash_algorithm": sha256,
            "mask_gen_algorithm": algos.MaskGenAlgorithm(
                {"algorithm": "mgf1", "parameters": sha256}
            ),
        }
    )
    recipient = cms.KeyTransRecipientInfo(
        {
            "version": "v2",
            "rid": cms.RecipientIdentifier(
                {"subject_key_identifier": hashlib.sha256(spki).digest()}
            ),
            "key_encryption_algorithm": cms.KeyEncryptionAlgorithm(
                {"algorithm": "rsaes_oaep", "parameters": oaep}
            ),
            "encrypted_key": wrapped,
        }
    )
    recipients = cms.RecipientInfos([cms.RecipientInfo({"ktri": recipient})]).dump()
    algorithm = cms.EncryptionAlgorithm({"algorithm": "aes256_cbc", "parameters": iv}).dump()
    encrypted_content_info = _indefinite(
        _SEQUENCE, _DATA_OID + algorithm + _definite(_CONTENT_0, content)
    )
    enveloped = _indefinite(_SEQUENCE, _VERSION_2 + recipients + encrypted_content_info)
    return _indefinite(_SEQUENCE, _ENVELOPED_OID + _indefinite(_EXPLICIT_0, enveloped))


# The outer structures in BER with indefinite lengths, as AWS KMS sends them: the AWS Nitro
# Enclaves SDK's parser (aws_cms_parse_enveloped_data) steps into ContentInfo, its [0], the
# EnvelopedData and the EncryptedContentInfo by their headers alone, which works only when
# their lengths are indefinite (a definite-length element is skipped whole). The inner parts
# (the recipient infos, the algorithm identifier) are DER. OpenSSL reads both forms.
_SEQUENCE, _EXPLICIT_0, _CONTENT_0 = 0x30, 0xA0, 0x80
_ENVELOPED_OID = bytes.fromhex("06092a864886f70d010703")  # 1.2.840.113549.1.7.3
_DATA_OID = bytes.fromhex("06092a864886f70d010701")  # 1.2.840.113549.1.7.1
_VERSION_2 = bytes.fromhex("020102")


def _indefinite(tag: int, contents: bytes) -> bytes:
    return bytes((tag, 0x80)) + contents + b"\x00\x00"


def _definite(tag: int, contents: bytes) -> bytes:
    n = len(contents)
    if n < 0x80:
        return bytes((tag, n)) + contents
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + contents
