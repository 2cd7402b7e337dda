"""Webhook endpoints in Redis: create, read, list, update, delete, rotate the secret — and the
dispatcher's marks (failing, disabled, recovered).

Layout (``notifications.keys``; one hash slot ``{wh}``, so each change is one atomic script)::

    {p}{wh}:ep:<endpoint id>   hash  Endpoint.to_fields() and ``version`` (bumped by every change)
    {p}{wh}:eps                set   endpoint ids

A change is a compare-and-set on the record: an update or a rotation applies only to the version it
read (a concurrent change makes it read again; a rotation racing another is refused, so no secret is
shown that does not sign), the dispatcher's marks only to the state they expect (``mark_disabled``
returns True once, to the one caller that disabled the endpoint: that caller emits ``endpoint.disabled``).
Secrets are stored only sealed (``endpoints.SecretBox``); the plain secret is returned once, by
``create`` and ``rotate_secret``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, cast

from tollway.clock import Clock, SystemClock
from tollway.notifications.endpoints import (
    DEFAULT_OVERLAP,
    MAX_REASON_CHARS,
    STRICT,
    Endpoint,
    EndpointError,
    SealedSecret,
    SecretBox,
    UrlPolicy,
    new_endpoint_id,
    new_secret,
    validate_description,
    validate_event_types,
    validate_overlap,
    validate_url,
)
from tollway.notifications.keys import endpoint_key, endpoints_key
from tollway.redis_types import RedisClient
from tollway.settings import Settings

MAX_ENDPOINTS: Final = 100
_UPDATE_ATTEMPTS: Final = 5

# KEYS: record, set.  ARGV: max endpoints, id, field, value, ...  → 1 made, 0 too many, -1 id taken
_CREATE: Final = """
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('HSET', KEYS[1], 'version', 1)
return 1
"""

# KEYS: record.  ARGV: guard field, 'eq' | 'ne', guard value, field, value, ...
# → 1 written, 0 no such record, -1 the guard does not hold (nothing written)
_CHANGE: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if (ARGV[2] == 'eq') ~= (current == ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
"""

# KEYS: record, set.  ARGV: id  → 1 deleted, 0 none
_DELETE: Final = """
redis.call('SREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""


class EndpointNotFound(LookupError):
    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"webhook endpoint {endpoint_id!r} does not exist")
        self.endpoint_id = endpoint_id


class EndpointConflict(Exception):
    """A change that lost a race with another change of the same endpoint (retry it)."""


class TooManyEndpoints(Exception):
    def __init__(self) -> None:
        super().__init__(f"there are {MAX_ENDPOINTS} webhook endpoints already (the most allowed); delete one first")


@dataclass(frozen=True, slots=True)
class IssuedEndpoint:
    """An endpoint and its plain secret, to show once (``create``, ``rotate_secret``)."""

    endpoint: Endpoint
    secret: str

    def __repr__(self) -> str:
        return f"IssuedEndpoint(endpoint={self.endpoint.id!r}, secret=<hidden>)"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


class EndpointStore:
    def __init__(
        self,
        redis: RedisClient,
        box: SecretBox,
        prefix: str = "tw:",
        *,
        clock: Clock | None = None,
        policy: UrlPolicy = STRICT,
    ) -> None:
        self._redis = redis
        self._box = box
        self._prefix = prefix
        self._clock = clock or SystemClock()
        self.policy = policy
        self._set = endpoints_key(prefix)
        self._create = redis.register_script(_CREATE)
        self._change = redis.register_script(_CHANGE)
        self._delete = redis.register_script(_DELETE)

    @property
    def box(self) -> SecretBox:
        return self._box

    def _key(self, endpoint_id: str) -> str:
        return endpoint_key(self._prefix, endpoint_id)

    # --- management -------------------------------------------------------------------------------------

    async def create(
        self, url: str, *, description: str = "", event_types: Sequence[str] = (), enabled: bool = True
    ) -> IssuedEndpoint:
        """A new endpoint and its secret (shown once). ``EndpointError`` for bad input,
        ``TooManyEndpoints`` past ``MAX_ENDPOINTS``."""
        url = validate_url(url, self.policy)
        description = validate_description(description)
        types = validate_event_types(event_types)
        now = self._clock.now()
        endpoint_id = new_endpoint_id()
        secret = new_secret()
        endpoint = Endpoint(
            id=endpoint_id,
            url=url,
            description=description,
            event_types=types,
            enabled=enabled,
            created_at=now,
            updated_at=now,
            secret=SealedSecret(self._box.seal(secret, endpoint_id), now),
            disabled_at=None if enabled else now,
            disabled_reason=None if enabled else "created disabled",
        )
        args: list[Any] = [MAX_ENDPOINTS, endpoint_id, *_pairs(endpoint.to_fields())]
        made = int(await self._create(keys=[self._key(endpoint_id), self._set], args=args))
        if made == 0:
            raise TooManyEndpoints()
        if made < 0:  # 96 random bits collided: never in practice
            raise EndpointConflict(f"endpoint id {endpoint_id} is taken; try again")
        return IssuedEndpoint(endpoint, secret)

    async def get(self, endpoint_id: str) -> Endpoint | None:
        found = await self._read(endpoint_id)
        return found[0] if found is not None else None

    async def require(self, endpoint_id: str) -> Endpoint:
        endpoint = await self.get(endpoint_id)
        if endpoint is None:
            raise EndpointNotFound(endpoint_id)
        return endpoint

    async def all(self) -> list[Endpoint]:
        """Every endpoint, oldest first (ties by id). A record that cannot be read is skipped."""
        ids = sorted(cast(set[str], await self._redis.smembers(self._set)))
        if not ids:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for endpoint_id in ids:
            pipe.hgetall(self._key(endpoint_id))
        found: list[Endpoint] = []
        for fields in cast(list[dict[str, str]], await pipe.execute()):
            if fields:
                try:
                    found.append(Endpoint.from_fields(fields))
                except ValueError:
                    continue
        return sorted(found, key=sort_key)

    async def page(
        self, limit: int, after: Sequence[str] | None = None
    ) -> tuple[list[Endpoint], tuple[str, str] | None]:
        """Up to ``limit`` endpoints after the sort key ``after`` (``sort_key`` of the last one seen), and
        the sort key to continue from (None on the last page)."""
        ordered = await self.all()
        if after is not None:
            ordered = [e for e in ordered if list(sort_key(e)) > list(after)]
        shown = ordered[:limit]
        return shown, sort_key(shown[-1]) if len(ordered) > limit and shown else None

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | _Unset = UNSET,
        description: str | _Unset = UNSET,
        event_types: Sequence[str] | _Unset = UNSET,
        enabled: bool | _Unset = UNSET,
    ) -> tuple[Endpoint, Endpoint]:
        """Change what is given; (before, after). Enabling a disabled endpoint clears its disabled and
        failing state; disabling it records the time and that an operator did. Nothing given, or nothing
        different: no write (after == before)."""
        if not isinstance(url, _Unset):
            url = validate_url(url, self.policy)
        if not isinstance(description, _Unset):
            description = validate_description(description)
        types = validate_event_types(event_types) if not isinstance(event_types, _Unset) else None
        for _ in range(_UPDATE_ATTEMPTS):
            found = await self._read(endpoint_id)
            if found is None:
                raise EndpointNotFound(endpoint_id)
            before, version = found
            after = before
            if not isinstance(url, _Unset):
                after = replace(after, url=url)
            if not isinstance(description, _Unset):
                after = replace(after, description=description)
            if types is not None:
                after = replace(after, event_types=types)
            if not isinstance(enabled, _Unset) and enabled != before.enabled:
                now = self._clock.now()
                if enabled:
                    after = replace(after, enabled=True, disabled_at=None, disabled_reason=None, failing_since=None)
                else:
                    after = replace(after, enabled=False, disabled_at=now, disabled_reason="disabled by an operator")
            if after == before:
                return before, before
            after = replace(after, updated_at=self._clock.now())
            if await self._write(endpoint_id, before, after, guard=("version", "eq", version)):
                return before, after
        raise EndpointConflict(f"webhook endpoint {endpoint_id} kept changing; try again")

    async def delete(self, endpoint_id: str) -> bool:
        return bool(await self._delete(keys=[self._key(endpoint_id), self._set], args=[endpoint_id]))

    async def rotate_secret(
        self, endpoint_id: str, overlap: timedelta = DEFAULT_OVERLAP
    ) -> tuple[IssuedEndpoint, Endpoint]:
        """A new secret (shown once) and the endpoint before; the old secret keeps signing for ``overlap``
        (0–7 days). A previous secret still in its overlap is dropped: two secrets sign at most.
        ``EndpointConflict`` when another rotation got there first (its secret is the one that signs)."""
        validate_overlap(overlap)
        found = await self._read(endpoint_id)
        if found is None:
            raise EndpointNotFound(endpoint_id)
        before, _version = found
        secret = new_secret()
        after = before.rotated(self._box.seal(secret, endpoint_id), self._clock.now(), overlap)
        if not await self._write(endpoint_id, before, after, guard=("secret_sealed", "eq", before.secret.sealed)):
            raise EndpointConflict(
                f"the secret of webhook endpoint {endpoint_id} was rotated meanwhile; see the newest one"
            )
        return IssuedEndpoint(after, secret), before

    # --- the dispatcher's marks ---------------------------------------------------------------------------

    async def mark_failing(self, endpoint_id: str, since: datetime) -> bool:
        """Deliveries to the endpoint started failing at ``since``; True if that is news (it was not failing)."""
        fields = {"failing_since": _ms(since)}
        return await self._guarded(endpoint_id, ("failing_since", "eq", ""), fields)

    async def mark_recovered(self, endpoint_id: str) -> bool:
        """A delivery succeeded: the endpoint is no longer failing. True if it was."""
        return await self._guarded(endpoint_id, ("failing_since", "ne", ""), {"failing_since": ""})

    async def mark_disabled(self, endpoint_id: str, at: datetime, reason: str) -> bool:
        """Disable an enabled endpoint (failing for too long). True for the one caller that disabled it —
        that caller emits ``endpoint.disabled`` — False if it was disabled already or is gone."""
        fields = {
            "enabled": "0",
            "disabled_at": _ms(at),
            "disabled_reason": reason[:MAX_REASON_CHARS],
            "updated_at": _ms(at),
        }
        return await self._guarded(endpoint_id, ("enabled", "eq", "1"), fields)

    # --- internals -----------------------------------------------------------------------------------------

    async def _read(self, endpoint_id: str) -> tuple[Endpoint, str] | None:
        fields = cast(dict[str, str], await self._redis.hgetall(self._key(endpoint_id)))
        if not fields:
            return None
        try:
            return Endpoint.from_fields(fields), fields.get("version", "")
        except ValueError:
            return None

    async def _write(self, endpoint_id: str, before: Endpoint, after: Endpoint, *, guard: tuple[str, str, str]) -> bool:
        old = before.to_fields()
        changed = {k: v for k, v in after.to_fields().items() if old.get(k) != v}
        if not changed:
            return True
        result = int(await self._change(keys=[self._key(endpoint_id)], args=[*guard, *_pairs(changed)]))
        if result == 0:
            raise EndpointNotFound(endpoint_id)
        return result == 1

    async def _guarded(self, endpoint_id: str, guard: tuple[str, str, str], fields: Mapping[str, str]) -> bool:
        result = int(await self._change(keys=[self._key(endpoint_id)], args=[*guard, *_pairs(fields)]))
        return result == 1


def store_from_settings(redis: RedisClient, settings: Settings, clock: Clock | None = None) -> EndpointStore:
    """The store as ``tollway webhooks`` and the dispatcher open it: the pepper's secret box, the Redis
    prefix and ``TOLLWAY_WEBHOOKS_ALLOW_HTTP`` / ``_ALLOW_PRIVATE``. ``ValueError`` without a pepper."""
    return EndpointStore(
        redis,
        SecretBox(settings.pepper_bytes()),
        settings.redis_prefix,
        clock=clock,
        policy=url_policy(settings),
    )


def url_policy(settings: Settings) -> UrlPolicy:
    return UrlPolicy(allow_http=settings.webhooks_allow_http, allow_private=settings.webhooks_allow_private)


def sort_key(endpoint: Endpoint) -> tuple[str, str]:
    """List order: creation time (zero-padded epoch ms), then id."""
    return (f"{int(endpoint.created_at.timestamp() * 1000):015d}", endpoint.id)


def _pairs(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _ms(at: datetime) -> str:
    return str(int(at.timestamp() * 1000))


__all__ = [
    "MAX_ENDPOINTS",
    "UNSET",
    "EndpointConflict",
    "EndpointError",
    "EndpointNotFound",
    "EndpointStore",
    "IssuedEndpoint",
    "TooManyEndpoints",
    "sort_key",
    "store_from_settings",
    "url_policy",
]
