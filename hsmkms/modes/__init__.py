"""Master-key modes: the implementations of :class:`hsmkms.service.masterkeys.MasterKeys`.

* :class:`TokenObjects` (the default, ``master_keys = "token"``): every key material is a
  token object.
* :class:`WrappedMaterials` (``master_keys = "wrapped"``): key materials wrapped in the store
  under a token-resident domain key, unwrapped into session objects on use.

The operation layer sees only the protocol; :mod:`hsmkms.compose` picks the mode.
"""

from hsmkms.modes.token_objects import TokenObjects
from hsmkms.modes.wrapped import WrappedMaterials

__all__ = ["TokenObjects", "WrappedMaterials"]
