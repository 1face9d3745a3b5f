"""The few Cryptoki calls python-pkcs11 does not let us make the way we need them.

python-pkcs11 0.10 always calls ``C_Initialize(NULL)``. Under PKCS#11 v2.40 (C_Initialize,
section 5.4) a NULL argument lets the library assume it is not called from several threads at
once, and SoftHSM2 does: it disables its own mutexes, and two threads crash it. We
therefore re-initialise the module ourselves with ``CKF_OS_LOCKING_OK`` through the module's
own function list (``C_GetFunctionList``), which python-pkcs11 shares: the function list
stays valid across ``C_Finalize``/``C_Initialize``, so every python-pkcs11 object created
afterwards calls into the re-initialised library.

python-pkcs11's own C_Initialize is skipped altogether: the module is loaded without it
(:func:`load`), so a module that refuses ``C_Initialize(NULL)`` works too (NSS's softoken
answers CKR_ARGUMENTS_BAD: it wants its configuration directory in
``CK_C_INITIALIZE_ARGS.pReserved``, PKCS#11 v2.40 section 5.4), and we use python-pkcs11's
own function list rather than asking the module for one: p11-kit's client module makes a new
virtual module, with sessions of its own, on every ``C_GetFunctionList``.

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


# python-pkcs11 0.10's ``lib`` is a Cython object whose first field after the object header
# is its CK_FUNCTION_LIST pointer (``HasFuncList.funclist``); its size pins that layout.
_FUNCLIST_OFFSET = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)
_LIB_BASICSIZE = 88


def load(path: str) -> Any:
    """python-pkcs11's ``lib`` for ``path``, loaded (dlopen, C_GetFunctionList) but not
    initialised: :class:`Cryptoki` initialises it, with the arguments the module needs."""
    from pkcs11 import _pkcs11

    return _pkcs11.lib.__new__(_pkcs11.lib, path)  # type: ignore[call-arg]


class Cryptoki:
    """Initialise, finalise, log in and out, and ask a session's state, on one loaded module,
    through the function list python-pkcs11 calls (so that sessions are shared)."""

    def __init__(self, lib: Any, path: str) -> None:
        if type(lib).__basicsize__ != _LIB_BASICSIZE:
            raise OSError(
                f"python-pkcs11's lib object has an unknown layout ({type(lib).__basicsize__} "
                "bytes): hsmkms needs python-pkcs11 0.10"
            )
        address = ctypes.c_void_p.from_address(id(lib) + _FUNCLIST_OFFSET).value
        if not address:
            raise OSError(f"C_GetFunctionList of {path} gave no function list")
        self._fl: Any = ctypes.cast(address, ctypes.POINTER(_FunctionList)).contents
        if self._fl.version.major not in (2, 3):
            raise OSError(f"{path}: not a PKCS#11 function list (version {self._fl.version.major})")
        self._lib = lib  # keeps the function list alive

    def initialize(self, os_locking: bool, reserved: str | None = None) -> int:
        """C_Initialize, with CKF_OS_LOCKING_OK when asked and ``reserved`` as pReserved (the
        module's own parameters: NSS's ``configdir='sql:DIR' ...``); returns the CK_RV."""
        if not os_locking and reserved is None:
            return int(self._fl.C_Initialize(None))
        text = None if reserved is None else ctypes.c_char_p(reserved.encode("utf-8"))
        args = _InitializeArgs(
            None, None, None, None, CKF_OS_LOCKING_OK if os_locking else 0,
            ctypes.cast(text, ctypes.c_void_p) if text is not None else None,
        )  # fmt: skip
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
