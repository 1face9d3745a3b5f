"""The token's contract: every verb and property the rest of hsmkms uses on a token.

``service/``, the CLI and the tests name :class:`Token`; :func:`hsmkms.hsm.open_token` returns
the PKCS#11 implementation (:class:`hsmkms.hsm.token.PKCS11Token`), and a stand-in a test passes
for a token satisfies this protocol too. Nothing here names a session, a handle, a mechanism
object or a CK_* value: those stay inside ``hsm/``.

``material_id`` is the 32-byte CKA_ID of a master key (its hex is AWS's KeyMaterialId).
``spec`` is a :class:`~hsmkms.specs.DataKeyPairSpec`; its string (``"RSA_2048"``, ...) does as
well, since a member compares equal to its string. Every CKR_* that reaches the token layer
becomes one of the exceptions of :mod:`hsmkms.hsm`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from hsmkms.specs import DataKeyPairSpec, KeySpec

if TYPE_CHECKING:
    from hsmkms.hsm.wrapping import Wrapping

MATERIAL_ID_BYTES = 32
IV_BYTES = 12  # the GCM IV: 96 bits (NIST SP 800-38D section 8.2)
TAG_BYTES = 16  # the GCM tag: 128 bits

# How a private key leaves the token wrapped (WrappedKey.mechanism).
GCM = "AES_GCM"
KWP = "AES_KEY_WRAP_PAD"  # AES Key Wrap with Padding, RFC 5649


@dataclass(frozen=True)
class WrappedKey:
    """A private key wrapped on the token under a master key.

    ``mechanism`` names how (``"AES_KEY_WRAP_PAD"`` or ``"AES_GCM"``); ``spec`` is the
    DataKeyPairSpec, needed to unwrap; ``data`` the wrapped bytes (for AES_GCM: iv || ct || tag).
    """

    mechanism: str
    spec: DataKeyPairSpec
    data: bytes


@dataclass(frozen=True)
class Wrapped:
    """A KMS key material wrapped under a domain key (the wrapped mode, hsm/wrapping.py): how
    (``"AES_KEY_WRAP_PAD"``, or ``"AES_GCM"``: then ``data`` is iv || ciphertext || tag), the
    wrapped bytes, and an asymmetric key's SubjectPublicKeyInfo DER."""

    mechanism: str
    data: bytes
    public_key: bytes | None = None


@dataclass(frozen=True)
class ImportedKey:
    """An import's outcome (:meth:`Token.import_key`): the material id, an asymmetric key's
    SubjectPublicKeyInfo DER, and whether a token object was made (False: the token already
    held this material under this id, a reimport)."""

    material_id: bytes
    public_key: bytes | None
    created: bool


@dataclass(frozen=True)
class MasterKeyCheck:
    """What the token says about one master key, and whether it let it out when asked.

    ``value_readable`` and ``wrappable`` are the results of actually trying (reading CKA_VALUE,
    C_WrapKey of the key under itself); a sealed key answers False to both.
    """

    label: str
    bits: int
    token: bool
    private: bool
    sensitive: bool
    always_sensitive: bool
    extractable: bool
    never_extractable: bool
    modifiable: bool
    encrypt: bool
    decrypt: bool
    wrap: bool
    unwrap: bool
    value_readable: bool
    wrappable: bool
    kind: str = "AES"  # AES (a master key), RSA, EC, EDWARDS, HMAC
    sign: bool = False
    derive: bool = False

    @property
    def sealed(self) -> bool:
        """Stored, secret, never extractable, unchangeable, and nothing came out."""
        return (
            self.token
            and self.private
            and self.sensitive
            and self.always_sensitive
            and not self.extractable
            and self.never_extractable
            and not self.modifiable
            and not self.value_readable
            and not self.wrappable
        )


@dataclass(frozen=True)
class TokenStatus:
    ok: bool
    label: str
    manufacturer: str = ""
    model: str = ""
    detail: str = ""


class Token(Protocol):
    """A logged-in token holding the master keys: thread-safe, one per process is enough.

    The verbs below are all ``service/`` needs on the request path; the last group (the check
    for ``doctor``, the wrap mechanism, the label, whether the library locks itself) serves
    start-up, health and inspection.
    """

    # -- master keys (DESIGN decision 3) ----------------------------------------------------

    def create_master_key(self, material_id: bytes, label: str) -> None:
        """A new AES-256 token object with CKA_ID = ``material_id`` and CKA_LABEL = ``label``,
        sensitive, never extractable, not modifiable: it never leaves the token.
        :class:`~hsmkms.hsm.TokenFull` if the token has no room."""
        ...

    def destroy_master_key(self, material_id: bytes) -> None:
        """Destroy the token object; :class:`~hsmkms.hsm.KeyNotFound` if there is none."""
        ...

    def has_master_key(self, material_id: bytes) -> bool:
        """Whether the token holds the key. A key whose handle is not cached is searched for."""
        ...

    def has_master(self, material_id: bytes) -> bool:
        """Whether the key's handle is cached, so that a call on it searches nothing.

        No token call and no lock, for a caller that must decide quickly whether it may run a
        call where it cannot wait (an event loop). False does not mean the key is missing:
        that is :meth:`has_master_key`, which searches."""
        ...

    def list_master_keys(self) -> list[tuple[bytes, str]]:
        """(CKA_ID, CKA_LABEL) of every master key on the token, sorted. Searches the token
        (seconds at 10,000 keys on SoftHSM2): not for requests."""
        ...

    # -- AES-GCM and random ------------------------------------------------------------------

    def encrypt(self, material_id: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM (NIST SP 800-38D) with a 96-bit IV and a 128-bit tag: ciphertext || tag,
        byte-identical to ``cryptography``'s ``AESGCM(key).encrypt(iv, plaintext, aad)``."""
        ...

    def decrypt(
        self, material_id: bytes, iv: bytes, ciphertext_and_tag: bytes, aad: bytes
    ) -> bytes:
        """The inverse of :meth:`encrypt`. :class:`~hsmkms.hsm.IntegrityError` if the tag does
        not verify, and only while the token is provably healthy (DESIGN decision 6)."""
        ...

    def random(self, n: int) -> bytes:
        """``n`` bytes from the token's RNG (C_GenerateRandom)."""
        ...

    # -- data key pairs made on the token (DESIGN decision 5) --------------------------------

    @property
    def keypair_specs(self) -> frozenset[DataKeyPairSpec]:
        """The DataKeyPairSpecs this token can generate (decided from its mechanisms at open)."""
        ...

    def generate_key_pair(self, spec: DataKeyPairSpec | str) -> tuple[bytes, bytes]:
        """A key pair made by the token: (SubjectPublicKeyInfo DER of RFC 5280, PKCS#8 DER of
        RFC 5958 v1). :class:`~hsmkms.hsm.MechanismUnsupported` for a spec it cannot make."""
        ...

    def generate_wrapped_key_pair(
        self, spec: DataKeyPairSpec | str, material_id: bytes
    ) -> tuple[bytes, WrappedKey]:
        """A key pair whose private key leaves the token only wrapped under the master key
        ``material_id``: (SubjectPublicKeyInfo DER, WrappedKey). Its plaintext never enters
        this process."""
        ...

    def unwrap_private_key(self, material_id: bytes, wrapped: WrappedKey) -> bytes:
        """The private key of ``wrapped`` as PKCS#8 DER (RFC 5958 v1); a blob that does not
        unwrap under that master key is an :class:`~hsmkms.hsm.IntegrityError`."""
        ...

    # -- keys that sign, decrypt, derive or MAC (DESIGN decision 13; hsm/keyobjects.py) --------
    # Found and destroyed like master keys (has_master_key, destroy_master_key, ...): every
    # token object with a 32-byte CKA_ID is a key material. Hash names: "SHA1" ... "SHA512".

    def create_private_key(
        self, material_id: bytes, label: str, spec: KeySpec | str, use: str
    ) -> bytes:
        """A sensitive, never extractable token private key of ``spec`` (RSA_*, ECC_*) whose
        one use is ``"sign"``, ``"decrypt"`` or ``"derive"``: its SubjectPublicKeyInfo DER."""
        ...

    def create_secret_key(self, material_id: bytes, label: str, bits: int) -> None:
        """A sensitive, never extractable token HMAC key of ``bits`` that signs and verifies."""
        ...

    def sign(self, material_id: bytes, scheme: str, hash_name: str, data: bytes) -> bytes:
        """``scheme`` PKCS1, PSS (salt = hash length) or ECDSA over the digest ``data`` (ECDSA
        answers DER); EDDSA over the message ``data`` (pure Ed25519, 64 bytes)."""
        ...

    def decrypt_oaep(self, material_id: bytes, hash_name: str, ciphertext: bytes) -> bytes:
        """RSAES-OAEP (MGF1 with the same hash, empty label); a ciphertext that does not
        decrypt is an :class:`~hsmkms.hsm.IntegrityError`."""
        ...

    def derive(self, material_id: bytes, peer_point: bytes, length: int) -> bytes:
        """ECDH with the uncompressed X9.62 ``peer_point``: the raw x-coordinate, ``length``
        bytes. A point the token refuses is an :class:`~hsmkms.hsm.IntegrityError`."""
        ...

    def mac(self, material_id: bytes, hash_name: str, message: bytes) -> bytes:
        """HMAC of ``message`` under the token key."""
        ...

    def verify_mac(self, material_id: bytes, hash_name: str, message: bytes, mac: bytes) -> bool:
        """Whether ``mac`` is the HMAC of ``message`` (C_Verify on the token)."""
        ...

    # -- imported key material (hsm/imports.py) ----------------------------------------------
    # A wrapping key's id is 33 bytes (not a material's 32): searches for materials skip it.

    def create_wrapping_key(self, wrapping_id: bytes, label: str, bits: int) -> bytes:
        """An RSA pair of ``bits`` whose private key, a token object that never leaves the
        token, only unwraps and decrypts: the public key's SubjectPublicKeyInfo DER."""
        ...

    def destroy_wrapping_key(self, wrapping_id: bytes) -> None:
        """Destroy the wrapping key; :class:`~hsmkms.hsm.KeyNotFound` if there is none."""
        ...

    def import_key(
        self,
        wrapping_id: bytes,
        scheme: str,
        hash_name: str,
        encrypted: bytes,
        spec: KeySpec | str,
        use: str | None,
        context: bytes,
        label: Callable[[bytes], str],
    ) -> ImportedKey:
        """Unwrap ``encrypted`` into a token object of ``spec`` (``scheme`` ``"RSAES_OAEP"``
        or ``"RSA_AES_KEY_WRAP"``, OAEP with ``hash_name``), its CKA_ID deterministic in
        ``context`` and the material, labelled ``label(material_id)``, allowed ``use`` alone
        (a private key). :class:`~hsmkms.hsm.IntegrityError` when the wrap does not open,
        :class:`~hsmkms.hsm.WrongKeyMaterial` when it holds no key of ``spec``."""
        ...

    # -- health and life ---------------------------------------------------------------------

    def status(self) -> TokenStatus:
        """C_GetTokenInfo and the login state; a lost token is re-initialised (rate-limited).
        Never raises: a token in trouble answers ``ok=False`` with the reason."""
        ...

    def refresh(self) -> None:
        """Re-read the token from scratch (C_Finalize + C_Initialize, login, forget handles),
        for a master key the store knows that this process cannot see. Rate-limited like
        recovery: :class:`~hsmkms.hsm.TokenUnavailable` when too soon."""
        ...

    def close(self) -> None:
        """Forget the handles; the last token of a label in this process logs it out."""
        ...

    # -- start-up, doctor and inspection -----------------------------------------------------

    def check_master_key(self, material_id: bytes) -> MasterKeyCheck:
        """A master key's protection attributes, and the results of trying to extract it
        (CKA_VALUE, C_WrapKey): for ``doctor``, which asks whether it is sealed."""
        ...

    @property
    def wrap_mechanism(self) -> str | None:
        """``"AES_GCM"`` or ``"AES_KEY_WRAP_PAD"``: what C_WrapKey uses here; None if neither."""
        ...

    @property
    def label(self) -> str:
        """The token's CKA_LABEL, as configured (``token_label``)."""
        ...

    @property
    def wrapping(self) -> Wrapping:
        """The wrapped mode's verbs: domain keys, and materials wrapped under them."""
        ...

    @property
    def os_locking(self) -> bool:
        """Whether the library guards itself (CKF_OS_LOCKING_OK), so that key pairs generate
        beside the request path instead of behind it."""
        ...
