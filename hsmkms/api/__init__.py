"""The AWS wire: AWS JSON 1.1 over HTTP, SigV4-verified, served by uvicorn.

Knows the protocol and the KMS service model, nothing of PKCS#11 and no KMS rules: every
request becomes one ``KMS.call(operation, params, caller)``.

    create_app(kms, identities, settings) -> ASGI app
    app_from_env()                          -> ASGI app; uvicorn factory for --workers N
"""

from hsmkms.api.app import App, app_from_env, create_app

__all__ = ["App", "app_from_env", "create_app"]
