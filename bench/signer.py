"""A minimal AWS SigV4 signer for the load generator: AWS JSON 1.1 ``POST /`` requests only.

botocore's ``SigV4Auth`` costs ~50 us a request (an AWSRequest, header dicts, URL parsing);
a load generator that spends that much measures itself. This one signs the only request
shape the benchmark sends, the way botocore does (tests/unit/test_bench_signer.py checks it
byte for byte), in a few microseconds: the signing key is derived once per day, and the
canonical request is a format string.

Signed headers: ``content-type;host;x-amz-date;x-amz-target`` (what botocore signs for
KMS, less ``x-amz-content-sha256``, which botocore does not add for JSON services).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

ALGORITHM = "AWS4-HMAC-SHA256"
CONTENT_TYPE = "application/x-amz-json-1.1"
SIGNED_HEADERS = "content-type;host;x-amz-date;x-amz-target"
_EMPTY_QUERY = ""


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


class Signer:
    """Signs ``POST /`` requests to one endpoint (``host`` as sent in the Host header)."""

    def __init__(
        self,
        access_key_id: str,
        secret_access_key: str,
        region: str,
        host: str,
        service: str = "kms",
    ) -> None:
        self.access_key_id = access_key_id
        self.secret = secret_access_key
        self.region = region
        self.service = service
        self.host = host
        self._day = ""
        self._key = b""
        self._scope = ""

    def _signing_key(self, day: str) -> bytes:
        if day != self._day:
            k = _hmac(("AWS4" + self.secret).encode("utf-8"), day)
            k = _hmac(k, self.region)
            k = _hmac(k, self.service)
            self._key = _hmac(k, "aws4_request")
            self._scope = f"{day}/{self.region}/{self.service}/aws4_request"
            self._day = day
        return self._key

    def headers(self, target: str, body: bytes, amz_date: str | None = None) -> dict[str, str]:
        """The headers to send (besides Content-Length) for ``body`` to ``target``
        (``TrentService.Operation``); ``amz_date`` as ``YYYYMMDDTHHMMSSZ`` (default: now)."""
        if amz_date is None:
            amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        key = self._signing_key(amz_date[:8])
        canonical = (
            f"POST\n/\n{_EMPTY_QUERY}\n"
            f"content-type:{CONTENT_TYPE}\nhost:{self.host}\n"
            f"x-amz-date:{amz_date}\nx-amz-target:{target}\n\n"
            f"{SIGNED_HEADERS}\n{hashlib.sha256(body).hexdigest()}"
        )
        to_sign = (
            f"{ALGORITHM}\n{amz_date}\n{self._scope}\n"
            f"{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
        )
        signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        return {
            "Content-Type": CONTENT_TYPE,
            "Host": self.host,
            "X-Amz-Date": amz_date,
            "X-Amz-Target": target,
            "Authorization": (
                f"{ALGORITHM} Credential={self.access_key_id}/{self._scope}, "
                f"SignedHeaders={SIGNED_HEADERS}, Signature={signature}"
            ),
        }
