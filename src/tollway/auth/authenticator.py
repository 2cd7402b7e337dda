"""The authenticator: presented credential → :class:`Identity`, or a typed :class:`AuthError`.

Two kinds of credential: Tollway API keys, and — when issuers are configured — OAuth 2.0 bearer tokens
(JWT) in ``Authorization: Bearer``. A bearer value with a dot is a token (API keys never contain one).

The hot path is synchronous and touches no I/O when the key's record is cached, or the token was
verified before or can be verified with keys at hand (:meth:`Authenticator.try_cached`); otherwise
:meth:`Authenticator.resolve` asks the store once per digest however many requests wait for it (single
flight), within a bounded time (and the check's deadline) — or, for a token, waits for its issuer's key
set. While the key store cannot be reached, a key whose record was read within ``TOLLWAY_STALE_MAX_S``
is served from that last-known record (``LastKnown``); a key never read fails closed (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from tollway.auth import apikey
from tollway.auth.cache import KeyCache
from tollway.auth.credentials import CredentialSource
from tollway.auth.digest import KeyDigester
from tollway.auth.errors import CredentialStoreUnavailable, MalformedKey, UnknownKey
from tollway.auth.jwt.authenticator import PendingToken, TokenAuthenticator
from tollway.auth.jwt.errors import MalformedToken, TokenKeysUnavailable
from tollway.auth.jwt.token import looks_like_jwt
from tollway.auth.records import Identity, KeyRecord, identify
from tollway.auth.store import KeyStore
from tollway.clock import Clock
from tollway.lookup_cache import LastKnown, SingleFlight


class PendingLookup:
    """A well-formed key whose record must be fetched from the store."""

    __slots__ = ("digest", "header")

    def __init__(self, digest: str, header: str | None) -> None:
        self.digest = digest
        self.header = header


Pending = PendingLookup | PendingToken
"""What :meth:`Authenticator.try_cached` could not settle without I/O."""

_MAX_IDENTITIES = 100_000
TOKEN_HEADER = "authorization"  # noqa: S105 - a header name. RFC 6750 §2.1: bearer tokens travel in Authorization only


class Authenticated:
    """Who is calling, and which header carried their key (so the edge can keep it from the upstream)."""

    __slots__ = ("header", "identity")

    def __init__(self, identity: Identity, header: str | None) -> None:
        self.identity = identity
        self.header = header


class Authenticator:
    def __init__(
        self,
        store: KeyStore,
        digester: KeyDigester,
        cache: KeyCache,
        clock: Clock,
        source: CredentialSource | None = None,
        store_timeout: float = 0.1,
        tokens: TokenAuthenticator | None = None,
        last_known: LastKnown[KeyRecord] | None = None,
    ) -> None:
        """``tokens``: accept bearer JWTs from its issuers too (None: API keys only, as before).
        ``last_known``: records served while the store cannot be reached (None: fail closed at once)."""
        self._store = store
        self._digester = digester
        self._identities: dict[str, tuple[KeyRecord, Identity]] = {}
        self._cache = cache
        self._clock = clock
        self._source = source or CredentialSource()
        self._tokens = tokens
        self._lookups = SingleFlight(
            store.fetch,
            cache,
            store_timeout,
            lambda: CredentialStoreUnavailable("the key store did not answer in time"),
            last_known=last_known,
            is_outage=_store_unreachable,
        )
        self._last_known = last_known

    @property
    def cache(self) -> KeyCache:
        return self._cache

    @property
    def tokens(self) -> TokenAuthenticator | None:
        return self._tokens

    @property
    def source(self) -> CredentialSource:
        """Where credentials are read (the edge keeps every one of those places from the upstream)."""
        return self._source

    @property
    def stale_answers(self) -> int:
        """Key lookups answered with a last-known record because the store could not be reached."""
        return self._lookups.stale_answers

    def evict(self, digest: str) -> None:
        """A change of this key was announced: forget its cached and its last-known record."""
        self._cache.evict(digest)
        if self._last_known is not None:
            self._last_known.forget(digest)

    def try_cached(self, headers: Mapping[str, str], path: str = "") -> Authenticated | Pending:
        """The caller from the cache, or what to look up. Raises :class:`AuthError` for a bad credential."""
        presented = self._source.extract(headers, path)
        text = presented.text
        tokens = self._tokens
        if tokens is not None and looks_like_jwt(text):
            if presented.header != TOKEN_HEADER:
                raise MalformedToken("Send OAuth bearer tokens as 'Authorization: Bearer <token>'.")
            outcome = tokens.try_cached(text, presented.header)
            if isinstance(outcome, PendingToken):
                return outcome
            return Authenticated(outcome, presented.header)
        if not apikey.well_formed_length(text) or not text.isascii():
            raise MalformedKey()
        digest = self._digester.digest(text)
        # Only well-formed keys' digests are ever cached, so a hit needs no format or checksum check.
        hit = self._cache.get(digest)
        if hit is None:
            apikey.parse(text)
            return PendingLookup(digest, presented.header)
        return Authenticated(self._identify(hit.record), presented.header)

    async def resolve(self, pending: Pending, deadline: float | None = None) -> Authenticated:
        """``deadline`` (event-loop time): the check's; a key lookup still unanswered then is an outage, and
        a token's wait for its issuer's key set ends then too (``TokenKeysUnavailable``)."""
        if isinstance(pending, PendingToken):
            assert self._tokens is not None
            if deadline is None:
                return Authenticated(await self._tokens.resolve(pending), pending.header)
            try:  # the wait for the issuer's key set (shared, it goes on) ends with the check's deadline
                async with asyncio.timeout_at(deadline):
                    identity = await self._tokens.resolve(pending)
            except TimeoutError as exc:
                raise TokenKeysUnavailable() from exc
            return Authenticated(identity, pending.header)
        record = await self._lookups.lookup(pending.digest, deadline)
        return Authenticated(self._identify(record), pending.header)

    async def authenticate(self, headers: Mapping[str, str], path: str = "") -> Identity:
        outcome = self.try_cached(headers, path)
        if not isinstance(outcome, Authenticated):
            outcome = await self.resolve(outcome)
        return outcome.identity

    def _identify(self, record: KeyRecord | None) -> Identity:
        if record is None:
            raise UnknownKey()
        if record.expires_at is not None:
            return identify(record, self._clock.now())
        # A key without expiry stands for the same caller for as long as this record is the cached one.
        known = self._identities.get(record.key_id)
        if known is not None and known[0] is record:
            return known[1]
        identity = identify(record, self._clock.now())
        if len(self._identities) >= _MAX_IDENTITIES:
            self._identities.clear()
        self._identities[record.key_id] = (record, identity)
        return identity


def _store_unreachable(exc: Exception) -> bool:
    return isinstance(exc, CredentialStoreUnavailable)
