"""One PKCS#11 library per process: loading it, initialising it to lock itself, starting over.

Measured on SoftHSM2 2.6.1 + python-pkcs11 0.10.1 with ``python -m bench.token_layer``:

* The library is initialised with ``CKF_OS_LOCKING_OK`` (PKCS#11 v2.40 section 5.4) so that it
  guards itself (python-pkcs11's own ``C_Initialize(NULL)`` lets SoftHSM2 assume one thread,
  and two threads crash it: see native.py). Then slow calls can run beside the request path
  instead of behind its lock (calls.py); more threads do not add throughput either way (the
  GIL): scale with processes. A module that cannot lock (CKR_CANT_LOCK) gets one lock for
  every call of the process instead.
* Token loss is absorbed by C_Finalize + C_Initialize, after which every session and handle of
  the process is void: the generation counts these, and the :class:`~hsmkms.hsm.gate.Gate`
  keeps C_Finalize from freeing what a call in flight is using. At most one
  re-initialisation per ``reinit_interval``: a token that stays away must not turn every
  request into a C_Initialize.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import pkcs11

from hsmkms.hsm import TokenUnavailable, errors, native
from hsmkms.hsm.errors import Lost
from hsmkms.hsm.gate import Gate

log = logging.getLogger("hsmkms.hsm")


class Library:
    """One loaded PKCS#11 library per process, shared by every token opened on it.

    Initialisation, login state and handles belong to the process, not to a token, so the
    things that change them live here: the gate, the generation, the re-init rate limit.
    """

    _registry: dict[str, Library] = {}
    _registry_lock = threading.Lock()

    @classmethod
    def get(cls, path: str, os_locking: bool, init_args: str | None = None) -> Library:
        real = os.path.realpath(path)
        with cls._registry_lock:
            library = cls._registry.get(real)
            # A forked child inherits the parent's library state, which PKCS#11 says it must
            # not use ("Applications and processes"): it starts over with its own C_Initialize.
            if library is None or library.pid != os.getpid():
                library = cls(real, os_locking, init_args)
                cls._registry[real] = library
            elif init_args is not None and init_args != library.init_args:
                # One C_Initialize per module and process: NSS opens one database per load.
                raise TokenUnavailable(
                    f"{real} is already initialised in this process with other parameters "
                    f"({library.init_args!r}): one process, one configuration per module"
                )
            return library

    def __init__(self, path: str, os_locking: bool, init_args: str | None = None) -> None:
        self.path = path
        self.init_args = init_args  # CK_C_INITIALIZE_ARGS.pReserved (NSS: its configdir)
        try:
            # Loaded, not initialised: we initialise it ourselves (native.py says why).
            self.lib: Any = native.load(path)
            self.cryptoki = native.Cryptoki(self.lib, path)
        except (pkcs11.PKCS11Error, OSError) as exc:
            hint = " (for SoftHSM2: is SOFTHSM2_CONF right?)" if "softhsm" in path else ""
            raise TokenUnavailable(
                f"cannot load the PKCS#11 module {path}: {errors.name(exc)} {exc}{hint}".rstrip()
            ) from None
        self.pid = os.getpid()
        self.gate = Gate()
        self.generation = 0  # bumped by every C_Finalize: all sessions and handles are void
        self.initialized = True
        self.last_reinit = float("-inf")
        self.users: dict[str, int] = {}  # token label -> open tokens (the last one logs out)
        self.pins: dict[str, str] = {}  # token label -> the PIN that logged in
        rv = self.cryptoki.initialize(os_locking, init_args) if os_locking else native.CKR_CANT_LOCK
        if rv == native.CKR_CRYPTOKI_ALREADY_INITIALIZED:
            # After fork(): the parent's state. Start again, as PKCS#11 asks of a child.
            self.cryptoki.finalize()
            rv = self.cryptoki.initialize(os_locking, init_args)
        self.os_locking = os_locking and rv == native.CKR_OK
        if not self.os_locking:
            # CKR_CANT_LOCK: the module cannot lock; every call goes through one lock.
            rv = self.cryptoki.initialize(False, init_args)
            if rv == native.CKR_CRYPTOKI_ALREADY_INITIALIZED:
                self.cryptoki.finalize()
                rv = self.cryptoki.initialize(False, init_args)
            if rv != native.CKR_OK:
                self.initialized = False
                raise TokenUnavailable(f"C_Initialize of {path} failed: CK_RV 0x{rv:x}")

    # -- the tokens open on it ----------------------------------------------------------------

    def in_use(self) -> bool:
        """Whether other tokens of this process use the library (it may just be recovering)."""
        with Library._registry_lock:
            return any(self.users.values())

    def acquire(self, label: str) -> None:
        with Library._registry_lock:
            self.users[label] = self.users.get(label, 0) + 1

    def release(self, label: str) -> int:
        """One token of ``label`` fewer; how many stay open (0: the last one logs out)."""
        with Library._registry_lock:
            left = self.users.get(label, 1) - 1
            self.users[label] = left
            return left

    # -- starting over --------------------------------------------------------------------------

    def recover(self, generation: int, label: str, detail: str, interval: float) -> None:
        """C_Finalize + C_Initialize, unless another thread just did, or did too recently."""
        self.gate.enter_exclusive()
        try:
            if self.generation != generation:
                return  # someone re-initialised since our call began: just retry
            now = time.monotonic()
            wait = self.last_reinit + interval - now
            if wait > 0:
                # A token that stays away must not turn every request into a C_Initialize.
                raise TokenUnavailable(
                    f"token {label!r} is unavailable: {detail}; "
                    f"next reconnect attempt in {wait:.1f} s"
                )
            self.last_reinit = now
            log.warning("token %r lost (%s): re-initialising %s", label, detail, self.path)
            try:
                self.reinitialize()
            except Lost as lost:
                raise TokenUnavailable(f"token {label!r} is unavailable: {lost.detail}") from None
        finally:
            self.gate.leave_exclusive()

    def reinitialize(self) -> None:
        """C_Finalize + C_Initialize. The caller holds the gate exclusively."""
        self.generation += 1
        if self.initialized:
            self.initialized = False
            self.cryptoki.finalize()  # its CK_RV does not matter: we start over either way
        rv = self.cryptoki.initialize(self.os_locking, self.init_args)
        if rv not in (native.CKR_OK, native.CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise Lost(f"C_Initialize returned CK_RV 0x{rv:x}")
        self.initialized = True
