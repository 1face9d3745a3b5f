"""Master-key modes: the implementations of :class:`hsmkms.service.masterkeys.MasterKeys`.

* :class:`TokenObjects` (the default): every key material is an AES-256 token object.

The operation layer sees only the protocol; :mod:`hsmkms.compose` picks the mode.
"""

from hsmkms.modes.token_objects import TokenObjects

__all__ = ["TokenObjects"]
