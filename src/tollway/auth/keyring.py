"""Key management: create, list, revoke and rotate API keys. The plaintext key exists only in the
return value of :meth:`Keyring.create` and :meth:`Keyring.rotate`, for the caller to show once.

With an ``events`` emitter (``notifications.emitter.EventEmitter``: the outbox), each committed change
is announced after it is stored: ``key.created`` (also for a rotation's successor) and ``key.revoked``.
An emission that fails is logged and the change stands; revoking the key again (a no-op otherwise)
emits it again, and the periodic ``notifications.expiry`` job re-emits both for recent keys."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from tollway.auth import apikey
from tollway.auth.digest import KeyDigester
from tollway.auth.errors import KeyNotFound
from tollway.auth.records import KeyRecord, KeyStatus, check_identifier
from tollway.auth.store import KeyStore
from tollway.clock import Clock
from tollway.notifications.emitter import EventEmitter, emit_after_commit
from tollway.notifications.lifecycle import key_created, key_revoked


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key: ``secret`` is shown to its owner once and never stored."""

    secret: str
    record: KeyRecord

    def __repr__(self) -> str:
        return f"IssuedKey(secret='…{self.record.last4}', record={self.record!r})"


@dataclass(frozen=True, slots=True)
class Rotation:
    new: IssuedKey
    old: KeyRecord


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


class Keyring:
    def __init__(
        self, store: KeyStore, digester: KeyDigester, clock: Clock, events: EventEmitter | None = None
    ) -> None:
        self._store = store
        self._digester = digester
        self._clock = clock
        self._events = events

    async def create(self, customer_id: str, env: str = "live", expires_at: datetime | None = None) -> IssuedKey:
        check_identifier("customer id", customer_id)
        now = self._clock.now()
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise ValueError("expiry must carry a timezone")
            if expires_at <= now:
                raise ValueError("expiry must be in the future")
        key = apikey.generate(env)
        record = KeyRecord(
            key_id=new_key_id(),
            customer_id=customer_id,
            env=env,
            status=KeyStatus.ACTIVE,
            created_at=now,
            expires_at=expires_at,
            last4=key.last4,
        )
        await self._store.insert(self._digester.digest(key.text), record)
        await emit_after_commit(self._events, [key_created(record)])
        return IssuedKey(secret=key.text, record=record)

    async def list(self, customer_id: str | None = None) -> list[KeyRecord]:
        return await self._store.list(customer_id)

    async def revoke(self, key_id: str) -> KeyRecord:
        digest, record = await self._find(key_id)
        if record.status is KeyStatus.REVOKED:
            if record.revoked_at is not None:  # once per revocation: a no-op if it got through before
                await emit_after_commit(self._events, [key_revoked(record)])
            return record
        revoked = record.revoked(self._clock.now())
        await self._store.update(digest, revoked)
        await emit_after_commit(self._events, [key_revoked(revoked)])
        return revoked

    async def rotate(self, key_id: str, overlap: timedelta) -> Rotation:
        """Issue a successor for the same customer; the old key keeps working for ``overlap``."""
        if overlap < timedelta(0):
            raise ValueError("overlap must not be negative")
        digest, old = await self._find(key_id)
        if old.state_at(self._clock.now()) != "active":
            raise ValueError(f"key {key_id} is {old.state_at(self._clock.now())}; only an active key rotates")
        new = await self.create(old.customer_id, old.env, old.expires_at)
        retiring = old.expiring(self._clock.now() + overlap, rotated_to=new.record.key_id)
        await self._store.update(digest, retiring)
        return Rotation(new=new, old=retiring)

    async def _find(self, key_id: str) -> tuple[str, KeyRecord]:
        found = await self._store.find(key_id)
        if found is None:
            raise KeyNotFound(key_id)
        return found
