"""The composition root: the one place that opens the home, the token and the store, reads the
credentials, picks the master-key mode and wires them into an operation layer.

Every face starts here: :class:`hsmkms.KMS` (the library), ``hsmkms serve`` and its workers
(:func:`hsmkms.api.app_from_env`), ``hsmkms doctor``. Below this module nothing opens anything
by itself: :class:`hsmkms.service.Service` is handed its master keys, its store and its audit
sink (:mod:`hsmkms.audit.sinks`, from the ``audit_*`` settings).

Failures keep their type: a token that refuses the PIN raises :class:`hsmkms.hsm.LoginFailed`,
one that cannot be reached :class:`hsmkms.hsm.TokenUnavailable`, so each face words its own
advice without digging through exception chains.
"""

from __future__ import annotations

from hsmkms import hsm
from hsmkms.audit.sinks import open_audit
from hsmkms.config import Settings
from hsmkms.home import ensure_home, read_credentials
from hsmkms.identity import Caller, Identity
from hsmkms.modes import TokenObjects, WrappedMaterials
from hsmkms.service import Service
from hsmkms.service.audit import NO_AUDIT
from hsmkms.service.masterkeys import MasterKeys
from hsmkms.store import Store, open_store


def open_token(settings: Settings, *, preload_keys: bool = True) -> hsm.Token:
    """The configured token, logged in (hsm.TokenError and its kinds when it cannot be)."""
    return hsm.open_token(
        settings.pkcs11_module,
        settings.token_label,
        settings.read_pin(),
        preload=preload_keys,
        call_timeout=settings.token_call_timeout,
        slow_call_timeout=settings.token_slow_call_timeout,
        init_args=settings.pkcs11_init_string,
        mechanisms_off=settings.token_mechanisms_off,
        loaded_keys=settings.loaded_keys,
    )


def master_keys(settings: Settings, token: hsm.Token, store: Store | None = None) -> MasterKeys:
    """The master-key mode over ``token`` (``master_keys``): token objects, or materials
    wrapped in ``store``. A token-mode home whose store still holds wraps (a move back to the
    token mode not finished) serves those too; without ``store`` (a custom key store's token)
    every material is a token object."""
    pairs = settings.keypair_source == "token"
    if store is not None and settings.master_keys == "wrapped":
        # MechanismUnsupported now, at start, not on the first CreateKey: a token that wraps
        # with neither KWP nor GCM (p11-kit 0.24's remoting carries neither's parameters).
        token.wrapping.mechanism  # noqa: B018
    if store is not None and (settings.master_keys == "wrapped" or store.count_wraps() > 0):
        return WrappedMaterials(token, store, token_pairs=pairs, new_materials=settings.master_keys)
    return TokenObjects(token, token_pairs=pairs)


def open_metadata(settings: Settings) -> Store:
    return open_store(settings.store_path, busy_timeout=settings.store_busy_timeout)


def build_service(settings: Settings, token: hsm.Token, store: Store) -> Service:
    """An operation layer over an open token and store, auditing as the settings ask."""
    audit = open_audit(settings) or NO_AUDIT
    return Service(
        settings,
        master_keys(settings, token, store),
        store,
        audit=audit,
        # A custom key store's token (AWS_CLOUDHSM), opened and logged in when it connects.
        open_masters=lambda other: master_keys(other, open_token(other)),
    )


def open_service(settings: Settings, *, preload_keys: bool = True) -> Service:
    """Create the embedded home if needed, then open the token and the store.

    ``preload_keys=False``: the token's key handles are looked up on first use, not now (for
    a process that only checks that the token and store open)."""
    ensure_home(settings)
    token = open_token(settings, preload_keys=preload_keys)
    try:
        store = open_metadata(settings)
    except BaseException:
        token.close()
        raise
    return build_service(settings, token, store)


def identities(settings: Settings) -> dict[str, Identity]:
    """Access key id -> Identity: who the server trusts."""
    return read_credentials(settings.credentials_path)


def default_caller(settings: Settings) -> Caller:
    """The first identity of the credentials file: the embedded default's admin."""
    return next(iter(identities(settings).values())).caller()
