"""Key policies: who may do what with a KMS key, decided as AWS KMS decides it.

* :func:`authorize` is the one gate every operation on a key passes: it builds the request
  context (:class:`~hsmkms.service.policy_eval.RequestContext`) from the operation's
  parameters, evaluates the key policy (an explicit Deny wins, then an Allow), and when the
  policy does not allow, looks for a grant that does (:mod:`hsmkms.service.grants`). A refusal
  is AWS's AccessDeniedException, worded as AWS words it::

      User: arn:aws:iam::111122223333:user/bob is not authorized to perform:
      kms:GenerateDataKeyPair on resource: arn:aws:kms:us-east-1:444455556666:key/...
      because no resource-based policy allows the kms:GenerateDataKeyPair action

  (or ``... with an explicit deny in a resource-based policy``).
* Operations AWS does not allow across accounts (``Cross-account use: No`` in the API
  reference) answer NotFoundException for another account's key, whatever its policy says.
* PutKeyPolicy, GetKeyPolicy, ListKeyPolicies; the default key policy; the policy lockout
  safety check of CreateKey and PutKeyPolicy ("The new key policy will not allow you to
  update the key policy in the future.", MalformedPolicyDocumentException).

Account-level operations (CreateKey, ListKeys, ListAliases, GenerateRandom) are governed by
IAM policies in AWS; hsmkms has no IAM, so every principal of an account may call them for
that account.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hsmkms import blob, errors
from hsmkms.service import recipient
from hsmkms.service.core import Request, operation
from hsmkms.service.policy_eval import (
    Decision,
    Policy,
    PolicyError,
    RequestContext,
    check_new,
    evaluate,
)
from hsmkms.service.policy_eval import parse as parse_document
from hsmkms.specs import EncryptionAlgorithm, ExpirationModel, MessageType

if TYPE_CHECKING:
    from hsmkms.identity import Caller
    from hsmkms.service import Service
    from hsmkms.store import KeyRecord

log = logging.getLogger("hsmkms.service")

POLICY_NAME = "default"
LOCKOUT = "The new key policy will not allow you to update the key policy in the future."

# Operations AWS allows on a key of another account (their API reference: "Cross-account
# use: Yes"). Every other operation on a key works only in the key's own account.
CROSS_ACCOUNT = frozenset(
    {
        "CreateGrant",
        "Decrypt",
        "DescribeKey",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateMac",
        "GetKeyRotationStatus",
        "GetPublicKey",
        "ListGrants",
        "ReEncrypt",
        "ReEncryptFrom",
        "ReEncryptTo",
        "RetireGrant",
        "RevokeGrant",
        "Sign",
        "Verify",
        "VerifyMac",
        "DeriveSharedSecret",
        "Encapsulate",
        "Decapsulate",
    }
)
# Operations whose request carries an encryption context, and the member that holds it.
_CONTEXT_MEMBER = {
    "Encrypt": "EncryptionContext",
    "Decrypt": "EncryptionContext",
    "GenerateDataKey": "EncryptionContext",
    "GenerateDataKeyWithoutPlaintext": "EncryptionContext",
    "GenerateDataKeyPair": "EncryptionContext",
    "GenerateDataKeyPairWithoutPlaintext": "EncryptionContext",
    "ReEncryptFrom": "SourceEncryptionContext",
    "ReEncryptTo": "DestinationEncryptionContext",
}
_ALGORITHM_MEMBER = {
    "Encrypt": "EncryptionAlgorithm",
    "Decrypt": "EncryptionAlgorithm",
    "ReEncryptFrom": "SourceEncryptionAlgorithm",
    "ReEncryptTo": "DestinationEncryptionAlgorithm",
}
# The condition keys an asymmetric or HMAC operation's request fills (AWS KMS Developer Guide,
# "Condition keys for AWS KMS"): operation -> (request member, condition key, value when absent).
_REQUEST_KEYS: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    "Sign": (
        ("SigningAlgorithm", "kms:SigningAlgorithm", None),
        ("MessageType", "kms:MessageType", MessageType.RAW),
    ),
    "GenerateMac": (("MacAlgorithm", "kms:MacAlgorithm", None),),
    "DeriveSharedSecret": (("KeyAgreementAlgorithm", "kms:KeyAgreementAlgorithm", None),),
    "GetParametersForImport": (
        ("WrappingAlgorithm", "kms:WrappingAlgorithm", None),
        ("WrappingKeySpec", "kms:WrappingKeySpec", None),
    ),
    "ImportKeyMaterial": (
        ("ExpirationModel", "kms:ExpirationModel", ExpirationModel.KEY_MATERIAL_EXPIRES),
    ),
    "ReplicateKey": (("ReplicaRegion", "kms:ReplicaRegion", None),),
    "UpdatePrimaryRegion": (("PrimaryRegion", "kms:PrimaryRegion", None),),
}
_REQUEST_KEYS["Verify"] = _REQUEST_KEYS["Sign"]
_REQUEST_KEYS["VerifyMac"] = _REQUEST_KEYS["GenerateMac"]
_GRANT_CONTEXT_OPERATIONS = frozenset({"CreateGrant", "ListGrants", "RevokeGrant"})
_ALIAS_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(alias/.+)$")


def default_policy(account_id: str) -> str:
    """The default key policy AWS KMS gives a key created without one (through the API):
    the account root gets kms:*, which here lets every principal of the account use the key."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "key-default-1",
            "Statement": [
                {
                    "Sid": "Enable IAM User Permissions",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=2,
    )


def parse_policy(text: str) -> Policy:
    """A new key policy document (CreateKey, PutKeyPolicy), or MalformedPolicyDocumentException
    saying what is wrong: beyond its shape, no Allow with NotPrincipal and no condition key
    hsmkms cannot evaluate (:func:`~hsmkms.service.policy_eval.check_new`)."""
    try:
        parsed = parse_document(text)
        check_new(parsed)
        return parsed
    except PolicyError as exc:
        raise errors.MalformedPolicyDocumentException(str(exc)) from None


def check_lockout(
    policy: Policy,
    caller: Caller,
    key_arn: str,
    bypass: bool,
    tags: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
) -> None:
    """AWS's policy lockout safety check: unless bypassed, the new policy must let the caller
    call PutKeyPolicy on the key later (grants and IAM aside), with the condition keys that
    PutKeyPolicy will carry (transport, region, the key's ``tags``)."""
    if bypass:
        return
    ctx = RequestContext(
        action="kms:PutKeyPolicy",
        principal_arn=caller.principal_arn,
        principal_account=caller.account_id,
        resource_arn=key_arn,
        source_ip=caller.source_ip or None,
        now=datetime.now(UTC),
        secure_transport=caller.secure_transport,
        requested_region=key_arn.split(":")[3],
        resource_tags=tags,
        extra={
            "kms:BypassPolicyLockoutSafetyCheck": "false",
            "aws:PrincipalIsAWSService": "false",
            "aws:ViaAWSService": "false",
        },
    )
    if evaluate(policy, ctx) is not Decision.ALLOW:
        raise errors.MalformedPolicyDocumentException(LOCKOUT)


def access_denied(
    caller: Caller, action: str, resource: str, explicit: bool = False
) -> errors.KMSError:
    """AccessDeniedException in AWS's words for a key policy's refusal."""
    why = (
        "with an explicit deny in a resource-based policy"
        if explicit
        else f"because no resource-based policy allows the {action} action"
    )
    return errors.AccessDeniedException(
        f"User: {caller.principal_arn} is not authorized to perform: {action} on resource: "
        f"{resource} {why}"
    )


def key_policy(key: KeyRecord) -> Policy:
    """The key's stored policy; one that no longer parses allows nothing (and is logged)."""
    try:
        return parse_document(key.policy)
    except PolicyError as exc:
        log.error("the key policy of %s does not parse (%s): it allows nothing", key.arn, exc)
        return Policy(statements=())


def request_context(
    svc: Service, req: Request, key: KeyRecord, operation_name: str, requested: str | None = None
) -> RequestContext:
    """What the key policy sees of this request (AWS's condition keys for KMS)."""
    params = req.params
    caller = req.caller
    context_member = _CONTEXT_MEMBER.get(operation_name)
    context = req.context(context_member) if context_member else None
    algorithm: str | None = None
    if operation_name in _ALGORITHM_MEMBER:
        algorithm = req.text(_ALGORITHM_MEMBER[operation_name])
        algorithm = algorithm or EncryptionAlgorithm.SYMMETRIC_DEFAULT
    elif operation_name.startswith("GenerateDataKey"):
        algorithm = EncryptionAlgorithm.SYMMETRIC_DEFAULT
    extra: dict[str, str] = {
        "kms:KeyOrigin": key.origin,
        "kms:MultiRegion": "true" if key.multi_region else "false",
        **(
            {"kms:MultiRegionKeyType": "REPLICA" if key.is_replica else "PRIMARY"}
            if key.multi_region
            else {}
        ),
        "kms:CustomerMasterKeySpec": key.key_spec,  # the older names of kms:KeySpec, KeyUsage
        "kms:CustomerMasterKeyUsage": key.key_usage,
        "aws:PrincipalIsAWSService": "false",  # no AWS service calls hsmkms
        "aws:ViaAWSService": "false",
    }
    same_key = _re_encrypt_on_same_key(svc, req, key, operation_name)
    if same_key is not None:
        extra["kms:ReEncryptOnSameKey"] = "true" if same_key else "false"
    for member, condition_key in (
        ("BypassPolicyLockoutSafetyCheck", "kms:BypassPolicyLockoutSafetyCheck"),
        ("GranteePrincipal", "kms:GranteePrincipal"),
        ("RetiringPrincipal", "kms:RetiringPrincipal"),
        ("PendingWindowInDays", "kms:ScheduleKeyDeletionPendingWindowInDays"),
        ("RotationPeriodInDays", "kms:RotationPeriodInDays"),
    ):
        value = params.get(member)
        if value is not None:
            extra[condition_key] = str(value).lower() if isinstance(value, bool) else str(value)
    for member, condition_key, absent in _REQUEST_KEYS.get(operation_name, ()):
        value = req.text(member) or absent
        if value is not None:
            extra[condition_key] = str(value)
    if operation_name == "ImportKeyMaterial" and params.get("ValidTo") is not None:
        extra["kms:ValidTo"] = str(int(params["ValidTo"].timestamp()))  # a Numeric, epoch seconds
    verified = recipient.attestation(svc, req)  # a bad document: ValidationException here
    if verified is not None:
        extra.update(verified.condition_keys())
    extras: dict[str, str | list[str]] = dict(extra)
    if operation_name == "CreateGrant" and params.get("Constraints"):
        extras["kms:GrantConstraintType"] = sorted(params["Constraints"])
    request_tags: dict[str, str] | None = None
    if operation_name == "TagResource":
        request_tags = {t["TagKey"]: t["TagValue"] for t in req.structures("Tags")}
        extras["aws:TagKeys"] = list(request_tags)
    elif operation_name == "UntagResource":
        extras["aws:TagKeys"] = req.texts("TagKeys")
    store = svc.store
    return RequestContext(
        action=f"kms:{operation_name}",
        principal_arn=caller.principal_arn,
        principal_account=caller.account_id,
        resource_arn=key.arn,
        encryption_context=context,
        key_spec=key.key_spec,
        key_usage=key.key_usage,
        encryption_algorithm=algorithm,
        data_key_pair_spec=req.text("KeyPairSpec") if "KeyPair" in operation_name else None,
        grant_operations=req.texts("Operations") if operation_name == "CreateGrant" else None,
        grant_is_for_aws_resource=False if operation_name in _GRANT_CONTEXT_OPERATIONS else None,
        request_alias=_alias_name(requested),
        resource_aliases=lambda: [a.alias_name for a in store.aliases_of(key.ref)],
        source_ip=caller.source_ip or None,
        now=datetime.now(UTC),
        secure_transport=caller.secure_transport,
        requested_region=svc.region_of(caller),
        resource_tags=lambda: store.get_tags(key.ref),
        request_tags=request_tags,
        extra=extras,
    )


def _re_encrypt_on_same_key(
    svc: Service, req: Request, key: KeyRecord, operation_name: str
) -> bool | None:
    """kms:ReEncryptOnSameKey: whether ReEncrypt's source and destination are one key. The
    source is the key an hsmkms blob names, else SourceKeyId (an asymmetric source's
    ciphertext names no key); None when neither tells (such a ReEncrypt fails later anyway)."""
    if operation_name == "ReEncryptTo":  # ``key`` is the destination; the blob names the source
        if req.get("CiphertextBlob") is None:  # DryRun with IGNORE_CIPHERTEXT: SourceKeyId does
            return _names_key(svc, req, key, req.text("SourceKeyId"))
        try:
            return blob.parse(req.required_data("CiphertextBlob")).key_id == key.key_id
        except (blob.MalformedBlob, KeyError, TypeError, ValueError):
            # Not an hsmkms blob: an RSA ciphertext, which names no key; ReEncrypt then
            # requires SourceKeyId (AWS), which does. Else a blob that fails later anyway.
            return _names_key(svc, req, key, req.text("SourceKeyId"))
    if operation_name == "ReEncryptFrom":  # ``key`` is the source
        return _names_key(svc, req, key, req.text("DestinationKeyId"))
    return None


def _names_key(svc: Service, req: Request, key: KeyRecord, named: str | None) -> bool | None:
    """Whether a key id, key ARN, alias name or alias ARN names ``key`` (None: nothing named)."""
    if not named:
        return None
    if named in (key.key_id, key.arn):
        return True
    alias = _alias_name(named)
    if alias is None:
        return False  # another key id or key ARN
    account = named.split(":")[4] if named.startswith("arn:") else req.caller.account_id
    record = svc.store.get_alias(account, svc.region_of(req.caller), alias)
    return record is not None and record.key_id == key.key_id


def _alias_name(requested: str | None) -> str | None:
    if requested is None:
        return None
    if requested.startswith("alias/"):
        return requested
    m = _ALIAS_ARN.match(requested)
    return m.group(1) if m else None


def authorize(
    svc: Service, req: Request, key: KeyRecord, operation_name: str, *, requested: str | None = None
) -> None:
    """Raise unless ``req.caller`` may do ``kms:<operation_name>`` on ``key``.

    ``requested`` is the KeyId as the request named it (for kms:RequestAlias). Grant tokens in
    the request are checked here too: one that names no grant is InvalidGrantTokenException.
    """
    caller = req.caller
    if key.account_id != caller.account_id and operation_name not in CROSS_ACCOUNT:
        raise errors.NotFoundException(f"Key '{key.arn}' does not exist")
    _check_tokens_known(svc, req)
    ctx = request_context(svc, req, key, operation_name, requested)
    decision = evaluate(key_policy(key), ctx)
    if decision is Decision.DENY:
        raise access_denied(caller, ctx.action, key.arn, explicit=True)
    if decision is Decision.ALLOW:
        return
    from hsmkms.service import grants

    if grants.allowing_grant(svc, req, key, ctx) is None:
        raise access_denied(caller, ctx.action, key.arn)


def _check_tokens_known(svc: Service, req: Request) -> None:
    """Every grant token of the request names a grant that exists (AWS: a token it cannot
    use is InvalidGrantTokenException), asked of the store itself: a token's grant is known
    at once, not a cache ttl after another process made or retired it."""
    if not req.texts("GrantTokens") or req.grants_checked:
        return
    for grant_id in req.grant_ids:  # reading them checks each token's shape
        if svc.store.inner.get_grant(grant_id) is None:
            raise errors.InvalidGrantTokenException("The grant token is not valid.")
    req.grants_checked = True


# -- PutKeyPolicy, GetKeyPolicy, ListKeyPolicies -----------------------------------------
def _check_policy_name(name: str | None) -> None:
    """KMS keys have one policy, named "default"; AWS answers another name NotFound."""
    if name is not None and name != POLICY_NAME:
        raise errors.NotFoundException("No such policy exists")


@operation("PutKeyPolicy")
def put_key_policy(svc: Service, req: Request) -> dict[str, Any]:
    key = svc.authorized_key(req, req.key_id, allow_alias=False)
    _check_policy_name(req.text("PolicyName"))
    text = req.required_text("Policy")
    check_lockout(
        parse_policy(text),
        req.caller,
        key.arn,
        req.flag("BypassPolicyLockoutSafetyCheck"),
        lambda: svc.store.get_tags(key.ref),
    )
    svc.store.update_key(key.ref, policy=text)
    return {}


@operation("GetKeyPolicy")
def get_key_policy(svc: Service, req: Request) -> dict[str, Any]:
    key = svc.authorized_key(req, req.key_id, allow_alias=False)
    _check_policy_name(req.text("PolicyName"))
    return {"Policy": key.policy, "PolicyName": POLICY_NAME}


@operation("ListKeyPolicies")
def list_key_policies(svc: Service, req: Request) -> dict[str, Any]:
    svc.authorized_key(req, req.key_id, allow_alias=False)
    return {"PolicyNames": [POLICY_NAME], "Truncated": False}
