"""The master keys of every connected custom key store of type AWS_CLOUDHSM, behind the one
:class:`~hsmkms.service.masterkeys.MasterKeys` the operation layer calls.

A key in such a store has its materials on that store's token, not on the home's. The router
sends a call that names a material (seal, unseal, sign, destroy, ...) to the token that holds
it, and a creation for a key (create, create_hmac_key, ...) to the token of the key's store;
everything else (random numbers, health, data key pairs) goes to the home's token. What the
operation layer sees does not change: it still names materials, never tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

# MasterKeys methods whose first argument names a material, and those that name a key.
_BY_MATERIAL = frozenset(
    {
        "sign",
        "decrypt",
        "derive",
        "mac",
        "verify_mac",
        "destroy",
        "holds",
        "ready",
        "seal",
        "unseal",
        "key_pair_sealed",
        "unseal_private_key",
        "unsound",
    }
)
_BY_KEY = frozenset({"create", "create_private_key", "create_hmac_key"})


class Router:
    """The home's master keys, and a connected store's for the materials and keys it holds."""

    def __init__(self, home: Any) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._stores: dict[str, Any] = {}  # store id -> its MasterKeys
        self._materials: dict[str, str] = {}  # material id -> store id
        self._keys: dict[str, str] = {}  # key id -> store id

    # -- what the custom key stores tell it --------------------------------------------------
    def attach(self, store_id: str, masters: Any, materials: dict[str, str]) -> None:
        """A store connected: its master keys, and its materials (material id -> key id)."""
        with self._lock:
            self._stores[store_id] = masters
            for material_id, key_id in materials.items():
                self._materials[material_id] = store_id
                self._keys[key_id] = store_id

    def detach(self, store_id: str) -> Any:
        """A store disconnected: its master keys (for the caller to close), or None."""
        with self._lock:
            masters = self._stores.pop(store_id, None)
            self._materials = {m: s for m, s in self._materials.items() if s != store_id}
            self._keys = {k: s for k, s in self._keys.items() if s != store_id}
        return masters

    def assign(self, key_id: str, store_id: str) -> None:
        """The next materials of ``key_id`` are made on ``store_id``'s token."""
        with self._lock:
            self._keys[key_id] = store_id

    def connected(self, store_id: str) -> bool:
        return store_id in self._stores

    def stores(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._stores)

    # -- the MasterKeys protocol -------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        method = getattr(self.home, name)
        if not callable(method) or (name not in _BY_MATERIAL and name not in _BY_KEY):
            return method
        by_key = name in _BY_KEY

        def routed(first: str, *args: Any, **kwargs: Any) -> Any:
            if not self._stores:  # no store connected: the home's token holds everything
                return method(first, *args, **kwargs)
            store_id = (self._keys if by_key else self._materials).get(first)
            target = self._stores.get(store_id) if store_id is not None else None
            if store_id is None or target is None:  # not a store's, or its store went away
                return method(first, *args, **kwargs)
            result = getattr(target, name)(first, *args, **kwargs)
            if by_key:  # a new material of the store's key: route it from now on
                material_id = result[0] if isinstance(result, tuple) else result
                with self._lock:
                    self._materials[material_id] = store_id
            return result

        # Made once per name: later lookups find the attribute without __getattr__.
        self.__dict__[name] = routed
        return routed

    def close(self) -> None:
        for masters in self.stores().values():
            _close(masters.close)
        self.home.close()


def _close(close: Callable[[], None]) -> None:
    try:
        close()
    except Exception:  # a store's token that is already gone
        pass
