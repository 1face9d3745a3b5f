"""AWS Signature Version 4 verification, as an AWS JSON 1.1 service (Coral) performs it.

The canonical request is rebuilt exactly as botocore's ``SigV4Auth`` builds it (and the AWS SDK
for JavaScript v3, which follows the same specification):

    METHOD \\n URI \\n query \\n headers \\n signed header names \\n payload hash

* canonical URI: the path as sent, dot segments and repeated slashes removed, then
  percent-encoded once more (``quote(path, safe="/~")``: non-S3 services double-encode);
* canonical query: every ``name=value`` pair decoded, re-encoded with RFC 3986 unreserved
  characters left alone, sorted;
* canonical headers: each signed header, value trimmed and inner whitespace collapsed, repeated
  headers joined with ``,``;
* payload hash: SHA-256 of the body; an ``X-Amz-Content-Sha256`` header must equal it.

Checks run in AWS's order and answer AWS's errors and wording (recorded from DynamoDB/KMS
answers by the dynalite and scratchstack projects, and AWS's own error pages):

1. no ``Authorization`` header, or not ``AWS4-...`` -> MissingAuthenticationTokenException;
   a header read as one value (Authorization, Host, X-Amz-Date, Date, X-Amz-Content-Sha256)
   sent twice -> IncompleteSignatureException
2. a missing Credential/SignedHeaders/Signature or date header -> IncompleteSignatureException
3. a malformed or stale date (outside +-5 minutes) -> IncompleteSignature/InvalidSignature
4. ``host``, the date header and ``x-amz-target`` not signed -> InvalidSignatureException
   (``:authority`` does not stand in for ``host``: it exists in HTTP/2 only, and AWS's
   signing guide asks HTTP/1.1 requests to sign Host)
5. an algorithm other than AWS4-HMAC-SHA256 -> IncompleteSignatureException
6. a credential scope that is not ``<key>/<date>/<region>/kms/aws4_request`` for this server's
   region and the request's date -> InvalidSignatureException
7. an unknown access key id, or any session token (we issue none) -> UnrecognizedClientException
8. the body hash, then the signature itself (``hmac.compare_digest``) -> InvalidSignatureException

A credential scoped to another region is refused (``Credential should be scoped to a valid
region``), as AWS's regional endpoint refuses it: one hsmkms endpoint is one region.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import lru_cache
from urllib.parse import quote, unquote

from hsmkms import errors
from hsmkms.identity import Identity

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
SKEW = timedelta(minutes=5)

SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
INVALID_TOKEN = "The security token included in the request is invalid."
MISSING_TOKEN = "Request is missing Authentication Token"


@dataclass(frozen=True)
class SignedRequest:
    """What verification reads of an HTTP request.

    ``headers`` maps lower-case names to their values in arrival order (latin-1 decoded, as
    bytes on the wire are); ``raw_path`` is the path as sent, still percent-encoded.
    """

    method: str
    raw_path: str
    query_string: str
    headers: Mapping[str, Sequence[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


@lru_cache(maxsize=1024)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").

    Cached: the key changes once a day per (secret, region), and four HMACs per request would
    be a quarter of the verification cost.
    """
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, TERMINATOR)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, plus empty segments removed, as botocore normalises a path."""
    if not path:
        return "/"
    out: list[str] = []
    for segment in path.split("/"):
        if not segment or segment == ".":
            continue
        if segment == "..":
            if out:
                out.pop()
        else:
            out.append(segment)
    first = "/" if path.startswith("/") else ""
    last = "/" if path.endswith("/") and out else ""
    return first + "/".join(out) + last


def canonical_uri(raw_path: str) -> str:
    return quote(_remove_dot_segments(raw_path), safe="/~")


def canonical_query(query_string: str) -> str:
    pairs: list[tuple[str, str]] = []
    for part in query_string.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    pairs.sort()
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_headers(request: SignedRequest, signed: Sequence[str]) -> str:
    lines = []
    for name in signed:
        values = request.headers.get(name, ())
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "".join(lines)


def canonical_request(request: SignedRequest, signed: Sequence[str], payload_hash: str) -> str:
    return "\n".join(
        (
            request.method.upper(),
            canonical_uri(request.raw_path),
            canonical_query(request.query_string),
            canonical_headers(request, signed),
            ";".join(signed),
            payload_hash,
        )
    )


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


@dataclass(frozen=True)
class _Authorization:
    algorithm: str
    credential: str
    signed_headers: tuple[str, ...]
    signature: str


def _parse_authorization(header: str) -> tuple[str, dict[str, str]]:
    """``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`` -> its parts.

    A part given twice is refused: only one of the two could be verified."""
    algorithm, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for item in rest.replace(",", " ").split():
        name, eq, value = item.partition("=")
        if not eq:
            continue
        if name in params:
            raise errors.IncompleteSignatureException(
                f"Authorization header has more than one '{name}' parameter."
            )
        params[name] = value
    return algorithm, params


def _parse_iso_basic(text: str) -> datetime | None:
    """``20240101T001000Z`` -> an aware datetime; None if not exactly that form.

    By hand: ``datetime.strptime`` costs a tenth of a whole verification."""
    if len(text) != 16 or text[8] != "T" or text[15] != "Z":
        return None
    digits = text[:8] + text[9:15]
    if not digits.isascii() or not digits.isdigit():
        return None
    try:
        return datetime(
            int(text[0:4]), int(text[4:6]), int(text[6:8]),
            int(text[9:11]), int(text[11:13]), int(text[13:15]), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return None


def _parse_http_date(text: str) -> datetime | None:
    """An RFC 5322 date (the HTTP ``Date`` header) -> an aware datetime; None if not one.

    The sender's offset is kept: converting to UTC can leave Python's calendar (``Fri, 31 Dec
    9999 23:59:59 -1400`` is in year 10000), and aware datetimes compare without converting.
    ``-0000`` and unknown zone names mean UTC (RFC 5322 section 3.3), not the server's zone.
    """
    try:
        date = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):  # Overflow: a huge offset
        return None
    return date if date.tzinfo is not None else date.replace(tzinfo=UTC)


def _iso_basic(date: datetime) -> str:
    """``date`` in UTC as ISO 8601 basic text, four-digit years and years past 9999 too."""
    try:
        u = date.astimezone(UTC)
        shift = 0
    except OverflowError:
        # The Gregorian calendar repeats every 400 years: convert 400 years away and back.
        shift = -400 if date.year > 5000 else 400
        u = date.replace(year=date.year + shift).astimezone(UTC)
    return f"{u.year - shift:04d}{u.month:02d}{u.day:02d}T{u.hour:02d}{u.minute:02d}{u.second:02d}Z"


def _expired(date: datetime, now: datetime) -> str | None:
    """AWS's wording for a request date outside the +-5 minute window, else None."""
    if date < now - SKEW:
        return (
            f"Signature expired: {_iso_basic(date)} is now earlier than "
            f"{_iso_basic(now - SKEW)} ({_iso_basic(now)} - 5 min.)"
        )
    if date > now + SKEW:
        return (
            f"Signature not yet current: {_iso_basic(date)} is still later than "
            f"{_iso_basic(now + SKEW)} ({_iso_basic(now)} + 5 min.)"
        )
    return None


# Headers verification reads as one value. HTTP makes repeated lines one comma-joined value
# (RFC 9110 section 5.3) and SigV4 signs them joined; reading the first would verify what the
# signature does not say. Host twice is a 400 in HTTP/1.1 itself (RFC 9112 section 3.2).
SINGLE_HEADERS = ("authorization", "host", "x-amz-date", "date", "x-amz-content-sha256")


def _check_single(request: SignedRequest) -> None:
    for name in SINGLE_HEADERS:
        count = len(request.headers.get(name, ()))
        if count > 1:
            raise errors.IncompleteSignatureException(
                f"Only one '{name}' header is allowed; this request has {count}."
            )


class Verifier:
    """Verifies SigV4 ``Authorization`` headers against the identities of a credentials file."""

    def __init__(
        self,
        identities: Mapping[str, Identity],
        region: str | Iterable[str],
        service: str = "kms",
        clock: Callable[[], float] = time.time,
        *,
        target_signed: bool = True,
    ) -> None:
        """``region``: the Region a scope must name, or the set of those it may.
        ``target_signed``: X-Amz-Target must be signed (AWS JSON 1.1); the XKS proxy API has
        no such header and signs ``host;x-amz-date`` alone."""
        self.identities = dict(identities)
        self.regions = frozenset({region} if isinstance(region, str) else region)
        self.service = service
        self.clock = clock
        self.target_signed = target_signed

    def verify(self, request: SignedRequest) -> Identity:
        """The identity that signed ``request``; raises the KMSError AWS would answer."""
        return self.verify_scoped(request)[0]

    def verify_scoped(self, request: SignedRequest) -> tuple[Identity, str]:
        """The identity that signed ``request`` and the Region of its scope."""
        header = request.header("authorization")
        if not header or not header.lstrip().startswith("AWS4-"):
            raise errors.MissingAuthenticationTokenException(MISSING_TOKEN)
        _check_single(request)
        auth = self._authorization(request, header)
        amz_date, date_header = self._request_date(request)

        signed = auth.signed_headers
        if "host" not in signed:
            # AWS takes :authority in Host's stead over HTTP/2 only; this server speaks
            # HTTP/1.1, where :authority is no header and signing it covers nothing.
            raise errors.InvalidSignatureException(
                "'Host' must be a 'SignedHeader' in the AWS Authorization: HTTP/1.1 has no "
                "':authority'."
                if ":authority" in signed
                else "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
            )
        if date_header not in signed:
            shown = "X-Amz-Date" if date_header == "x-amz-date" else "Date"
            raise errors.InvalidSignatureException(
                f"'{shown}' must be a 'SignedHeader' in the AWS Authorization."
            )
        if self.target_signed and "x-amz-target" not in signed:
            raise errors.InvalidSignatureException(
                "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization."
            )
        if auth.algorithm != ALGORITHM:
            raise errors.IncompleteSignatureException(
                f"Unsupported AWS 'algorithm': '{auth.algorithm}' (only {ALGORITHM} for now). "
            )

        parts = auth.credential.rstrip("/").split("/")
        if len(parts) != 5:
            raise errors.IncompleteSignatureException(
                "Credential must have exactly 5 slash-delimited elements, "
                f"e.g. keyid/date/region/service/term, got '{auth.credential}'"
            )
        access_key_id, scope_date, scope_region, scope_service, terminator = parts
        self._check_scope(amz_date, scope_date, scope_region, scope_service, terminator)

        identity = self.identities.get(access_key_id)
        if identity is None or request.header("x-amz-security-token") is not None:
            raise errors.UnrecognizedClientException(INVALID_TOKEN)

        body_hash = hashlib.sha256(request.body).hexdigest()
        claimed = request.header("x-amz-content-sha256")
        if claimed is not None and claimed.strip().lower() != body_hash:
            raise errors.InvalidSignatureException(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
            )

        scope = f"{scope_date}/{scope_region}/{scope_service}/{terminator}"
        canonical = canonical_request(request, signed, claimed.strip() if claimed else body_hash)
        key = signing_key(identity.secret_access_key, scope_date, scope_region, scope_service)
        expected = hmac.new(
            key, string_to_sign(amz_date, scope, canonical).encode("utf-8"), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(expected.encode(), auth.signature.encode("utf-8", "replace")):
            raise errors.InvalidSignatureException(SIGNATURE_MISMATCH)
        return identity, scope_region

    # -- steps -------------------------------------------------------------------------------
    @staticmethod
    def _authorization(request: SignedRequest, header: str) -> _Authorization:
        algorithm, params = _parse_authorization(header)
        missing = "".join(
            f"Authorization header requires '{name}' parameter. "
            for name in ("Credential", "Signature", "SignedHeaders")
            if not params.get(name)
        )
        if request.header("x-amz-date") is None and request.header("date") is None:
            missing += (
                "Authorization header requires existence of either a 'X-Amz-Date' or a "
                "'Date' header. "
            )
        if missing:
            raise errors.IncompleteSignatureException(f"{missing}Authorization={header}")
        return _Authorization(
            algorithm=algorithm,
            credential=params["Credential"],
            signed_headers=tuple(h.lower() for h in params["SignedHeaders"].split(";") if h),
            signature=params["Signature"],
        )

    def _request_date(self, request: SignedRequest) -> tuple[str, str]:
        """The request's ISO 8601 basic date and which header gave it; checks the skew."""
        raw = request.header("x-amz-date")
        source = "x-amz-date"
        date: datetime | None = None
        if raw is not None:
            date = _parse_iso_basic(raw.strip())
        else:
            raw = request.header("date") or ""
            source = "date"
            date = _parse_http_date(raw)
        if date is None:
            raise errors.IncompleteSignatureException(
                f"Date must be in ISO-8601 'basic format'. Got '{raw}'. "
                "See http://en.wikipedia.org/wiki/ISO_8601"
            )
        now = datetime.fromtimestamp(int(self.clock()), UTC)
        stale = _expired(date, now)
        if stale:
            raise errors.InvalidSignatureException(stale)
        # The header as sent when it is the ISO form (it is then its own canonical text).
        text = raw.strip() if source == "x-amz-date" else _iso_basic(date)
        return text, source

    def _check_scope(
        self, amz_date: str, date: str, region: str, service: str, terminator: str
    ) -> None:
        """Every scope mismatch in one message, in AWS's order and punctuation."""
        problems = []
        if region not in self.regions:
            problems.append(f"Credential should be scoped to a valid region, not '{region}'. ")
        if service != self.service:
            problems.append(f"Credential should be scoped to correct service: '{self.service}'. ")
        if terminator != TERMINATOR:
            problems.append(
                f"Credential should be scoped with a valid terminator: '{TERMINATOR}', "
                f"not '{terminator}'. "
            )
        if date != amz_date[:8]:
            problems.append(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                f"date from HTTP: '{date}' != '{amz_date[:8]}', from '{amz_date}'."
            )
        if problems:
            raise errors.InvalidSignatureException("".join(problems))


__all__ = [
    "SignedRequest",
    "Verifier",
    "canonical_request",
    "signing_key",
    "string_to_sign",
]
