"""Which condition keys a key policy may use here, and what hsmkms does with each (issue 13,
item 2).

A condition on a key the request does not carry fails under a positive operator, so a Deny on
a key hsmkms never filled used to fail open, silently. Every ``aws:`` and ``kms:`` key is now
one of three kinds:

* **Filled** (:data:`FILLED`, and the prefixes of :data:`FILLED_PREFIXES`): hsmkms sets it
  whenever it applies to the request (:class:`~hsmkms.service.policy_eval.RequestContext`).
* **Absent by AWS's own rules** (:data:`ABSENT`): AWS leaves them out of a request like the
  ones hsmkms serves (a direct call, long-term access keys, no AWS service, no VPC endpoint,
  no Nitro enclave, no imported key material), so a missing key is the true answer and
  evaluating them as missing is what AWS would do.
* **Unknowable** (everything else in those namespaces, e.g. ``aws:PrincipalTag/<tag>``,
  ``aws:PrincipalOrgID``, ``aws:userid``, a misspelt key): AWS would know them, hsmkms cannot
  (it has no IAM principals with tags, no Organizations). CreateKey and PutKeyPolicy refuse a
  policy that uses one (MalformedPolicyDocumentException naming the key); a policy stored
  before that rule is evaluated with a Deny on such a key applying and an Allow on it not,
  so it can only refuse more, never allow more.

Keys of other namespaces (``s3:``, ``ec2:``, ...) never apply to a KMS request, in AWS either:
they are evaluated as missing.
"""

from __future__ import annotations

from functools import lru_cache

FILLED = frozenset(
    k.lower()
    for k in (
        "aws:CurrentTime",
        "aws:EpochTime",
        "aws:PrincipalAccount",
        "aws:PrincipalArn",
        "aws:PrincipalIsAWSService",
        "aws:PrincipalType",
        "aws:RequestedRegion",
        "aws:ResourceAccount",
        "aws:SecureTransport",
        "aws:SourceIp",
        "aws:TagKeys",
        "aws:username",
        "aws:ViaAWSService",
        "kms:BypassPolicyLockoutSafetyCheck",
        "kms:CallerAccount",
        "kms:CustomerMasterKeySpec",
        "kms:CustomerMasterKeyUsage",
        "kms:DataKeyPairSpec",
        "kms:EncryptionAlgorithm",
        "kms:EncryptionContextKeys",
        "kms:ExpirationModel",
        "kms:GrantConstraintType",
        "kms:GranteePrincipal",
        "kms:GrantIsForAWSResource",
        "kms:GrantOperations",
        "kms:KeyAgreementAlgorithm",
        "kms:KeyOrigin",
        "kms:KeySpec",
        "kms:KeyUsage",
        "kms:MacAlgorithm",
        "kms:MessageType",
        "kms:MultiRegion",
        "kms:MultiRegionKeyType",
        "kms:PrimaryRegion",
        "kms:ReplicaRegion",
        "kms:RequestAlias",
        "kms:ResourceAliases",
        "kms:RetiringPrincipal",
        "kms:ReEncryptOnSameKey",
        "kms:RotationPeriodInDays",
        "kms:ScheduleKeyDeletionPendingWindowInDays",
        "kms:SigningAlgorithm",
        "kms:ValidTo",
        "kms:WrappingAlgorithm",
        "kms:WrappingKeySpec",
    )
)
FILLED_PREFIXES = (
    "kms:encryptioncontext:",
    "aws:resourcetag/",
    "aws:requesttag/",
    "kms:recipientattestation:",  # from a verified Recipient's document (absent without one)
)

ABSENT = frozenset(
    k.lower()
    for k in (
        # No AWS service calls hsmkms on a caller's behalf.
        "kms:ViaService",
        "aws:CalledVia",
        "aws:CalledViaFirst",
        "aws:CalledViaLast",
        "aws:PrincipalServiceName",
        "aws:PrincipalServiceNamesList",
        "aws:SourceAccount",
        "aws:SourceArn",
        "aws:SourceOrgID",
        "aws:SourceOrgPaths",
        # No VPC, no EC2 instance credentials.
        "aws:SourceVpc",
        "aws:SourceVpce",
        "aws:VpcSourceIp",
        "aws:Ec2InstanceSourceVpc",
        "aws:Ec2InstanceSourcePrivateIPv4",
        # Long-term access keys: no MFA, no session, no federation, no browser.
        "aws:MultiFactorAuthAge",
        "aws:MultiFactorAuthPresent",
        "aws:TokenIssueTime",
        "aws:SourceIdentity",
        "aws:FederatedProvider",
        "aws:AssumedRoot",
        "aws:Referer",
    )
)
ABSENT_PREFIXES: tuple[str, ...] = ()

_NAMESPACES = ("aws:", "kms:")


@lru_cache(maxsize=4096)
def unknowable(key: str) -> bool:
    """Whether ``key`` is an ``aws:`` or ``kms:`` condition key hsmkms can neither fill nor
    call absent by AWS's rules (see the module docstring)."""
    name = key.lower()
    if not name.startswith(_NAMESPACES):
        return False
    if name in FILLED or name in ABSENT:
        return False
    return not name.startswith(FILLED_PREFIXES + ABSENT_PREFIXES)
