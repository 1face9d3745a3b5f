"""AES-GCM IVs without a token call per request: a 96-bit counter from a random start.

NIST SP 800-38D requires that an IV never repeats under one key. Each process draws a random
96-bit start ``s`` from the token's RNG (once, and again after fork()) and hands out
``s, s+1, s+2, ...`` (mod 2**96). Why that cannot repeat in practice:

* within one sequence, IVs are distinct: a 96-bit counter would need 2**96 steps to wrap, and
  a sequence is started afresh after 2**32 IVs (NIST's cap for random IVs per key) anyway;
* two sequences (two workers, two nodes, a restart, a forked child) repeat an IV only if their
  ranges ``[s1, s1+n1)`` and ``[s2, s2+n2)`` overlap, which for independent uniform starts has
  probability at most ``(n1 + n2) / 2**96``. With S sequences of at most n IVs each the bound
  is ``S**2 * n / 2**96``: a million process lifetimes of a billion IVs each stay below
  1.3e-8. The same S sequences of n IVs drawn at random one by one would give about
  ``S**2 * n**2 / 2**97``: the counter is better by a factor of n/2, so it is at least as safe
  as the token RNG call per request it replaces.

Unsafe alternatives it avoids: a random per-process prefix with a counter from zero (two
processes share every IV once their 32-bit prefixes collide, birthday-likely after ~77,000
processes), or a host clock (goes backwards).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

IV_BYTES = 12
_MODULUS = 1 << (8 * IV_BYTES)
RESEED_AFTER = 1 << 32


class IvSequence:
    """Thread-safe; ``draw(n)`` gives ``n`` random bytes (the token's C_GenerateRandom)."""

    def __init__(self, draw: Callable[[int], bytes]) -> None:
        self._draw = draw
        self._lock = threading.Lock()
        self._pid = -1
        self._next = 0
        self._left = 0

    def next(self) -> bytes:
        with self._lock:
            if self._left <= 0 or self._pid != os.getpid():
                # A forked child must not continue its parent's sequence: it starts its own.
                self._next = int.from_bytes(self._draw(IV_BYTES), "big")
                self._left = RESEED_AFTER
                self._pid = os.getpid()
            value = self._next
            self._next = (value + 1) % _MODULUS
            self._left -= 1
        return value.to_bytes(IV_BYTES, "big")
