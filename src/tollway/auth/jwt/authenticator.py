"""Bearer JWT → :class:`Identity`, or a typed :class:`TokenError`.

:meth:`TokenAuthenticator.try_cached` is synchronous and does no I/O: a token verified before is found by
its digest; a new one is parsed and verified on the spot when its issuer's keys are at hand (static keys,
or a JWKS fetched earlier). Only when keys are missing — the issuer's JWKS never fetched yet, or a
``kid`` the set lacks while a refetch is allowed — does it return a :class:`PendingToken`, which
:meth:`TokenAuthenticator.resolve` completes after (at most ``key_wait_s`` of) the issuer's single fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from typing import Final

from tollway.auth.jwt.errors import (
    MalformedToken,
    TokenKeysUnavailable,
    TokenTooLarge,
    UnknownSigningKey,
    UntrustedIssuer,
)
from tollway.auth.jwt.issuer import Issuer
from tollway.auth.jwt.jwks import HttpJwksFetcher, JwksCache, JwksFetcher
from tollway.auth.jwt.keys import HMAC_ALGORITHMS, KeySet, VerificationKey
from tollway.auth.jwt.token import DEFAULT_MAX_TOKEN_BYTES, UnverifiedToken, parse_token
from tollway.auth.jwt.token_cache import TokenCache, token_digest
from tollway.auth.jwt.verifier import check_claims, check_signature
from tollway.auth.records import Identity
from tollway.clock import Clock
from tollway.supervision import supervise

TOKEN_ENV: Final = "jwt"  # noqa: S105 - Identity.env of token callers (API keys: live | test)


class TrustedIssuer:
    """An issuer and where its public keys come from: static keys, or its JWKS (``jwks``)."""

    __slots__ = ("issuer", "jwks")

    def __init__(self, issuer: Issuer, jwks: JwksCache | None = None) -> None:
        if issuer.jwks is not None and jwks is None:
            raise ValueError(f"issuer {issuer.name} publishes a JWKS: give it a JwksCache")
        self.issuer = issuer
        self.jwks = jwks

    def keys(self) -> KeySet | None:
        if self.jwks is not None:
            return self.jwks.current()
        return self.issuer.static_keys or KeySet()


class PendingToken:
    """A well-formed token whose issuer's keys must be fetched first."""

    __slots__ = ("digest", "header", "token", "trusted")

    def __init__(self, digest: bytes, token: UnverifiedToken, trusted: TrustedIssuer, header: str | None) -> None:
        self.digest = digest
        self.token = token
        self.trusted = trusted
        self.header = header


class TokenAuthenticator:
    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        cache: TokenCache[Identity],
        clock: Clock,
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
        key_wait_s: float = 0.15,
    ) -> None:
        self._issuers: dict[str, TrustedIssuer] = {}
        for trusted in issuers:
            if trusted.issuer.issuer in self._issuers:
                raise ValueError(f"two issuers with iss {trusted.issuer.issuer!r}")
            self._issuers[trusted.issuer.issuer] = trusted
        self._cache = cache
        self._clock = clock
        self._max_bytes = max_token_bytes
        self._key_wait_s = key_wait_s
        self._owned_fetcher: HttpJwksFetcher | None = None  # closed by run() when it ends

    @classmethod
    def build(
        cls,
        issuers: Iterable[Issuer],
        clock: Clock,
        fetcher: JwksFetcher | None = None,
        *,
        cache_max_entries: int = 100_000,
        cache_max_ttl_s: float = 300.0,
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
        key_wait_s: float = 0.15,
    ) -> TokenAuthenticator:
        """Each JWKS issuer gets a :class:`JwksCache` on ``fetcher`` (default: HTTP with httpx, closed when
        :meth:`run` ends)."""
        issuers = tuple(issuers)
        owned = HttpJwksFetcher() if fetcher is None and any(i.jwks is not None for i in issuers) else None
        fetcher = fetcher or owned
        trusted = [
            TrustedIssuer(i, JwksCache(i.name, i.jwks, fetcher, clock.monotonic) if i.jwks and fetcher else None)
            for i in issuers
        ]
        cache: TokenCache[Identity] = TokenCache(clock.monotonic, cache_max_entries, cache_max_ttl_s)
        built = cls(trusted, cache, clock, max_token_bytes, key_wait_s)
        built._owned_fetcher = owned
        return built

    @property
    def issuers(self) -> Mapping[str, TrustedIssuer]:
        """By ``iss``."""
        return self._issuers

    @property
    def cache(self) -> TokenCache[Identity]:
        return self._cache

    def try_cached(self, text: str, header: str | None) -> Identity | PendingToken:
        """The caller, or what to fetch first. Raises :class:`TokenError` for a token refused on its face."""
        if len(text) > self._max_bytes:
            raise TokenTooLarge(f"The bearer token is larger than {self._max_bytes} bytes, the most this API accepts.")
        if not text.isascii():  # a JWS is base64url and dots: refused before it is hashed or parsed
            raise MalformedToken()
        digest = token_digest(text)
        hit = self._cache.get(digest)
        if hit is not None:
            return hit
        token = parse_token(text, self._max_bytes)
        iss = token.claims.get("iss")
        trusted = self._issuers.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            raise UntrustedIssuer()
        return self._verify(digest, token, trusted, header, may_fetch=True)

    async def resolve(self, pending: PendingToken) -> Identity:
        trusted = pending.trusted
        if trusted.jwks is not None:
            await trusted.jwks.refresh(self._key_wait_s)
        outcome = self._verify(pending.digest, pending.token, trusted, pending.header, may_fetch=False)
        assert isinstance(outcome, Identity)
        return outcome

    def _verify(
        self, digest: bytes, token: UnverifiedToken, trusted: TrustedIssuer, header: str | None, *, may_fetch: bool
    ) -> Identity | PendingToken:
        issuer = trusted.issuer
        keys: tuple[VerificationKey, ...] = ()
        if token.algorithm in issuer.algorithms and token.algorithm not in HMAC_ALGORITHMS:
            key_set = trusted.keys()
            jwks = trusted.jwks
            if key_set is None or not key_set.knows(token.kid):
                waiting = key_set is None or (jwks is not None and (jwks.fetching or jwks.may_refetch()))
                if waiting and may_fetch:
                    return PendingToken(digest, token, trusted, header)  # resolve() joins or starts the fetch
                if waiting:
                    raise TokenKeysUnavailable()  # only from resolve(): the async path maps it to 503
                raise UnknownSigningKey()
            keys = key_set.candidates(token.kid, token.algorithm)
        check_signature(token, issuer, keys)
        now = self._clock.now().timestamp()
        verified = check_claims(token.claims, issuer, now)
        identity = Identity(verified.customer_id, verified.subject, TOKEN_ENV, verified.scopes)
        self._cache.put(digest, identity, verified.expires_at - now)
        return identity

    async def run(self) -> None:
        """Keep every issuer's JWKS fresh in the background until cancelled; then close the HTTP client.
        Each issuer's refresher is supervised: one that fails is logged and restarted."""
        caches = [t.jwks for t in self._issuers.values() if t.jwks is not None]
        try:
            await asyncio.gather(*(supervise(f"JWKS refresh of issuer {c.issuer_name}", c.run) for c in caches))
        finally:
            if self._owned_fetcher is not None:
                with contextlib.suppress(Exception):
                    await self._owned_fetcher.aclose()

    def describe(self) -> dict[str, object]:
        return {
            t.issuer.name: (t.jwks.describe() if t.jwks is not None else {"static_keys": len(t.keys() or ())})
            for t in self._issuers.values()
        }
