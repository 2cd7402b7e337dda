"""The authenticator: presented credential → :class:`Identity`, or a typed :class:`AuthError`.

The hot path is synchronous and touches no I/O when the key's record is cached
(:meth:`Authenticator.try_cached`); otherwise :meth:`Authenticator.resolve` asks the store once per
digest however many requests wait for it (single flight), within a bounded time.
"""

from __future__ import annotations

from collections.abc import Mapping

from tollway.auth import apikey
from tollway.auth.cache import KeyCache
from tollway.auth.credentials import CredentialSource
from tollway.auth.digest import KeyDigester
from tollway.auth.errors import CredentialStoreUnavailable, MalformedKey, UnknownKey
from tollway.auth.records import Identity, KeyRecord, identify
from tollway.auth.store import KeyStore
from tollway.clock import Clock
from tollway.lookup_cache import SingleFlight


class PendingLookup:
    """A well-formed key whose record must be fetched from the store."""

    __slots__ = ("digest", "header")

    def __init__(self, digest: str, header: str | None) -> None:
        self.digest = digest
        self.header = header


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
    ) -> None:
        self._store = store
        self._digester = digester
        self._cache = cache
        self._clock = clock
        self._source = source or CredentialSource()
        self._lookups = SingleFlight(
            store.fetch,
            cache,
            store_timeout,
            lambda: CredentialStoreUnavailable("the key store did not answer in time"),
        )

    @property
    def cache(self) -> KeyCache:
        return self._cache

    def try_cached(self, headers: Mapping[str, str], path: str = "") -> Authenticated | PendingLookup:
        """The caller from the cache, or what to look up. Raises :class:`AuthError` for a bad credential."""
        presented = self._source.extract(headers, path)
        text = presented.text
        if not apikey.well_formed_length(text) or not text.isascii():
            raise MalformedKey()
        digest = self._digester.digest(text)
        # Only well-formed keys' digests are ever cached, so a hit needs no format or checksum check.
        hit = self._cache.get(digest)
        if hit is None:
            apikey.parse(text)
            return PendingLookup(digest, presented.header)
        return Authenticated(self._identify(hit.record), presented.header)

    async def resolve(self, pending: PendingLookup) -> Authenticated:
        record = await self._lookups.lookup(pending.digest)
        return Authenticated(self._identify(record), pending.header)

    async def authenticate(self, headers: Mapping[str, str], path: str = "") -> Identity:
        outcome = self.try_cached(headers, path)
        if isinstance(outcome, PendingLookup):
            outcome = await self.resolve(outcome)
        return outcome.identity

    def _identify(self, record: KeyRecord | None) -> Identity:
        if record is None:
            raise UnknownKey()
        return identify(record, self._clock.now())
