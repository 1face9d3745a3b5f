"""Custom key stores: CreateCustomKeyStore, DescribeCustomKeyStores, UpdateCustomKeyStore,
ConnectCustomKeyStore, DisconnectCustomKeyStore, DeleteCustomKeyStore.

Two types, as in AWS:

* **AWS_CLOUDHSM**: another PKCS#11 token. ``CloudHsmClusterId`` names a token configured in
  the ``cloudhsm_clusters`` setting (``id=label`` or ``id=label@/path/to/module.so``); the
  ``KeyStorePassword`` is its user PIN. Connect logs in (the materials of the store's keys are
  then routed to that token, service/keystore_router.py), Disconnect logs out.
* **EXTERNAL_KEY_STORE**: an XKS proxy (service/xks_client.py) at ``XksProxyUriEndpoint`` +
  ``XksProxyUriPath``, signed with ``XksProxyAuthenticationCredential``. Connect asks the
  proxy's health.

A store's secret (the PIN, the proxy's secret access key) is never in the store or a log: it
is kept as the home keeps its PINs, a 0600 file ``<home>/keystores/<id>.secret``. Connecting is
synchronous here (AWS's is asynchronous: CONNECTING, then CONNECTED or FAILED): the call
returns with the store CONNECTED, or FAILED and its ConnectionErrorCode.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from hsmkms import errors
from hsmkms.service import xks_client
from hsmkms.service.core import Request, now, operation
from hsmkms.store import Conflict, CustomKeyStoreRecord, KeyRecord

if TYPE_CHECKING:
    from hsmkms.service import Service

CLOUDHSM, EXTERNAL = "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"
CONNECTED, FAILED, DISCONNECTED = "CONNECTED", "FAILED", "DISCONNECTED"
_URI_PATH = re.compile(r"^(/[a-zA-Z0-9/_-]+)?/kms/xks/v\d+$")
_ID = re.compile(r"^cks-[0-9a-f]{17}$")


# -- secrets ----------------------------------------------------------------------------------
def _secret_path(svc: Service, store_id: str) -> Path:
    return svc.settings.home / "keystores" / f"{store_id}.secret"


def _keep_secret(svc: Service, store_id: str, secret: str) -> None:
    path = _secret_path(svc, store_id)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)


def _secret(svc: Service, store_id: str) -> str:
    try:
        return _secret_path(svc, store_id).read_text()
    except OSError:
        raise errors.CustomKeyStoreInvalidStateException(
            f"The secret of custom key store {store_id} is not on this node "
            f"({_secret_path(svc, store_id)}): update the store with it here."
        ) from None


# -- the pieces each type needs ----------------------------------------------------------------
def clusters(svc: Service) -> dict[str, tuple[str, str]]:
    """cluster id -> (token label, PKCS#11 module) from the ``cloudhsm_clusters`` setting."""
    out: dict[str, tuple[str, str]] = {}
    for item in filter(None, (s.strip() for s in svc.settings.cloudhsm_clusters.split(","))):
        name, _, target = item.partition("=")
        label, _, module = target.partition("@")
        out[name.strip()] = (label.strip(), module.strip() or svc.settings.pkcs11_module)
    return out


def proxy(svc: Service, store: CustomKeyStoreRecord) -> xks_client.Proxy:
    assert store.xks_uri_endpoint and store.xks_uri_path and store.xks_access_key_id
    return xks_client.Proxy(
        endpoint=store.xks_uri_endpoint,
        path=store.xks_uri_path,
        access_key_id=store.xks_access_key_id,
        secret=_secret(svc, store.store_id),
        region=store.region,
        timeout=svc.settings.xks_proxy_timeout,
        ca_file=svc.settings.xks_proxy_ca_file,
        port=svc.settings.xks_proxy_port,
    )


def _open_token(svc: Service, store: CustomKeyStoreRecord) -> Any:
    """The store's token, logged in: its MasterKeys (raises hsm errors), made by the
    composition root (hsmkms/compose.py hands the Service how)."""
    if svc.open_masters is None:
        raise KeyError("this operation layer opens no other token")
    label, module = clusters(svc)[store.cluster_id or ""]
    pin_file = str(_secret_path(svc, store.store_id))
    settings = svc.settings.replace(pkcs11_module=module, token_label=label, pin_file=pin_file)
    return svc.open_masters(settings)


def _connect(svc: Service, store: CustomKeyStoreRecord, request_id: str) -> str | None:
    """Connect ``store`` in this process; the ConnectionErrorCode if it fails."""
    from hsmkms import hsm

    if store.store_type == EXTERNAL:
        try:
            state = proxy(svc, store).health(request_id, "ConnectCustomKeyStore")
        except xks_client.XksFailure as exc:
            return _XKS_CONNECTION_ERRORS.get(exc.kind, "XKS_PROXY_INVALID_RESPONSE")
        return None if state in ("ACTIVE", "DEGRADED") else "XKS_PROXY_INVALID_RESPONSE"
    if svc.router.connected(store.store_id):
        return None
    try:
        masters = _open_token(svc, store)
    except hsm.LoginFailed:
        return "INVALID_CREDENTIALS"
    except (hsm.TokenError, KeyError):
        return "CLUSTER_NOT_FOUND"
    materials = {
        m.material_id: m.key_id
        for key in svc.store.keys_in_custom_key_store(store.store_id)
        for m in svc.store.materials(key.key_id)
    }
    svc.router.attach(store.store_id, masters, materials)
    return None


_XKS_CONNECTION_ERRORS = {
    "AuthenticationFailedException": "XKS_PROXY_ACCESS_DENIED",
    "AccessDeniedException": "XKS_PROXY_ACCESS_DENIED",
    "Unreachable": "XKS_PROXY_NOT_REACHABLE",
    "TlsFailure": "XKS_PROXY_INVALID_TLS_CONFIGURATION",
    "TimedOut": "XKS_PROXY_TIMED_OUT",
    "DependencyTimeoutException": "XKS_PROXY_TIMED_OUT",
    "InvalidUriPathException": "XKS_PROXY_INVALID_CONFIGURATION",
}
# What CreateCustomKeyStore and UpdateCustomKeyStore answer when the proxy's health fails.
_XKS_SETUP_ERRORS = {
    "AuthenticationFailedException": errors.XksProxyIncorrectAuthenticationCredentialException,
    "InvalidUriPathException": errors.XksProxyInvalidConfigurationException,
    "Unreachable": errors.XksProxyUriUnreachableException,
    "TlsFailure": errors.XksProxyUriUnreachableException,
    "TimedOut": errors.XksProxyUriUnreachableException,
    "DependencyTimeoutException": errors.XksProxyUriUnreachableException,
    "ThrottlingException": errors.XksProxyUriUnreachableException,
}


def _check_proxy(svc: Service, store: CustomKeyStoreRecord, req: Request) -> None:
    """AWS tests the proxy when a store is created or its connection changes."""
    try:
        proxy(svc, store).health(req.request_id, req.operation)
    except xks_client.XksFailure as exc:
        error = _XKS_SETUP_ERRORS.get(exc.kind, errors.XksProxyInvalidResponseException)
        raise error(exc.message) from None


# -- what the rest of the operation layer asks --------------------------------------------------
def store_of(svc: Service, key: KeyRecord) -> CustomKeyStoreRecord | None:
    if not key.custom_key_store_id:
        return None
    return svc.store.get_custom_key_store(key.custom_key_store_id)


def check_available(
    svc: Service, key: KeyRecord, request_id: str = ""
) -> CustomKeyStoreRecord | None:
    """A key in a custom key store can be used only while its store is connected (in this
    process too: a store connected by another process or before a restart connects here).
    Its store's record (None for a key in no store), for the calls that use it next."""
    if not key.custom_key_store_id:
        return None
    store = store_of(svc, key)
    if store is None:
        raise errors.KMSInvalidStateException(f"{key.arn} is in a custom key store that is gone.")
    if store.state != CONNECTED:
        raise errors.KMSInvalidStateException(
            f"{key.arn} is unavailable: its custom key store {store.store_id} is not "
            "connected. Connect it and try the request again."
        )
    if store.store_type == CLOUDHSM and not svc.router.connected(store.store_id):
        code = _connect(svc, store, request_id)
        if code is not None:
            raise errors.KMSInvalidStateException(
                f"{key.arn} is unavailable: its custom key store {store.store_id} cannot reach "
                f"its token ({code})."
            )
    return store


def random_source(svc: Service, req: Request) -> Any:
    """GenerateRandom with a CustomKeyStoreId: the random number generator of that store's
    token (None without one). AWS allows only CloudHSM key stores, connected."""
    if req.get("CustomKeyStoreId") is None:
        return None
    store = _own_store(svc, req)
    if store.store_type != CLOUDHSM:
        raise errors.UnsupportedOperationException(
            "GenerateRandom takes the CustomKeyStoreId of an AWS_CLOUDHSM key store only."
        )
    require_connected(svc, store, req.request_id)
    return svc.router.stores()[store.store_id].random


def require_connected(svc: Service, store: CustomKeyStoreRecord, request_id: str) -> None:
    """A store a request makes something in or draws from must be CONNECTED, and an
    AWS_CLOUDHSM store's token logged in in this process too (CustomKeyStoreInvalidState-
    Exception otherwise)."""
    if store.state != CONNECTED:
        raise errors.CustomKeyStoreInvalidStateException(
            f"Custom key store {store.store_id} is {store.state}: connect it first."
        )
    if store.store_type == CLOUDHSM and (code := _connect(svc, store, request_id)) is not None:
        raise errors.CustomKeyStoreInvalidStateException(
            f"Custom key store {store.store_id} cannot reach its token ({code})."
        )


def effective_state(svc: Service, key: KeyRecord) -> str:
    """The KeyState DescribeKey shows: Unavailable while the key's store is not connected."""
    store = store_of(svc, key)
    if store is not None and store.state != CONNECTED:
        return "Unavailable"
    return key.state


# -- the operations ----------------------------------------------------------------------------
def _entry(store: CustomKeyStoreRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "CustomKeyStoreId": store.store_id,
        "CustomKeyStoreName": store.name,
        "CustomKeyStoreType": store.store_type,
        "ConnectionState": store.state,
        "CreationDate": store.created_at,
    }
    if store.error_code:
        out["ConnectionErrorCode"] = store.error_code
    if store.store_type == CLOUDHSM:
        out["CloudHsmClusterId"] = store.cluster_id
        out["TrustAnchorCertificate"] = store.trust_anchor
    else:
        out["XksProxyConfiguration"] = {
            "Connectivity": store.xks_connectivity,
            "AccessKeyId": store.xks_access_key_id,
            "UriEndpoint": store.xks_uri_endpoint,
            "UriPath": store.xks_uri_path,
        }
    return out


def _own_store(svc: Service, req: Request) -> CustomKeyStoreRecord:
    store_id = req.required_text("CustomKeyStoreId")
    store = svc.store.get_custom_key_store(store_id) if _ID.match(store_id) else None
    caller = req.caller
    if (
        store is None
        or store.account_id != caller.account_id
        or store.region != svc.region_of(caller)
    ):
        raise errors.CustomKeyStoreNotFoundException(
            f"Custom key store {store_id} does not exist in this account and Region."
        )
    return store


def _xks_settings(req: Request, required: bool) -> dict[str, Any]:
    endpoint, path = req.text("XksProxyUriEndpoint"), req.text("XksProxyUriPath")
    credential = req.get("XksProxyAuthenticationCredential")
    connectivity = req.text("XksProxyConnectivity")
    if required and not (endpoint and path and credential and connectivity):
        raise errors.ValidationException(
            "An external key store needs XksProxyUriEndpoint, XksProxyUriPath, "
            "XksProxyAuthenticationCredential and XksProxyConnectivity."
        )
    if connectivity == "VPC_ENDPOINT_SERVICE":
        raise errors.UnsupportedOperationException(
            "XksProxyConnectivity VPC_ENDPOINT_SERVICE is not supported by hsmkms (no VPC): "
            "use PUBLIC_ENDPOINT."
        )
    if endpoint is not None and not re.match(r"^https?://[A-Za-z0-9.-]+(:\d+)?$", endpoint):
        raise errors.XksProxyInvalidConfigurationException(
            f"XksProxyUriEndpoint {endpoint!r} is not https://<host>[:port]."
        )
    if path is not None and (len(path) > 128 or not _URI_PATH.match(path)):
        raise errors.XksProxyInvalidConfigurationException(
            f"XksProxyUriPath {path!r} is not [/<prefix>]/kms/xks/v<n>."
        )
    out: dict[str, Any] = {}
    if endpoint is not None:
        out["xks_uri_endpoint"] = endpoint
    if path is not None:
        out["xks_uri_path"] = path
    if connectivity is not None:
        out["xks_connectivity"] = connectivity
    if credential is not None:
        out["xks_access_key_id"] = credential["AccessKeyId"]
        out["_secret"] = credential["RawSecretAccessKey"]
    return out


@operation("CreateCustomKeyStore")
def create_custom_key_store(svc: Service, req: Request) -> dict[str, Any]:
    kind = req.text("CustomKeyStoreType") or CLOUDHSM
    caller, region = req.caller, svc.region_of(req.caller)
    store_id = "cks-" + secrets.token_hex(9)[:17]
    fields: dict[str, Any] = {}
    secret: str
    others = svc.store.list_custom_key_stores(caller.account_id, region)
    name = req.required_text("CustomKeyStoreName")
    if any(s.name == name for s in others):
        raise errors.CustomKeyStoreNameInUseException(
            f"A custom key store named {name!r} exists in this account and Region."
        )
    if kind == CLOUDHSM:
        cluster, anchor = req.text("CloudHsmClusterId"), req.text("TrustAnchorCertificate")
        password = req.text("KeyStorePassword")
        if not (cluster and anchor and password):
            raise errors.ValidationException(
                "A CloudHSM key store needs CloudHsmClusterId, TrustAnchorCertificate and "
                "KeyStorePassword."
            )
        if cluster not in clusters(svc):
            raise errors.CloudHsmClusterNotFoundException(
                f"Cluster {cluster} is not a token this hsmkms knows (the cloudhsm_clusters "
                "setting)."
            )
        if any(s.cluster_id == cluster for s in others):
            raise errors.CloudHsmClusterInUseException(
                f"Cluster {cluster} is the cluster of another custom key store."
            )
        try:
            x509.load_pem_x509_certificate(anchor.encode())
        except ValueError:
            raise errors.IncorrectTrustAnchorException(
                "TrustAnchorCertificate is not a PEM certificate."
            ) from None
        fields = {"cluster_id": cluster, "trust_anchor": anchor}
        secret = password
    else:
        fields = _xks_settings(req, required=True)
        secret = fields.pop("_secret")
        same = [
            s
            for s in others
            if (s.xks_uri_endpoint, s.xks_uri_path)
            == (fields["xks_uri_endpoint"], fields["xks_uri_path"])
        ]
        if same:
            raise errors.XksProxyUriInUseException(
                "Another external key store uses this proxy URI endpoint and path."
            )
    record = CustomKeyStoreRecord(
        store_id=store_id,
        account_id=caller.account_id,
        region=region,
        name=name,
        store_type=kind,
        state=DISCONNECTED,
        created_at=now(),
        **fields,
    )
    _keep_secret(svc, store_id, secret)
    try:
        if kind == EXTERNAL:
            _check_proxy(svc, record, req)
        svc.store.create_custom_key_store(record)
    except Conflict:
        _secret_path(svc, store_id).unlink(missing_ok=True)
        raise errors.CustomKeyStoreNameInUseException(
            f"A custom key store named {record.name!r} exists in this account and Region."
        ) from None
    except BaseException:
        _secret_path(svc, store_id).unlink(missing_ok=True)
        raise
    return {"CustomKeyStoreId": store_id}


@operation("DescribeCustomKeyStores")
def describe_custom_key_stores(svc: Service, req: Request) -> dict[str, Any]:
    store_id, name = req.text("CustomKeyStoreId"), req.text("CustomKeyStoreName")
    if store_id and name:
        raise errors.ValidationException(
            "Specify either CustomKeyStoreId or CustomKeyStoreName, not both."
        )
    stores = svc.store.list_custom_key_stores(req.caller.account_id, svc.region_of(req.caller))
    if store_id:
        stores = [s for s in stores if s.store_id == store_id]
        if not stores:
            raise errors.CustomKeyStoreNotFoundException(f"Custom key store {store_id} not found.")
    if name:
        stores = [s for s in stores if s.name == name]
        if not stores:
            raise errors.CustomKeyStoreNotFoundException(f"Custom key store {name!r} not found.")
    limit = req.number("Limit") or 1000
    marker = req.text("Marker")
    if marker is not None:
        ids = [s.store_id for s in stores]
        if marker not in ids:
            raise errors.InvalidMarkerException("The marker is invalid.")
        stores = stores[ids.index(marker) + 1 :]
    out: dict[str, Any] = {
        "CustomKeyStores": [_entry(s) for s in stores[:limit]],
        "Truncated": len(stores) > limit,
    }
    if len(stores) > limit:
        out["NextMarker"] = stores[limit - 1].store_id
    return out


@operation("UpdateCustomKeyStore")
def update_custom_key_store(svc: Service, req: Request) -> dict[str, Any]:
    store = _own_store(svc, req)
    changes: dict[str, Any] = {}
    new_name = req.text("NewCustomKeyStoreName")
    if new_name is not None:
        changes["name"] = new_name
    secret: str | None = None
    if store.store_type == CLOUDHSM:
        if req.text("KeyStorePassword") is not None:
            secret = req.required_text("KeyStorePassword")
        cluster = req.text("CloudHsmClusterId")
        if cluster is not None and cluster != store.cluster_id:
            if cluster not in clusters(svc):
                raise errors.CloudHsmClusterNotFoundException(f"Cluster {cluster} is unknown.")
            changes["cluster_id"] = cluster
    else:
        xks = _xks_settings(req, required=False)
        secret = xks.pop("_secret", None)
        changes.update(xks)
    if (secret is not None or set(changes) - {"name"}) and store.state != DISCONNECTED:
        raise errors.CustomKeyStoreInvalidStateException(
            f"Custom key store {store.store_id} is {store.state}: disconnect it before changing "
            "anything but its name."
        )
    if secret is not None:
        _keep_secret(svc, store.store_id, secret)
    try:
        updated = svc.store.update_custom_key_store(store.store_id, **changes)
    except Conflict:
        raise errors.CustomKeyStoreNameInUseException(
            f"A custom key store named {new_name!r} exists in this account and Region."
        ) from None
    if updated.store_type == EXTERNAL and (secret is not None or set(changes) - {"name"}):
        _check_proxy(svc, updated, req)
    return {}


@operation("ConnectCustomKeyStore")
def connect_custom_key_store(svc: Service, req: Request) -> dict[str, Any]:
    store = _own_store(svc, req)
    if store.state == CONNECTED:
        code = _connect(svc, store, req.request_id)  # this process too (idempotent)
        if code is None:
            return {}
    elif store.state == FAILED:
        raise errors.CustomKeyStoreInvalidStateException(
            f"Custom key store {store.store_id} failed to connect ({store.error_code}): "
            "disconnect it, fix the cause, and connect again."
        )
    else:
        code = _connect(svc, store, req.request_id)
    svc.store.update_custom_key_store(
        store.store_id, state=CONNECTED if code is None else FAILED, error_code=code
    )
    return {}


@operation("DisconnectCustomKeyStore")
def disconnect_custom_key_store(svc: Service, req: Request) -> dict[str, Any]:
    store = _own_store(svc, req)
    masters = svc.router.detach(store.store_id)
    if masters is not None:
        try:
            masters.close()  # logs out of the store's token
        except Exception:  # noqa: BLE001  (a token already gone is disconnected all the same)
            pass
    svc.store.update_custom_key_store(store.store_id, state=DISCONNECTED, error_code=None)
    return {}


@operation("DeleteCustomKeyStore")
def delete_custom_key_store(svc: Service, req: Request) -> dict[str, Any]:
    store = _own_store(svc, req)
    if store.state != DISCONNECTED:
        raise errors.CustomKeyStoreInvalidStateException(
            f"Custom key store {store.store_id} is {store.state}: disconnect it first."
        )
    if not svc.store.delete_custom_key_store(store.store_id):
        raise errors.CustomKeyStoreHasCMKsException(
            f"Custom key store {store.store_id} still holds KMS keys: delete them first."
        )
    _secret_path(svc, store.store_id).unlink(missing_ok=True)
    return {}
