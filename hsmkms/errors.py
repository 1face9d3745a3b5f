"""AWS KMS errors, by the names and HTTP statuses AWS KMS answers with.

Every error the operation layer raises is a :class:`KMSError`. It subclasses botocore's
``ClientError`` so that code written for boto3 catches it unchanged when it runs against the
in-process library face (``except ClientError as e: e.response["Error"]["Code"]``), and the
wire layer turns it into the AWS JSON 1.1 error envelope ``{"__type": code, "message": ...}``.

Messages never carry key material, PINs or secrets.
"""

from __future__ import annotations

from typing import Any, ClassVar

from botocore.exceptions import ClientError


class KMSError(ClientError):
    """Base of every AWS-named error. ``code`` is AWS's ``__type``; ``status`` the HTTP status."""

    code: ClassVar[str] = "KMSInternalException"
    status: ClassVar[int] = 500

    def __init__(self, message: str = "", operation_name: str = "") -> None:
        self.message = message
        response: dict[str, Any] = {
            "Error": {"Code": self.code, "Message": message},
            "message": message,
            "ResponseMetadata": {"HTTPStatusCode": self.status},
        }
        super().__init__(response, operation_name or "operation")  # type: ignore[arg-type]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.operation_name))

    def with_operation(self, operation_name: str) -> KMSError:
        """The same error, naming the operation (as boto3's message does)."""
        return type(self)(self.message, operation_name)


def _client(name: str, doc: str) -> type[KMSError]:
    return type(name, (KMSError,), {"code": name, "status": 400, "__doc__": doc})


def _fault(name: str, doc: str) -> type[KMSError]:
    return type(name, (KMSError,), {"code": name, "status": 500, "__doc__": doc})


# Client errors (HTTP 400), named as in botocore's KMS service model.
AccessDeniedException = _client("AccessDeniedException", "The caller may not do this.")
AlreadyExistsException = _client("AlreadyExistsException", "The resource already exists.")
ConflictException = _client(
    "ConflictException", "A rotation of the KMS key is in progress or about to begin."
)
DisabledException = _client("DisabledException", "The KMS key is disabled.")
DryRunOperationException = _client(
    "DryRunOperationException", "The request would have succeeded; DryRun was set."
)
ExpiredImportTokenException = _client(
    "ExpiredImportTokenException", "The import token has expired: get new import parameters."
)
IncorrectKeyMaterialException = _client(
    "IncorrectKeyMaterialException", "The imported key material is not what the key expects."
)
InvalidImportTokenException = _client(
    "InvalidImportTokenException", "The import token is invalid or belongs to another KMS key."
)
IncorrectKeyException = _client(
    "IncorrectKeyException", "The blob was not encrypted under the KMS key named."
)
InvalidAliasNameException = _client("InvalidAliasNameException", "The alias name is invalid.")
InvalidArnException = _client("InvalidArnException", "The ARN is invalid.")
InvalidCiphertextException = _client(
    "InvalidCiphertextException", "The ciphertext, its context or its tag is not valid."
)
InvalidGrantIdException = _client("InvalidGrantIdException", "The grant id is invalid.")
InvalidGrantTokenException = _client("InvalidGrantTokenException", "The grant token is invalid.")
InvalidKeyUsageException = _client(
    "InvalidKeyUsageException", "The KMS key's usage does not allow this operation."
)
InvalidMarkerException = _client("InvalidMarkerException", "The pagination marker is invalid.")
KMSInvalidSignatureException = _client(
    "KMSInvalidSignatureException", "The signature does not verify with the KMS key."
)
KMSInvalidMacException = _client("KMSInvalidMacException", "The MAC does not verify.")
KMSInvalidStateException = _client(
    "KMSInvalidStateException", "The KMS key's state does not allow this operation."
)
LimitExceededException = _client("LimitExceededException", "A quota was exceeded.")
MalformedPolicyDocumentException = _client(
    "MalformedPolicyDocumentException", "The key policy is malformed."
)
NotFoundException = _client("NotFoundException", "The resource does not exist.")
TagException = _client("TagException", "A tag is invalid.")
ThrottlingException = _client(
    "ThrottlingException", "The request rate exceeds a request quota (the quotas setting)."
)
UnsupportedOperationException = _client(
    "UnsupportedOperationException", "hsmkms does not support this operation or value."
)
ValidationException = _client("ValidationException", "The input fails the service model.")

# Custom key stores (HTTP 400), named as in botocore's KMS service model
# (docs/custom-key-stores.md says when each is answered).
_KEY_STORE_DOC = "A custom key store refused the request."
CustomKeyStoreInvalidStateException = _client("CustomKeyStoreInvalidStateException", _KEY_STORE_DOC)
XksProxyIncorrectAuthenticationCredentialException = _client(
    "XksProxyIncorrectAuthenticationCredentialException", _KEY_STORE_DOC
)
XksProxyInvalidConfigurationException = _client(
    "XksProxyInvalidConfigurationException", _KEY_STORE_DOC
)
XksProxyUriUnreachableException = _client("XksProxyUriUnreachableException", _KEY_STORE_DOC)
XksProxyInvalidResponseException = _client("XksProxyInvalidResponseException", _KEY_STORE_DOC)
CloudHsmClusterNotFoundException = _client("CloudHsmClusterNotFoundException", _KEY_STORE_DOC)
CloudHsmClusterInUseException = _client("CloudHsmClusterInUseException", _KEY_STORE_DOC)
IncorrectTrustAnchorException = _client("IncorrectTrustAnchorException", _KEY_STORE_DOC)
XksProxyUriInUseException = _client("XksProxyUriInUseException", _KEY_STORE_DOC)
CustomKeyStoreNameInUseException = _client("CustomKeyStoreNameInUseException", _KEY_STORE_DOC)
CustomKeyStoreNotFoundException = _client("CustomKeyStoreNotFoundException", _KEY_STORE_DOC)
CustomKeyStoreHasCMKsException = _client("CustomKeyStoreHasCMKsException", _KEY_STORE_DOC)
XksKeyNotFoundException = _client("XksKeyNotFoundException", _KEY_STORE_DOC)
XksKeyInvalidConfigurationException = _client("XksKeyInvalidConfigurationException", _KEY_STORE_DOC)
XksKeyAlreadyInUseException = _client("XksKeyAlreadyInUseException", _KEY_STORE_DOC)

# Protocol-level client errors, answered by the wire layer.
SerializationException = _client("SerializationException", "The request body is not valid JSON.")
UnknownOperationException = _client("UnknownOperationException", "The target is unknown.")
InvalidSignatureException = _client("InvalidSignatureException", "The SigV4 signature is wrong.")
UnrecognizedClientException = _client(
    "UnrecognizedClientException", "The access key id is unknown."
)
MissingAuthenticationTokenException = _client(
    "MissingAuthenticationTokenException", "The request is not signed."
)
IncompleteSignatureException = _client(
    "IncompleteSignatureException", "The Authorization header is incomplete."
)
RequestEntityTooLargeException = _client(
    "RequestEntityTooLargeException", "The request body is over the limit."
)

# Faults (HTTP 500).
KMSInternalException = _fault("KMSInternalException", "An internal error.")
DependencyTimeoutException = _fault("DependencyTimeoutException", "The HSM did not answer in time.")
KeyUnavailableException = _fault(
    "KeyUnavailableException", "The KMS key's material is not available on the HSM now."
)

ALL: dict[str, type[KMSError]] = {
    cls.code: cls
    for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, KMSError) and cls is not KMSError
}
ALL["KMSInternalException"] = KMSInternalException
ALL["RequestEntityTooLargeException"].status = 413
