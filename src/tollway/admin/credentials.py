"""Admin credentials: bearer tokens an operator creates with ``tollway admin credentials create``.

The token is shown once; Redis keeps only HMAC-SHA-256(pepper, ``admin-credential:`` + token), the
same keyed digest API keys get (``tollway.auth.digest``), with a prefix so an admin token's digest can
never be an API key's. Layout (``{p}`` is ``TOLLWAY_REDIS_PREFIX``)::

    {p}admin-credential:<digest>       hash    name, scope, created_at
    {p}admin-credential-name:<name>    string  the digest (management by name)
    {p}admin-credentials               set     every credential name

Writes are ordered like the key store's: the name is claimed first (``SET NX``: two creates of one
name cannot both win), the record last; revocation deletes the record first, so a revoked token stops
working at once.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from tollway.admin.scopes import Scope
from tollway.auth.digest import KeyDigester
from tollway.auth.records import check_identifier, format_instant
from tollway.redis_types import RedisClient

TOKEN_PREFIX: Final = "twadm_"  # noqa: S105 (a prefix, not a secret)
TOKEN_PATTERN: Final = re.compile(r"^twadm_[A-Za-z0-9_-]{43}$")
_DIGEST_DOMAIN: Final = "admin-credential:"


@dataclass(frozen=True, slots=True)
class AdminCredential:
    name: str
    scope: Scope
    created_at: datetime

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "scope": self.scope.value, "created_at": format_instant(self.created_at)}


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """A new credential and its token, to show once."""

    token: str
    credential: AdminCredential

    def __repr__(self) -> str:
        return f"IssuedCredential(token=<hidden>, credential={self.credential!r})"


class CredentialExists(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"an admin credential named {name!r} exists already")


class RedisCredentialStore:
    def __init__(self, redis: RedisClient, digester: KeyDigester, prefix: str = "tw:") -> None:
        self._redis = redis
        self._digester = digester
        self._prefix = prefix
        self._names = f"{prefix}admin-credentials"

    def _record_key(self, digest: str) -> str:
        return f"{self._prefix}admin-credential:{digest}"

    def _name_key(self, name: str) -> str:
        return f"{self._prefix}admin-credential-name:{name}"

    def _digest(self, token: str) -> str:
        return self._digester.digest(_DIGEST_DOMAIN + token)

    async def create(self, name: str, scope: Scope, now: datetime) -> IssuedCredential:
        check_identifier("credential name", name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = self._digest(token)
        credential = AdminCredential(name, scope, now)
        if not await self._redis.set(self._name_key(name), digest, nx=True):
            raise CredentialExists(name)
        await self._redis.sadd(self._names, name)
        await self._redis.hset(self._record_key(digest), mapping=cast(dict[Any, Any], credential.as_dict()))
        return IssuedCredential(token, credential)

    async def authenticate(self, token: str) -> AdminCredential | None:
        """The credential a presented token stands for; None for a token that is not (or no longer) one."""
        if not TOKEN_PATTERN.fullmatch(token):
            return None
        fields = cast(dict[str, str], await self._redis.hgetall(self._record_key(self._digest(token))))
        return _decode(fields) if fields else None

    async def list(self) -> list[AdminCredential]:
        names = cast(set[str], await self._redis.smembers(self._names))
        found = []
        for name in sorted(names):
            digest = cast(str | None, await self._redis.get(self._name_key(name)))
            if digest is None:
                continue
            fields = cast(dict[str, str], await self._redis.hgetall(self._record_key(digest)))
            if fields:
                found.append(_decode(fields))
        return found

    async def revoke(self, name: str) -> bool:
        """Remove a credential: its token stops working at once. False when there is none of that name."""
        digest = cast(str | None, await self._redis.get(self._name_key(name)))
        if digest is None:
            return False
        await self._redis.delete(self._record_key(digest))
        await self._redis.delete(self._name_key(name))
        await self._redis.srem(self._names, name)
        return True


def _decode(fields: dict[str, str]) -> AdminCredential:
    return AdminCredential(
        name=fields["name"],
        scope=Scope(fields["scope"]),
        created_at=datetime.fromisoformat(fields["created_at"]),
    )
