"""What the token can do, decided once per process at the first login: the DataKeyPairSpecs
it generates (from its mechanisms and their key sizes) and how it wraps (by trial).

SoftHSM2 2.6.1 leaves CK_MECHANISM_INFO.flags uninitialised for CKM_AES_GCM (we read stack
addresses such as 0x7fb20f39c740) and then refuses CKM_AES_GCM in C_WrapKey, so a report with
bits outside the flags PKCS#11 v3.0 defines is noise, and wrapping a throwaway key decides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.mechanisms import GCMParams

from hsmkms.hsm import errors
from hsmkms.hsm.contract import GCM, IV_BYTES, KWP, TAG_BYTES
from hsmkms.hsm.session import destroy
from hsmkms.specs import DataKeyPairSpec, Family

# The families whose pairs a PKCS#11 v2.40 token makes and wraps (pairs.py). Ed25519
# (ECC_NIST_EDWARDS25519) is left out on purpose: SoftHSM2 2.6.1 generates Ed25519 pairs but
# its C_WrapKey answers CKR_KEY_NOT_WRAPPABLE for them, so the token cannot keep the promise of
# GenerateDataKeyPairWithoutPlaintext. SM2 and ML-KEM are not PKCS#11 v2.40 key types at all.
FAMILIES = frozenset({Family.RSA, Family.EC})

# Every mechanism flag PKCS#11 v3.0 defines.
_KNOWN_MECHANISM_FLAGS = 0x8000_0000 | 0x03FF_FFFF


def _mechanism_flags_credible(flags: int) -> bool:
    return 0 <= flags and not flags & ~_KNOWN_MECHANISM_FLAGS


def wrap_params(name: str, iv: bytes) -> tuple[Mechanism, GCMParams | None]:
    """The C_WrapKey/C_UnwrapKey mechanism for GCM (with ``iv``, no AAD) or KWP."""
    if name == GCM:
        return Mechanism.AES_GCM, GCMParams(iv, b"", 8 * TAG_BYTES)
    return Mechanism.AES_KEY_WRAP_PAD, None


def mechanisms(names: str) -> frozenset[Mechanism]:
    """``"AES_KEY_WRAP_PAD, EC_KEY_PAIR_GEN"`` (CKM_ names without CKM_) as mechanisms."""
    out = set()
    for name in filter(None, (n.strip().upper().removeprefix("CKM_") for n in names.split(","))):
        try:
            out.add(Mechanism[name])
        except KeyError:
            raise ValueError(f"no PKCS#11 mechanism is named CKM_{name}") from None
    return frozenset(out)


class Capabilities:
    """Key pair specs and wrap mechanisms of one token, empty until :meth:`learn` ran.
    ``off``: mechanisms not to use though the token offers them (a vendor's broken one)."""

    def __init__(self, off: frozenset[Mechanism] = frozenset()) -> None:
        self.off = off
        self.learned = False
        self.keypair_specs: frozenset[DataKeyPairSpec] = frozenset()
        # How master keys do AES-GCM: GCM (C_Encrypt with CKM_AES_GCM), ECB (GCM built on the
        # token's CKM_AES_ECB, gcm_ecb.py: p11-kit 0.24 does not carry GCM), or None.
        self.gcm: str | None = None
        self.wrap_mechanism: str | None = None  # GCM or KWP: what C_WrapKey uses
        self.unwrap_mechanisms: frozenset[str] = frozenset()

    def learn(self, session: Any, slot: Any, healthy: Callable[[], bool]) -> None:
        """Ask the token once (on the logged-in ``session`` of ``slot``); ``healthy`` tells
        a refused trial from a sick token."""
        if not self.learned:
            self._describe(session, slot, healthy)
            self.learned = True

    def _describe(self, session: Any, slot: Any, healthy: Callable[[], bool]) -> None:
        """Key pair specs from the generation mechanisms, wrap mechanisms from a trial."""
        offered = set(slot.get_mechanisms()) - self.off
        # By trial too: NSS 3.87's softoken offers CKM_AES_GCM, yet answers python-pkcs11's
        # C_Encrypt with CKR_BUFFER_TOO_SMALL; then GCM is built on its ECB (gcm_ecb.py).
        if Mechanism.AES_GCM in offered and self._trial_gcm(session, healthy):
            self.gcm = GCM
        elif Mechanism.AES_ECB in offered:
            self.gcm = "ECB"
        makeable = [spec for spec in DataKeyPairSpec if spec.family in FAMILIES]
        # (least, most) key bits of each generation mechanism the token offers (most 0: any).
        sizes: dict[Mechanism, tuple[int, int]] = {}
        for mechanism in dict.fromkeys(Mechanism[spec.mechanism] for spec in makeable):
            if mechanism in offered:
                info = slot.get_mechanism_info(mechanism)
                sizes[mechanism] = (int(info.min_key_length), int(info.max_key_length))
        self.keypair_specs = frozenset(
            spec
            for spec in makeable
            if (size := sizes.get(Mechanism[spec.mechanism])) is not None
            and size[0] <= spec.bits
            and (size[1] == 0 or spec.bits <= size[1])
        )

        usable: list[str] = []
        for name, mechanism in ((GCM, Mechanism.AES_GCM), (KWP, Mechanism.AES_KEY_WRAP_PAD)):
            if mechanism not in offered:
                continue
            flags = int(slot.get_mechanism_info(mechanism).flags)
            wraps = MechanismFlag.WRAP | MechanismFlag.UNWRAP
            if _mechanism_flags_credible(flags) and flags & wraps != wraps:
                continue  # the token says no, and its answer is well-formed
            if self._trial_wrap(session, name, healthy):
                usable.append(name)
        self.wrap_mechanism = usable[0] if usable else None
        self.unwrap_mechanisms = frozenset(usable)
        if not usable:  # it makes pairs but cannot hand a private key out wrapped: host
            self.keypair_specs = frozenset()

    @staticmethod
    def _trial_gcm(session: Any, healthy: Callable[[], bool]) -> bool:
        """Seal and open one byte under a throwaway key with CKM_AES_GCM."""
        key = session.generate_key(
            KeyType.AES,
            256,
            store=False,
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
        try:
            param = GCMParams(bytes(IV_BYTES), b"aad", 8 * TAG_BYTES)
            sealed = key.encrypt(b"x", mechanism=Mechanism.AES_GCM, mechanism_param=param)
            opened = key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=param)
            return bytes(opened) == b"x"
        except errors.PKCS11Error as exc:
            if isinstance(exc, errors.LOSS) or not healthy():
                raise
            return False
        finally:
            destroy(key)

    @staticmethod
    def _trial_wrap(session: Any, name: str, healthy: Callable[[], bool]) -> bool:
        """Wrap and unwrap a throwaway key: the only reliable answer on SoftHSM2, which
        reports garbage flags for CKM_AES_GCM and then refuses it in C_WrapKey."""
        kek = session.generate_key(
            KeyType.AES,
            256,
            store=False,
            capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
        key = session.generate_key(
            KeyType.GENERIC_SECRET,
            160,
            store=False,
            capabilities=0,
            template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True},
        )
        unwrapped = None
        try:
            mechanism, param = wrap_params(name, bytes(IV_BYTES))
            blob = kek.wrap_key(key, mechanism=mechanism, mechanism_param=param)
            unwrapped = kek.unwrap_key(
                ObjectClass.SECRET_KEY,
                KeyType.GENERIC_SECRET,
                blob,
                mechanism=mechanism,
                mechanism_param=param,
                store=False,
                capabilities=0,
            )
            return True
        except errors.PKCS11Error as exc:
            if isinstance(exc, errors.LOSS) or not healthy():
                raise
            return False
        finally:
            destroy(key, kek, unwrapped)
