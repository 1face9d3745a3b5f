"""Settings for an HSM's quirks (issue 20, docs/hsm-vendors.md) that the operation layer keeps."""

from __future__ import annotations

import pytest
from helpers import raises


@pytest.mark.token_objects  # the wrapped mode's: tests/features/test_wrapped_mode.py
def test_token_max_objects_refuses_a_key_before_the_hsm_would(settings, token, service):
    """A small HSM's quirk (a YubiHSM 2 holds 256 objects): the cap answers AWS's
    LimitExceededException, and nothing is made on the token."""
    from hsmkms.compose import build_service
    from hsmkms.kms import KMS

    held = len(service.store.inner.all_material_ids())
    svc = build_service(settings.replace(token_max_objects=held + 1), token, service.store)
    try:
        kms = KMS.from_service(svc)
        kms.create_key()  # the last one there is room for
        with raises("LimitExceededException", "token_max_objects"):
            kms.create_key()
        assert len(service.store.inner.all_material_ids()) == held + 1
    finally:
        svc.pool.close()
