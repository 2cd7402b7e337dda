"""An issuer's JWKS: fetched over HTTP(S), cached per ``Cache-Control``, refetched on demand (rate-limited),
and kept while the endpoint is unreachable.

- One fetch at a time per issuer (single flight): every check waiting for keys joins it.
- A token naming an unknown ``kid`` may trigger a refetch at most once per ``refetch_interval_s``: a flood
  of made-up key ids costs the issuer one request per interval, not one per token.
- A failed fetch keeps the last good set; with no set ever fetched, checks get :class:`TokenKeysUnavailable`
  (503) from the authenticator.
- ``run`` refreshes the set in the background when its lifetime (``max-age`` clamped to the policy's floor
  and ceiling) ends, so the hot path never waits for a routine refresh.

Only the configured URL is ever fetched; redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import httpx

from tollway.auth.jwt.issuer import JwksPolicy
from tollway.auth.jwt.keys import KeySet, UnusableKey, parse_jwks

log = logging.getLogger(__name__)

DEFAULT_MAX_JWKS_BYTES: Final = 1 << 20
_MAX_AGE: Final = re.compile(r"(?:^|,)\s*(s-maxage|max-age)\s*=\s*\"?([0-9]+)\"?\s*(?=,|$)", re.IGNORECASE)
_NO_CACHE: Final = re.compile(r"(?:^|,)\s*(no-store|no-cache)\s*(?=[,=]|$)", re.IGNORECASE)


class JwksFetchError(Exception):
    """The key set could not be fetched or read; the message says why (it contains no key material)."""


@dataclass(frozen=True, slots=True)
class FetchedJwks:
    body: bytes
    max_age: float | None  # from Cache-Control; None when the response gave none


class JwksFetcher(Protocol):
    async def fetch(self, url: str, timeout_s: float) -> FetchedJwks: ...


def cache_max_age(cache_control: str | None) -> float | None:
    """Seconds a response may be reused per its ``Cache-Control`` (``no-store``/``no-cache``: 0), or None."""
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    found = {name.lower(): int(value) for name, value in _MAX_AGE.findall(cache_control)}
    if "s-maxage" in found:
        return float(found["s-maxage"])
    return float(found["max-age"]) if "max-age" in found else None


class HttpJwksFetcher:
    """Fetches with one shared ``httpx.AsyncClient`` (connection reuse across refreshes)."""

    def __init__(self, client: httpx.AsyncClient | None = None, max_bytes: int = DEFAULT_MAX_JWKS_BYTES) -> None:
        self._client = client or httpx.AsyncClient(follow_redirects=False, headers={"accept": "application/json"})
        self._max_bytes = max_bytes

    async def fetch(self, url: str, timeout_s: float) -> FetchedJwks:
        try:
            async with asyncio.timeout(timeout_s):
                async with self._client.stream("GET", url, timeout=timeout_s) as response:
                    if response.status_code != 200:
                        raise JwksFetchError(f"HTTP {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self._max_bytes:
                            raise JwksFetchError(f"the key set is larger than {self._max_bytes} bytes")
                    return FetchedJwks(bytes(body), cache_max_age(response.headers.get("cache-control")))
        except TimeoutError as exc:
            raise JwksFetchError(f"no answer within {timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise JwksFetchError(f"{type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


class JwksCache:
    """One issuer's key set. ``monotonic`` is the injected clock's."""

    def __init__(self, issuer_name: str, policy: JwksPolicy, fetcher: JwksFetcher, monotonic: Callable[[], float]):
        self.issuer_name = issuer_name
        self.policy = policy
        self._fetcher = fetcher
        self._monotonic = monotonic
        self._keys: KeySet | None = None
        self._expires_at = 0.0
        self._last_attempt: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.fetches = 0
        self.failures = 0
        self.last_error: str | None = None

    def current(self) -> KeySet | None:
        """The last good key set (possibly past its lifetime: a stale set beats none); None: never fetched."""
        return self._keys

    @property
    def fetching(self) -> bool:
        return self._task is not None and not self._task.done()

    def stale(self) -> bool:
        return self._keys is None or self._monotonic() >= self._expires_at

    def may_refetch(self) -> bool:
        """Whether an on-demand refresh may fetch now (or join the fetch in flight): the rate limit."""
        return (
            self.fetching
            or self._last_attempt is None
            or self._monotonic() - self._last_attempt >= self.policy.refetch_interval_s
        )

    async def refresh(self, wait_s: float | None = None) -> KeySet | None:
        """Fetch now if the rate limit allows (or join the fetch in flight); wait for it at most ``wait_s``
        seconds (None: until done). Returns the current set either way."""
        if not self.fetching:
            if not self.may_refetch():
                return self._keys
            self._start()
        task = self._task
        assert task is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), wait_s)
        return self._keys

    def _start(self) -> None:
        self._last_attempt = self._monotonic()
        self._task = asyncio.ensure_future(self._fetch())

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            fetched = await self._fetcher.fetch(self.policy.url, self.policy.timeout_s)
            keys = parse_jwks(fetched.body)
        except (JwksFetchError, UnusableKey) as exc:
            self.failures += 1
            self.last_error = str(exc)
            kept = "keeping the last good key set" if self._keys is not None else "no key set fetched yet"
            log.warning("JWKS of issuer %s (%s) not refreshed: %s; %s", self.issuer_name, self.policy.url, exc, kept)
            return
        ttl = self.policy.ttl(fetched.max_age)
        if self._keys is None or self._keys.kids != keys.kids:
            log.info(
                "JWKS of issuer %s: %d key(s) %s, valid %.0f s",
                self.issuer_name,
                len(keys),
                ", ".join(keys.kids) or "(no kid)",
                ttl,
            )
        for reason in keys.skipped:
            log.warning("JWKS of issuer %s: key left out: %s", self.issuer_name, reason)
        self._keys = keys
        self._expires_at = self._monotonic() + ttl
        self.last_error = None

    async def run(self) -> None:
        """Keep the set fresh: fetch at start, then whenever its lifetime ends (after a failure, again
        after ``refetch_interval_s``). Runs until cancelled."""
        while True:
            if self.stale():
                await self.refresh()
            delay = (
                self._expires_at - self._monotonic()
                if self._keys is not None and self.last_error is None
                else self.policy.refetch_interval_s
            )
            await asyncio.sleep(max(delay, self.policy.refetch_interval_s, 0.1))

    def describe(self) -> dict[str, object]:
        """For health output: what is loaded, never key material."""
        return {
            "url": self.policy.url,
            "kids": list(self._keys.kids) if self._keys is not None else None,
            "fetches": self.fetches,
            "failures": self.failures,
            "last_error": self.last_error,
        }
