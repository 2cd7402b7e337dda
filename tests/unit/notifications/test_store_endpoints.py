"""The endpoint store seen as the dispatcher's directory: live secrets opened (both during an overlap),
filters, enabled state, an unreadable secret skipped, disabling through the store's guarded mark."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from tollway.notifications.dispatcher import Target
from tollway.notifications.store_endpoints import StoreEndpoints

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sealed:
    sealed: str
    expires_at: datetime | None = None


@dataclass(frozen=True)
class FakeEndpoint:
    id: str
    url: str
    event_types: tuple[str, ...]
    enabled: bool
    secrets: tuple[Sealed, ...]

    def live_secrets(self, now: datetime) -> list[Sealed]:
        return [s for s in self.secrets if s.expires_at is None or now < s.expires_at]


class Box:
    def open(self, sealed: str, endpoint_id: str) -> str:
        if not sealed.startswith("sealed:"):
            raise ValueError("cannot open")
        return "whsec_" + sealed.removeprefix("sealed:")


@dataclass
class FakeStore:
    endpoints: list[FakeEndpoint]
    box: Box = field(default_factory=Box)
    disabled: list[tuple[str, datetime, str]] = field(default_factory=list)

    async def all(self) -> list[FakeEndpoint]:
        return self.endpoints

    async def mark_disabled(self, endpoint_id: str, at: datetime, reason: str) -> bool:
        first = endpoint_id not in [d[0] for d in self.disabled]
        self.disabled.append((endpoint_id, at, reason))
        return first


def test_targets_and_disable() -> None:
    store = FakeStore(
        [
            FakeEndpoint(
                "ep_a", "https://a/", (), True, (Sealed("sealed:new"), Sealed("sealed:old", NOW + timedelta(hours=1)))
            ),
            FakeEndpoint(
                "ep_b", "https://b/", ("key.created",), False, (Sealed("sealed:b"), Sealed("sealed:gone", NOW))
            ),
            FakeEndpoint("ep_c", "https://c/", (), True, (Sealed("garbage"),)),
        ]
    )
    directory = StoreEndpoints(store, lambda: NOW)

    async def main() -> None:
        assert list(await directory.targets()) == [
            Target("ep_a", "https://a/", ("whsec_new", "whsec_old")),
            Target("ep_b", "https://b/", ("whsec_b",), frozenset({"key.created"}), enabled=False),
        ]
        at_ms = int(NOW.timestamp() * 1000)
        assert await directory.disable("ep_a", "HTTP 500", at_ms) is True
        assert await directory.disable("ep_a", "HTTP 500", at_ms) is False
        assert store.disabled[0] == ("ep_a", NOW, "HTTP 500")

    asyncio.run(main())
