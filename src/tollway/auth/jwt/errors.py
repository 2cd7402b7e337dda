"""Typed bearer-token failures. No HTTP status here: the edge (extproc/problems.py) maps them.

Every ``detail`` says what is wrong with the token without repeating any part of it: not the token,
not a claim's value, not a key id (all of them are attacker-controlled text).
"""

from __future__ import annotations

from collections.abc import Iterable

from tollway.auth.errors import AuthError, CredentialStoreUnavailable
from tollway.plans.errors import CatalogIssue


class TokenError(AuthError):
    """A bearer token was presented and refused (401)."""

    reason = "invalid-token"
    detail = "The bearer token is not valid."


class TokenTooLarge(TokenError):
    reason = "token-too-large"
    detail = "The bearer token is larger than any token this API accepts."


class MalformedToken(TokenError):
    reason = "malformed-token"
    detail = "The bearer token is not a well-formed JWT (three base64url parts: header, claims, signature)."


class DisallowedAlgorithm(TokenError):
    reason = "token-algorithm-not-allowed"
    detail = "The token's signing algorithm is not accepted for its issuer."


class UntrustedIssuer(TokenError):
    reason = "untrusted-token-issuer"
    detail = "The token's issuer (iss) is not one this API trusts."


class UnknownSigningKey(TokenError):
    reason = "unknown-token-key"
    detail = "The token was signed with a key (kid) its issuer does not publish."


class InvalidSignature(TokenError):
    reason = "invalid-token-signature"
    detail = "The token's signature does not verify with its issuer's keys."


class WrongAudience(TokenError):
    reason = "invalid-token-audience"
    detail = "The token is not meant for this API: its audience (aud) is not accepted."


class ExpiredToken(TokenError):
    reason = "expired-token"
    detail = "The token has expired (exp)."


class TokenNotYetValid(TokenError):
    reason = "token-not-yet-valid"
    detail = "The token is not valid yet (nbf or iat lies in the future)."


class MissingClaim(TokenError):
    reason = "missing-token-claim"

    def __init__(self, claim: str) -> None:
        super().__init__(f"The token lacks the '{claim}' claim, which this API requires.")
        self.claim = claim


class InvalidClaim(TokenError):
    reason = "invalid-token-claim"

    def __init__(self, claim: str, expected: str) -> None:
        super().__init__(f"The token's '{claim}' claim is not valid: expected {expected}.")
        self.claim = claim


class MissingCustomerClaim(MissingClaim):
    """The issuer's customer claim (``sub``, ``client_id``, ``azp`` or a custom one) is absent."""

    reason = "missing-customer-claim"


class TokenKeysUnavailable(CredentialStoreUnavailable):
    """No signing key of the token's issuer has ever been fetched (its JWKS endpoint is down or slow).
    Not the caller's fault: the edge answers 503."""

    reason = "token-keys-unavailable"
    detail = "The token issuer's signing keys could not be fetched. Retry shortly."


class IssuerConfigError(ValueError):
    """The issuers file could not be loaded. ``issues`` lists every problem found, with file and line."""

    def __init__(self, issues: Iterable[CatalogIssue]) -> None:
        self.issues: list[CatalogIssue] = sorted(issues, key=lambda i: (i.file, i.line, i.column))
        listed = "\n".join(str(issue) for issue in self.issues)
        super().__init__(f"invalid issuers file ({len(self.issues)} problem(s)):\n{listed}")
