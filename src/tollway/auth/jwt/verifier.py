"""Verify a parsed token against its issuer: signature, then claims, against an injected instant. Pure.

Order: the algorithm must be one the issuer allows; the signature must verify with one of the given keys
(asymmetric) or the issuer's shared secret (HMAC); then ``iss``, ``exp`` (required), ``nbf``, ``iat``
(each with the issuer's leeway), ``aud`` (one of the accepted audiences), and the customer claim. The
result names the customer, the subject for the key-id slot and the token's scopes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tollway.auth.jwt.errors import (
    DisallowedAlgorithm,
    ExpiredToken,
    InvalidClaim,
    InvalidSignature,
    MissingClaim,
    MissingCustomerClaim,
    TokenNotYetValid,
    UntrustedIssuer,
    WrongAudience,
)
from tollway.auth.jwt.issuer import Issuer
from tollway.auth.jwt.keys import HMAC_ALGORITHMS, VerificationKey, verify_asymmetric, verify_hmac
from tollway.auth.jwt.token import UnverifiedToken
from tollway.auth.records import IDENTIFIER_PATTERN

SUBJECT_PREFIX = "jwt"
_IDENTIFIER_HINT = "1-128 letters, digits and . _ : @ -, starting with a letter or digit"


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid token says. ``subject`` (``jwt:<issuer name>:<sub>``) fills the key-id slot;
    ``expires_at`` is ``exp`` plus the leeway (epoch seconds): the token is good until then."""

    issuer: str
    customer_id: str
    subject: str
    scopes: frozenset[str]
    expires_at: float


def check_signature(token: UnverifiedToken, issuer: Issuer, keys: Sequence[VerificationKey]) -> None:
    """Raises :class:`DisallowedAlgorithm` or :class:`InvalidSignature`. ``keys`` are the issuer's
    candidates for the token's ``kid`` (ignored for HMAC, which only ever uses the shared secret)."""
    algorithm = token.algorithm
    if algorithm not in issuer.algorithms:
        raise DisallowedAlgorithm()
    if algorithm in HMAC_ALGORITHMS:
        secret = issuer.hmac_secret
        if secret is None or not verify_hmac(algorithm, secret, token.signing_input, token.signature):
            raise InvalidSignature()
        return
    for key in keys:
        if key.verifies(algorithm) and verify_asymmetric(algorithm, key.key, token.signing_input, token.signature):
            return
    raise InvalidSignature()


def check_claims(claims: dict[str, Any], issuer: Issuer, now: float) -> VerifiedToken:
    """The verified token's meaning at ``now`` (epoch seconds), or the :class:`TokenError` that refuses it."""
    if claims.get("iss") != issuer.issuer:
        raise UntrustedIssuer()
    leeway = issuer.leeway_s
    exp = _instant(claims, "exp", required=True)
    assert exp is not None
    if now >= exp + leeway:
        raise ExpiredToken()
    nbf = _instant(claims, "nbf")
    if nbf is not None and now + leeway < nbf:
        raise TokenNotYetValid("The token is not valid yet: its nbf lies in the future.")
    iat = _instant(claims, "iat")
    if iat is not None and now + leeway < iat:
        raise TokenNotYetValid("The token claims to be issued in the future (iat).")
    _check_audience(claims.get("aud"), issuer)
    customer = claims.get(issuer.customer_claim)
    if customer is None or customer == "":
        raise MissingCustomerClaim(issuer.customer_claim)
    if not isinstance(customer, str):
        raise InvalidClaim(issuer.customer_claim, "a string")
    customer_id = issuer.customer_prefix + customer
    if not IDENTIFIER_PATTERN.fullmatch(customer_id):
        raise InvalidClaim(issuer.customer_claim, f"a customer id of {_IDENTIFIER_HINT}")
    sub = claims.get("sub")
    if sub is not None and not isinstance(sub, str):
        raise InvalidClaim("sub", "a string")
    return VerifiedToken(
        issuer=issuer.name,
        customer_id=customer_id,
        subject=subject_id(issuer.name, sub or customer),
        scopes=_scopes(claims, issuer),
        expires_at=exp + leeway,
    )


def subject_id(issuer_name: str, subject: str) -> str:
    """``jwt:<issuer>:<subject>`` when that is a valid identifier, else the subject's digest in its
    place (``jwt:<issuer>:h.<hex>``): the key-id slot travels in headers and usage rows."""
    candidate = f"{SUBJECT_PREFIX}:{issuer_name}:{subject}"
    if IDENTIFIER_PATTERN.fullmatch(candidate):
        return candidate
    digest = hashlib.blake2b(subject.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    return f"{SUBJECT_PREFIX}:{issuer_name}:h.{digest}"


def _instant(claims: dict[str, Any], name: str, *, required: bool = False) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise MissingClaim(name)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidClaim(name, "a NumericDate (seconds since the epoch)")
    return float(value)


def _check_audience(aud: object, issuer: Issuer) -> None:
    if aud is None:
        raise WrongAudience("The token names no audience (aud); this API requires one it accepts.")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidClaim("aud", "a string or a list of strings")
    if issuer.audiences.isdisjoint(audiences):
        raise WrongAudience()


def _scopes(claims: dict[str, Any], issuer: Issuer) -> frozenset[str]:
    """The first scope claim present: a space-separated string (``scope``, RFC 8693) or a list (``scp``)."""
    for name in issuer.scope_claims:
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return frozenset(value)
        raise InvalidClaim(name, "a space-separated string or a list of strings")
    return frozenset()
