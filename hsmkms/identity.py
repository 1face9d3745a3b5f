"""Who makes a request: the nouns every layer shares, at the bottom of the import graph.

:class:`Identity` is one access key of the credentials file (secret included: it never leaves
the wire layer, which verifies SigV4 with it); :class:`Caller` is what a verified request
carries into the operation layer (no secret).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """One access key of the credentials file and who it is."""

    access_key_id: str
    secret_access_key: str
    account_id: str
    principal_arn: str

    def __repr__(self) -> str:  # never print the secret
        return (
            f"Identity(access_key_id={self.access_key_id!r}, account_id={self.account_id!r}, "
            f"principal_arn={self.principal_arn!r})"
        )

    def caller(
        self,
        source_ip: str = "",
        *,
        secure_transport: bool = True,
        region: str = "",
        request_id: str = "",
        user_agent: str = "",
    ) -> Caller:
        return Caller(
            self.account_id,
            self.principal_arn,
            self.access_key_id,
            source_ip,
            secure_transport,
            region,
            request_id,
            user_agent,
        )


@dataclass(frozen=True)
class Caller:
    """Who makes a request: the verified principal and its account."""

    account_id: str
    principal_arn: str
    access_key_id: str = ""
    source_ip: str = ""
    # aws:SecureTransport: the wire sets it from the connection (true over TLS only). The
    # library face's default caller (Identity.caller) crosses no network and says true; a
    # Caller made by hand says false, the value that can only make a policy stricter.
    secure_transport: bool = False
    # The Region of the request (its SigV4 scope); "" is the service's default Region (the
    # library face's ``region`` setting).
    region: str = ""
    # The request's id, answered as x-amzn-RequestId (set by the wire); "" on the library
    # face, where the operation layer draws one per call.
    request_id: str = ""
    # The client's User-Agent header (the audit trail's userAgent); "" on the library face.
    user_agent: str = ""
