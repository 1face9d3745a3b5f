"""What start-up found a token can do, as the settings that name each difference
(docs/hsm-vendors.md): ``hsmkms doctor`` lists them, so that SoftHSM2, NSS, a p11-kit client
and a vendor's HSM read side by side."""

from __future__ import annotations

from typing import Any

from hsmkms.hsm.contract import GCM


def profile(token: Any, settings: Any) -> dict[str, str]:
    """Discovered behaviour and the setting behind each line (``token`` a PKCS11Token)."""
    caps = token._capabilities
    gcm = {
        GCM: "C_Encrypt with CKM_AES_GCM",
        "ECB": "AES-GCM built on the token's CKM_AES_ECB (no usable CKM_AES_GCM)",
        None: "none: master keys cannot encrypt",
    }[caps.gcm]
    specs = ", ".join(sorted(str(s.value) for s in token.keypair_specs)) or "none"
    return {
        "pkcs11_module": str(settings.pkcs11_module),
        "token_label": str(settings.token_label),
        "aes_gcm": gcm,
        "wrap_mechanism": token.wrap_mechanism or "none: WithoutPlaintext pairs on the host",
        "token_keypair_specs": specs,
        "os_locking": "yes" if token.os_locking else "no: every call of the process in turn",
        "token_mechanisms_off": settings.token_mechanisms_off or "(none)",
        "token_call_timeout": f"{settings.token_call_timeout:g} s",
        "token_slow_call_timeout": f"{settings.token_slow_call_timeout:g} s",
    }
