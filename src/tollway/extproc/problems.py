"""RFC 9457 problem details, and the mapping from domain errors to HTTP refusals (the edge's job)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from tollway.auth.errors import AuthError, MissingCredential
from tollway.extproc.check import Deny, Headers

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
# The problem type registered by draft-ietf-httpapi-ratelimit-headers: clients can recognise it anywhere.
QUOTA_EXCEEDED_TYPE: Final = "https://iana.org/assignments/http-problem-types#quota-exceeded"
USAGE_LINK: Final = "/tollway/v1/usage"
"""Where a caller reads its usage and balance (the usage endpoint, served through Envoy)."""

FORBIDDEN_TITLES: Final = {
    "no-subscription": "No subscription",
    "plan-unavailable": "Plan unavailable",
    "route-not-granted": "Route not granted",
    "feature-not-entitled": "Feature not in plan",
    "insufficient-scope": "Insufficient scope",
}

AUTH_TITLES: Final = {
    "missing-credentials": "API key required",
    "malformed-api-key": "Malformed API key",
    "invalid-api-key": "Invalid API key",
    "revoked-api-key": "Revoked API key",
    "expired-api-key": "Expired API key",
    "unauthenticated": "Unauthenticated",
    # OAuth 2.0 bearer tokens (JWT)
    "invalid-token": "Invalid token",
    "token-too-large": "Token too large",
    "malformed-token": "Malformed token",
    "token-algorithm-not-allowed": "Token algorithm not allowed",
    "untrusted-token-issuer": "Untrusted token issuer",
    "unknown-token-key": "Unknown token signing key",
    "invalid-token-signature": "Invalid token signature",
    "invalid-token-audience": "Token audience not accepted",
    "expired-token": "Expired token",
    "token-not-yet-valid": "Token not yet valid",
    "missing-token-claim": "Missing token claim",
    "invalid-token-claim": "Invalid token claim",
    "missing-customer-claim": "Token names no customer",
}


@dataclass(frozen=True, slots=True)
class Problem:
    type: str
    title: str
    status: int
    detail: str
    instance: str = ""
    extensions: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc: dict[str, object] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.instance:
            doc["instance"] = self.instance
        doc.update(self.extensions)
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()


class Refusals:
    """Builds :class:`Deny` verdicts. ``type_base`` prefixes each problem type slug."""

    def __init__(self, type_base: str = "https://tollway.dev/problems/", realm: str = "tollway") -> None:
        self._base = type_base
        self._realm = realm

    def problem(self, status: int, slug: str, title: str, detail: str, request_id: str) -> Problem:
        return Problem(type=self._base + slug, title=title, status=status, detail=detail, instance=request_id)

    def deny(self, problem: Problem, *extra_headers: tuple[str, str]) -> Deny:
        return Deny(
            status=problem.status,
            body=problem.to_json(),
            headers=(("content-type", PROBLEM_CONTENT_TYPE), *extra_headers),
        )

    def unauthenticated(self, error: AuthError, request_id: str) -> Deny:
        title = AUTH_TITLES.get(error.reason, AUTH_TITLES["unauthenticated"])
        if isinstance(error, MissingCredential):
            challenge = f'Bearer realm="{self._realm}"'
        else:  # RFC 6750 §3: invalid_token covers malformed, unknown, revoked and expired credentials
            challenge = f'Bearer realm="{self._realm}", error="invalid_token", error_description="{title}"'
        problem = self.problem(401, error.reason, title, error.detail, request_id)
        return self.deny(problem, ("www-authenticate", challenge))

    def unavailable(self, detail: str, request_id: str, slug: str = "authorization-unavailable") -> Deny:
        # Same type and title as the problem Envoy's local reply gives when the check itself fails
        # (envoy/*.yaml), so clients handle one "retry later" problem whichever way it arose.
        problem = self.problem(503, slug, "Authorization temporarily unavailable", detail, request_id)
        return self.deny(problem, ("retry-after", "1"))

    def forbidden(self, reason: str, detail: str, request_id: str) -> Deny:
        title = FORBIDDEN_TITLES.get(reason, "Forbidden")
        return self.deny(self.problem(403, reason, title, detail, request_id))

    def insufficient_scope(self, scopes: Sequence[str], detail: str, request_id: str) -> Deny:
        """403 for a bearer token without a scope its feature requires (RFC 6750 §3.1 insufficient_scope)."""
        problem = self.problem(403, "insufficient-scope", FORBIDDEN_TITLES["insufficient-scope"], detail, request_id)
        problem.extensions["required-scopes"] = list(scopes)
        challenge = f'Bearer realm="{self._realm}", error="insufficient_scope", scope="{" ".join(scopes)}"'
        return self.deny(problem, ("www-authenticate", challenge))

    def quota_exceeded(self, violated: Sequence[str], retry_after_s: int, ratelimit: Headers, request_id: str) -> Deny:
        names = ", ".join(violated)
        problem = Problem(
            type=QUOTA_EXCEEDED_TYPE,
            title="Quota exceeded",
            status=429,
            detail=f"The request would exceed {names}. Retry after {retry_after_s} s.",
            instance=request_id,
            extensions={"violated-policies": list(violated)},
        )
        return self.deny(problem, ("retry-after", str(max(retry_after_s, 1))), *ratelimit)

    def payment_required(
        self,
        reason: str,
        unit: str,
        price: Decimal,
        available: Decimal | None,
        spent: Decimal | None,
        cap: Decimal | None,
        request_id: str,
    ) -> Deny:
        """402 for a price that does not fit: the prepaid balance (``insufficient-credits``: ``available``)
        or the period's spend cap (``spend-cap-reached``: ``spent`` of ``cap``). Amounts are decimal strings
        in ``unit``; ``usage`` links to the caller's usage endpoint, where the balance is shown."""
        if reason == "insufficient-credits":
            title = "Insufficient credits"
            detail = f"This request costs {price} {unit}; the balance is {available} {unit}. Top up to continue."
            extensions: dict[str, object] = {"balance": str(available), "price": str(price), "unit": unit}
        else:
            title = "Spend cap reached"
            detail = (
                f"This request costs {price} {unit}, which would take this period's spend ({spent} {unit}) past "
                f"its cap of {cap} {unit}."
            )
            extensions = {"spent": str(spent), "cap": str(cap), "price": str(price), "unit": unit}
        extensions["usage"] = USAGE_LINK
        problem = self.problem(402, reason, title, detail, request_id)
        problem.extensions.update(extensions)
        return self.deny(problem)

    def payment_overdue(self, detail: str, request_id: str) -> Deny:
        """402 for a customer with an overdue invoice whose plan refuses them meanwhile (``overdue: {refuse:
        true}``, docs/payments.md#overdue-customers-at-the-gateway)."""
        return self.deny(self.problem(402, "payment-overdue", "Payment overdue", detail, request_id))

    def internal_error(self, request_id: str) -> Deny:
        problem = self.problem(500, "internal-error", "Internal error", "The request could not be checked.", request_id)
        return self.deny(problem)

    def bad_request(self, status: int, slug: str, title: str, detail: str, request_id: str = "") -> Deny:
        return self.deny(self.problem(status, slug, title, detail, request_id))
