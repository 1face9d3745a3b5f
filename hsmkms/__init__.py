"""hsmkms: the AWS KMS API, with every master key inside a PKCS#11 HSM.

``hsmkms.KMS`` is the library face: boto3's method names, parameters and response shapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hsmkms.kms import KMS, Caller

__all__ = ["KMS", "Caller", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: importing hsmkms (e.g. for the CLI's --help) must not load the PKCS#11 library.
    if name in ("KMS", "Caller"):
        from hsmkms import kms

        return getattr(kms, name)
    raise AttributeError(name)
