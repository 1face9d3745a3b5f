"""A grant token makes its grant effective at once in every process (issue 13, item 8).

AWS KMS: "a grant token ... lets you use the permissions in the grant immediately, even
before the grant has achieved eventual consistency". Two operation layers on one store, as two
server workers are, each with a request-path cache trusted far longer than the test runs: the
grantee's process answers from grant lists it read before the change, unless the request
carries the token of the grant, whose grant is then read from the store itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from helpers import raises

from hsmkms.hsm.token import PKCS11Token
from hsmkms.kms import KMS, Caller
from hsmkms.store import open_store

LONG_TTL = 600.0  # nothing another process changes is seen through the cache during a test
BOB = Caller("999988887777", "arn:aws:iam::999988887777:user/bob")


@contextmanager
def process(settings: Any) -> Iterator[KMS]:
    """An operation layer on the session's home with its own token session, store connection
    and request-path cache."""
    from hsmkms.compose import build_service

    s = settings.replace(cache_ttl=LONG_TTL)
    token = PKCS11Token.open(s.pkcs11_module, s.token_label, s.read_pin())
    svc = build_service(s, token, open_store(s.store_path))
    try:
        yield KMS.from_service(svc)
    finally:
        svc.close()


def grant(kms: KMS, key_id: str, operations: list[str]) -> dict[str, Any]:
    return dict(
        kms.create_grant(KeyId=key_id, GranteePrincipal=BOB.principal_arn, Operations=operations)
    )


def test_a_grant_made_through_one_is_used_through_the_other_at_once_with_its_token(settings):
    with process(settings) as a, process(settings) as b:
        key = a.create_key()["KeyMetadata"]
        grant(a, key["KeyId"], ["Encrypt"])
        bob_on_b = b.as_caller(BOB)
        blob = bob_on_b.encrypt(KeyId=key["Arn"], Plaintext=b"x")["CiphertextBlob"]
        decrypt = grant(a, key["KeyId"], ["Decrypt"])
        # Without the token b answers from bob's grants as it read them (eventual consistency
        # within the ttl, as AWS allows): what makes the token's part below worth testing.
        with raises("AccessDeniedException", "kms:Decrypt"):
            bob_on_b.decrypt(CiphertextBlob=blob)
        out = bob_on_b.decrypt(CiphertextBlob=blob, GrantTokens=[decrypt["GrantToken"]])
        assert out["Plaintext"] == b"x"
        with raises("AccessDeniedException", "kms:Decrypt"):  # the token serves its grantee only
            b.as_caller(Caller("999988887777", "arn:aws:iam::999988887777:user/carol")).decrypt(
                CiphertextBlob=blob, GrantTokens=[decrypt["GrantToken"]]
            )


def test_a_grant_retired_through_one_is_refused_by_its_token_through_the_other_at_once(
    settings,
):
    with process(settings) as a, process(settings) as b:
        key = a.create_key()["KeyMetadata"]
        out = grant(a, key["KeyId"], ["GenerateDataKey", "RetireGrant"])
        bob_on_b = b.as_caller(BOB)
        token = [out["GrantToken"]]
        for _ in range(2):  # the grant, by its token and in bob's list, is in b's cache now
            bob_on_b.generate_data_key(KeyId=key["Arn"], KeySpec="AES_256", GrantTokens=token)
        a.as_caller(BOB).retire_grant(GrantToken=out["GrantToken"])
        with raises("InvalidGrantTokenException"):
            bob_on_b.generate_data_key(KeyId=key["Arn"], KeySpec="AES_256", GrantTokens=token)
