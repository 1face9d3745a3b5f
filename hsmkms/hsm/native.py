"""The few Cryptoki calls python-pkcs11 does not let us make the way we need them.

python-pkcs11 0.10 always calls ``C_Initialize(NULL)``. Under PKCS#11 v2.40 (C_Initialize,
section 5.4) a NULL argument lets the library assume it is not called from several threads at
once, and SoftHSM2 does: it disables its own mutexes, and two threads crash it. We
therefore re-initialise the module ourselves with ``CKF_OS_LOCKING_OK`` through the module's
own function list (``C_GetFunctionList``), which python-pkcs11 shares: the function list
stays valid across ``C_Finalize``/``C_Initialize``, so every python-pkcs11 object created
afterwards calls into the re-initialised library.

python-pkcs11 also only logs in inside ``Token.open``, and then leaks the session when the PIN
is wrong and answers ``UserAlreadyLoggedIn`` for a second login; its ``Session.close`` logs the
whole application out. We log in and out here on a session python-pkcs11 opened without a PIN,
so we decide when the one login of the process ends.
"""

from __future__ import annotations

import ctypes
from typing import Any

# CK_RV values we act on (PKCS#11 v2.40, pkcs11t.h).
CKR_OK = 0x000
CKR_GENERAL_ERROR = 0x005
CKR_CANT_LOCK = 0x00A
CKR_DEVICE_ERROR = 0x030
CKR_DEVICE_REMOVED = 0x032
CKR_PIN_INCORRECT = 0x0A0
CKR_PIN_INVALID = 0x0A1
CKR_PIN_LEN_RANGE = 0x0A2
CKR_PIN_EXPIRED = 0x0A3
CKR_PIN_LOCKED = 0x0A4
CKR_SESSION_CLOSED = 0x0B0
CKR_SESSION_HANDLE_INVALID = 0x0B3
CKR_TOKEN_NOT_PRESENT = 0x0E0
CKR_USER_ALREADY_LOGGED_IN = 0x100
CKR_USER_NOT_LOGGED_IN = 0x101
CKR_USER_PIN_NOT_INITIALIZED = 0x102
CKR_USER_ANOTHER_ALREADY_LOGGED_IN = 0x104
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191

PIN_ERRORS = frozenset(
    {
        CKR_PIN_INCORRECT,
        CKR_PIN_INVALID,
        CKR_PIN_LEN_RANGE,
        CKR_PIN_EXPIRED,
        CKR_PIN_LOCKED,
        CKR_USER_PIN_NOT_INITIALIZED,
    }
)

CKF_OS_LOCKING_OK = 0x2
CKU_USER = 1
# Session states that mean "the user is logged in" (CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS).
LOGGED_IN_STATES = frozenset({1, 3})

_ulong = ctypes.c_ulong
_RV = _ulong


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _InitializeArgs(ctypes.Structure):
    """CK_C_INITIALIZE_ARGS: no mutex callbacks, the OS's own locking."""

    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", _ulong),
        ("pReserved", ctypes.c_void_p),
    ]


class _SessionInfo(ctypes.Structure):
    _fields_ = [
        ("slotID", _ulong),
        ("state", _ulong),
        ("flags", _ulong),
        ("ulDeviceError", _ulong),
    ]


_VOIDP_FN = ctypes.CFUNCTYPE(_RV, ctypes.c_void_p)
_SESSION_FN = ctypes.CFUNCTYPE(_RV, _ulong)
_LOGIN_FN = ctypes.CFUNCTYPE(_RV, _ulong, _ulong, ctypes.c_char_p, _ulong)
_SESSION_INFO_FN = ctypes.CFUNCTYPE(_RV, _ulong, ctypes.POINTER(_SessionInfo))


class _FunctionList(ctypes.Structure):
    """The head of CK_FUNCTION_LIST, in the order the standard fixes, up to C_Logout."""

    _fields_ = [
        ("version", _Version),
        ("C_Initialize", _VOIDP_FN),
        ("C_Finalize", _VOIDP_FN),
        ("C_GetInfo", ctypes.c_void_p),
        ("C_GetFunctionList", ctypes.c_void_p),
        ("C_GetSlotList", ctypes.c_void_p),
        ("C_GetSlotInfo", ctypes.c_void_p),
        ("C_GetTokenInfo", ctypes.c_void_p),
        ("C_GetMechanismList", ctypes.c_void_p),
        ("C_GetMechanismInfo", ctypes.c_void_p),
        ("C_InitToken", ctypes.c_void_p),
        ("C_InitPIN", ctypes.c_void_p),
        ("C_SetPIN", ctypes.c_void_p),
        ("C_OpenSession", ctypes.c_void_p),
        ("C_CloseSession", _SESSION_FN),
        ("C_CloseAllSessions", ctypes.c_void_p),
        ("C_GetSessionInfo", _SESSION_INFO_FN),
        ("C_GetOperationState", ctypes.c_void_p),
        ("C_SetOperationState", ctypes.c_void_p),
        ("C_Login", _LOGIN_FN),
        ("C_Logout", _SESSION_FN),
    ]


class Cryptoki:
    """Initialise, finalise, log in and out, and ask a session's state, on one loaded module."""

    def __init__(self, path: str) -> None:
        # dlopen of the same path returns the handle python-pkcs11 already holds.
        self._dll = ctypes.CDLL(path)
        get_function_list = self._dll.C_GetFunctionList
        get_function_list.restype = _RV
        get_function_list.argtypes = [ctypes.POINTER(ctypes.POINTER(_FunctionList))]
        pointer = ctypes.POINTER(_FunctionList)()
        rv = get_function_list(ctypes.byref(pointer))
        if rv != CKR_OK or not pointer:
            raise OSError(f"C_GetFunctionList of {path} returned 0x{rv:x}")
        self._fl: Any = pointer.contents

    def initialize(self, os_locking: bool) -> int:
        """C_Initialize, with CKF_OS_LOCKING_OK when asked; returns the CK_RV."""
        if not os_locking:
            return int(self._fl.C_Initialize(None))
        args = _InitializeArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
        return int(self._fl.C_Initialize(ctypes.cast(ctypes.pointer(args), ctypes.c_void_p)))

    def finalize(self) -> int:
        return int(self._fl.C_Finalize(None))

    def login(self, session: int, pin: str) -> int:
        data = pin.encode("utf-8")
        return int(self._fl.C_Login(session, CKU_USER, data, len(data)))

    def logout(self, session: int) -> int:
        return int(self._fl.C_Logout(session))

    def session_state(self, session: int) -> tuple[int, int]:
        """(CK_RV, CKS_* state) of C_GetSessionInfo: cheap, touches no object."""
        info = _SessionInfo()
        rv = int(self._fl.C_GetSessionInfo(session, ctypes.byref(info)))
        return rv, int(info.state)
