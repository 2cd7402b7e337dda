"""The authenticator: presented credential → :class:`Identity`, or a typed :class:`AuthError`.

The hot path is synchronous and touches no I/O when the key's record is cached
(:meth:`Authenticator.try_cached`); otherwise :meth:`Authenticator.resolve` asks the store once per
digest however many requests wait for it (single flight), within a bounded time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from tollway.auth import apikey
from tollway.auth.cache import KeyCache
from tollway.auth.credentials import CredentialSource
from tollway.auth.digest import KeyDigester
from tollway.auth.errors import CredentialStoreUnavailable, MalformedKey, UnknownKey
from tollway.auth.records import Identity, KeyRecord, identify
from tollway.auth.store import KeyStore
from tollway.clock import Clock


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
        self._store_timeout = store_timeout
        self._inflight: dict[str, asyncio.Task[KeyRecord | None]] = {}

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
        digest = pending.digest
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._fetch(digest))
            self._inflight[digest] = task
            task.add_done_callback(lambda t: self._settle(digest, t))
        record = await asyncio.shield(task)
        return Authenticated(self._identify(record), pending.header)

    async def authenticate(self, headers: Mapping[str, str], path: str = "") -> Identity:
        outcome = self.try_cached(headers, path)
        if isinstance(outcome, PendingLookup):
            outcome = await self.resolve(outcome)
        return outcome.identity

    async def _fetch(self, digest: str) -> KeyRecord | None:
        try:
            async with asyncio.timeout(self._store_timeout):
                record = await self._store.fetch(digest)
        except TimeoutError as exc:
            raise CredentialStoreUnavailable("the key store did not answer in time") from exc
        self._cache.put(digest, record)
        return record

    def _settle(self, digest: str, task: asyncio.Task[KeyRecord | None]) -> None:
        if self._inflight.get(digest) is task:
            del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error with no waiter left is not reported as lost

    def _identify(self, record: KeyRecord | None) -> Identity:
        if record is None:
            raise UnknownKey()
        return identify(record, self._clock.now())
