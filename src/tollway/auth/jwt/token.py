"""A bearer value → its JWT parts, before any signature check. Pure.

Only the JWS compact serialization (``header.claims.signature``) is read; the size is checked before
anything else, base64url is decoded strictly (no padding, no stray characters), both JSON parts must be
objects without duplicate members (two parsers must never read two different claims out of one token).
Header members that name keys or where to fetch them (``jku``, ``x5u``, ``jwk``, ``x5c``) are never
read: keys only ever come from the issuer's configuration.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from tollway.auth.jwt.errors import DisallowedAlgorithm, MalformedToken, TokenError, TokenTooLarge
from tollway.auth.jwt.keys import SUPPORTED_ALGORITHMS

DEFAULT_MAX_TOKEN_BYTES: Final = 8192
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


def looks_like_jwt(text: str) -> bool:
    """Whether a bearer value is meant as a token rather than an API key: Tollway keys never contain a
    dot; a JWS has two. (Whether it is *well formed* is :func:`parse_token`'s business.)"""
    return "." in text


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """A token's decoded parts, not yet trusted."""

    algorithm: str
    kid: str | None
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    def __repr__(self) -> str:
        return f"UnverifiedToken(algorithm={self.algorithm!r}, claims=<{len(self.claims)} hidden>)"


def parse_token(text: str, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> UnverifiedToken:
    """The token's parts. Raises :class:`TokenError` (too large, malformed, ``alg`` not a signature)."""
    if len(text) > max_bytes:
        raise TokenTooLarge(f"The bearer token is larger than {max_bytes} bytes, the most this API accepts.")
    if not text.isascii():
        raise MalformedToken()
    parts = text.split(".")
    if len(parts) != 3:
        if len(parts) == 5:
            raise MalformedToken("The bearer token is an encrypted JWT (JWE); only signed tokens (JWS) are accepted.")
        raise MalformedToken()
    header_part, claims_part, signature_part = parts
    header = _json_object(_decode(header_part, "header"), "header")
    claims = _json_object(_decode(claims_part, "claims"), "claims")
    signature = _decode(signature_part, "signature")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or not algorithm:
        raise MalformedToken("The token's header names no signing algorithm (alg).")
    if algorithm.lower() == "none":
        raise DisallowedAlgorithm("Unsigned tokens (alg none) are never accepted.")
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise DisallowedAlgorithm("The token's signing algorithm is not supported.")
    if "crit" in header:
        raise TokenError("The token requires header extensions (crit) that this API does not understand.")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise MalformedToken("The token's key id (kid) is not a string.")
    if not signature:
        raise MalformedToken("The bearer token has no signature.")
    signing_input = f"{header_part}.{claims_part}".encode("ascii")
    return UnverifiedToken(algorithm, kid, claims, signing_input, signature)


def _decode(part: str, what: str) -> bytes:
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise MalformedToken(f"The token's {what} is not base64url (RFC 4648 §5, without padding).")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise MalformedToken(f"The token's {what} is not base64url (RFC 4648 §5, without padding).") from exc


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedToken(f"The token's {what} is not a JSON object.") from exc
    if not isinstance(parsed, dict):
        raise MalformedToken(f"The token's {what} is not a JSON object.")
    return parsed


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's json would accept them


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member")
    return result
