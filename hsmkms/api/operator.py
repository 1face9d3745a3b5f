"""The operator endpoints: who may see what of ``GET /health`` and ``GET /metrics``.

    GET|HEAD /health   anyone: {"ok": true} 200 or {"ok": false} 503, nothing more (liveness
                       and readiness for load balancers and orchestrators)
                       with the operator token: the service's full health report
    GET /metrics       with the operator token only: Prometheus text

The full report names the token's manufacturer, model and faults, and the metrics count every
tenant's operations and errors: both are the operators', not the tenants' (issue 13, item 12).
The token is an RFC 6750 bearer token (``Authorization: Bearer <token>``) read once from the
0600 file of the ``operator_token_file`` setting; without the setting neither is served. Every
refusal is ``401`` with a ``WWW-Authenticate`` challenge (RFC 9110 section 11.6.1), and says
what is needed, never what was sent.
"""

from __future__ import annotations

import hmac
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

JSON = b"application/json"
PROMETHEUS = b"text/plain; version=0.0.4"
REALM = 'Bearer realm="hsmkms operator"'
HEALTH_REPORT = "The full report of GET /health"
METRICS = "GET /metrics"


@dataclass(frozen=True)
class Answer:
    """An HTTP answer decided here: status, body, its content type, extra headers."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


class Metrics:
    """Per-process counters, kept on the event loop thread (so no lock)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)

    def observe(self, operation: str, code: str, seconds: float) -> None:
        self.requests[(operation, code)] += 1
        self.seconds[operation] += seconds

    def render(self, pool_stock: Mapping[str, int] | None = None) -> bytes:
        lines = [
            "# HELP hsmkms_requests_total KMS requests answered, by operation and error code.",
            "# TYPE hsmkms_requests_total counter",
        ]
        for (op, code), n in sorted(self.requests.items()):
            lines.append(f'hsmkms_requests_total{{operation="{op}",code="{code}"}} {n}')
        lines += [
            "# HELP hsmkms_request_seconds_total Seconds spent answering, by operation.",
            "# TYPE hsmkms_request_seconds_total counter",
        ]
        for op, s in sorted(self.seconds.items()):
            lines.append(f'hsmkms_request_seconds_total{{operation="{op}"}} {s:.6f}')
        if pool_stock:
            lines += [
                "# HELP hsmkms_keypair_pool_stock Pre-generated data key pairs in stock in "
                "this process, by spec.",
                "# TYPE hsmkms_keypair_pool_stock gauge",
            ]
            for spec, n in sorted(pool_stock.items()):
                lines.append(f'hsmkms_keypair_pool_stock{{spec="{spec}"}} {n}')
        return ("\n".join(lines) + "\n").encode()


class Operator:
    """Decides, from a request's ``Authorization`` lines, whether it is the operator's."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode("ascii") if token else None

    def refusal(self, authorization: Sequence[str] | None, what: str) -> Answer | None:
        """None when ``authorization`` carries the operator token; else the 401 to answer."""
        if self._token is None:
            return _unauthorized(f"{what} is not served: no operator_token_file is configured.")
        needs = f"{what} needs 'Authorization: Bearer <token>' with the token of the " + (
            "operator_token_file setting."
        )
        if not authorization:
            return _unauthorized(needs)
        if len(authorization) == 1:
            scheme, _, credentials = authorization[0].strip().partition(" ")
            presented = credentials.strip().encode("latin-1")
            # compare_digest: the answer's timing says nothing of how much of a guess was right.
            if scheme.lower() == "bearer" and hmac.compare_digest(presented, self._token):
                return None
        return _unauthorized(
            f"The Authorization header is not the operator token: {needs}", "invalid_token"
        )

    def health(self, report: Mapping[str, Any], authorization: Sequence[str] | None) -> Answer:
        """``report`` in full to the operator; ``{"ok": ...}`` alone to a request with no
        Authorization (a probe); a 401 to any other."""
        status = 200 if report.get("ok") else 503
        if not authorization:
            return Answer(status, _dumps({"ok": status == 200}))
        refused = self.refusal(authorization, HEALTH_REPORT)
        return refused or Answer(status, _dumps(report))


def _unauthorized(message: str, error: str | None = None) -> Answer:
    challenge = REALM + (f', error="{error}"' if error else "")
    return Answer(
        401,
        _dumps({"error": "Unauthorized", "message": message}),
        headers=((b"www-authenticate", challenge.encode()),),
    )


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode("utf-8")
