"""Which CKR_* (as python-pkcs11 exceptions) mean what, before the token is asked how it is.

The mapping is deliberately coarse: a return code alone often cannot say whether the caller,
the data or the device is at fault (SoftHSM2 answers CKR_GENERAL_ERROR both for a GCM tag
mismatch and for a token whose directory vanished). The call path (:mod:`hsmkms.hsm.calls`)
settles the ambiguous ones with a health probe; the groups here only say which codes need no
probe.
"""

from __future__ import annotations

import pkcs11.exceptions as px


class Lost(Exception):
    """Internal: the token, its session or its login is gone; re-initialise and retry once.

    Never leaves the layer (the caller sees :class:`~hsmkms.hsm.TokenUnavailable`).
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# Answers that are final whatever the token's health: it does not do this.
REFUSED: tuple[type[Exception], ...] = (
    px.MechanismInvalid,
    px.MechanismParamInvalid,
    px.FunctionNotSupported,
)

# The token says it cannot do what was asked, whatever its health.
MECHANISM: tuple[type[Exception], ...] = (
    px.MechanismInvalid,
    px.MechanismParamInvalid,
    px.FunctionNotSupported,
    px.KeyTypeInconsistent,
    px.KeySizeRange,
    px.DomainParamsInvalid,
    px.KeyNotWrappable,
    px.WrappingKeyTypeInconsistent,
    px.WrappingKeySizeRange,
    px.UnwrappingKeyTypeInconsistent,
    px.UnwrappingKeySizeRange,
)

# The PIN or the user was refused. Never retried: a real HSM locks the PIN after a few tries.
LOGIN: tuple[type[Exception], ...] = (
    px.PinIncorrect,
    px.PinInvalid,
    px.PinLenRange,
    px.PinLocked,
    px.PinExpired,
    px.UserPinNotInitialized,
)

# Only a lost session, login, token or library explains these.
LOSS: tuple[type[Exception], ...] = (
    px.SessionHandleInvalid,
    px.SessionClosed,
    px.DeviceRemoved,
    px.DeviceError,
    px.TokenNotPresent,
    px.TokenNotRecognised,
    px.UserNotLoggedIn,
    px.NoSuchToken,
    px.SlotIDInvalid,
)

# A handle that no longer names an object: destroyed by another process, or the token went.
HANDLE: tuple[type[Exception], ...] = (
    px.ObjectHandleInvalid,
    px.KeyHandleInvalid,
    px.WrappingKeyHandleInvalid,
    px.UnwrappingKeyHandleInvalid,
)

# What an authenticated decryption or an unwrap answers for bad input, if the token is well.
INTEGRITY: tuple[type[Exception], ...] = (
    px.GeneralError,
    px.EncryptedDataInvalid,
    px.EncryptedDataLenRange,
    px.WrappedKeyInvalid,
    px.WrappedKeyLenRange,
    px.DataInvalid,
    px.DataLenRange,
    px.FunctionFailed,
)

# Unwrap failures that mean "this blob is not what it claims" once the token is known to be well.
UNWRAP_INTEGRITY: tuple[type[Exception], ...] = INTEGRITY + (
    px.TemplateInconsistent,
    px.AttributeValueInvalid,
    px.KeyTypeInconsistent,
)

# The token could not keep what it was asked to store. SoftHSM2 answers CKR_FUNCTION_FAILED
# when it cannot write a new object's file (a full disk); real HSMs CKR_DEVICE_MEMORY.
STORAGE: tuple[type[Exception], ...] = (px.DeviceMemory,)
STORING: tuple[type[Exception], ...] = STORAGE + (px.FunctionFailed,)

PKCS11Error = px.PKCS11Error


def name(exc: BaseException) -> str:
    """The exception's class name, which python-pkcs11 names after the CKR_* code."""
    return type(exc).__name__
