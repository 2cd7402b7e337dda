"""A JWKS fetcher for unit tests: serves a key set from memory, counts calls, can be down or slow."""

from __future__ import annotations

import asyncio
import json

from tests.support.jwt_issuer import LocalIssuer, SigningKey
from tollway.auth.jwt.jwks import FetchedJwks, JwksFetchError


class FakeFetcher:
    def __init__(self, *keys: SigningKey, max_age: float | None = 300) -> None:
        self.document = LocalIssuer(list(keys)).jwks()
        self.max_age = max_age
        self.calls = 0
        self.down = False
        self.delay = 0.0

    async def fetch(self, url: str, timeout_s: float) -> FetchedJwks:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise JwksFetchError("connection refused")
        return FetchedJwks(json.dumps(self.document).encode(), self.max_age)
