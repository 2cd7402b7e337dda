"""What the store keeps about a key (never the key itself), and who a caller turned out to be."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from tollway.auth.errors import ExpiredKey, RevokedKey

# Identifiers travel in HTTP headers and Redis keys: keep them to a safe, readable alphabet.
IDENTIFIER_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def check_identifier(kind: str, value: str) -> str:
    if not IDENTIFIER_PATTERN.fullmatch(value):
        raise ValueError(
            f"{kind} {value!r} is not valid: use 1-128 characters from letters, digits and . _ : @ -, "
            "starting with a letter or digit"
        )
    return value


class KeyStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    customer_id: str
    env: str
    status: KeyStatus
    created_at: datetime
    expires_at: datetime | None
    last4: str
    revoked_at: datetime | None = None
    rotated_to: str | None = None

    def state_at(self, now: datetime) -> str:
        """``active``, ``revoked`` or ``expired`` as seen at ``now``."""
        if self.status is KeyStatus.REVOKED:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def revoked(self, at: datetime) -> KeyRecord:
        return replace(self, status=KeyStatus.REVOKED, revoked_at=at)

    def expiring(self, at: datetime, rotated_to: str | None = None) -> KeyRecord:
        """This record with its expiry moved no later than ``at``."""
        expires = at if self.expires_at is None else min(self.expires_at, at)
        return replace(self, expires_at=expires, rotated_to=rotated_to or self.rotated_to)

    def to_fields(self) -> dict[str, str]:
        return {
            "key_id": self.key_id,
            "customer_id": self.customer_id,
            "env": self.env,
            "status": self.status.value,
            "created_at": format_instant(self.created_at),
            "expires_at": format_instant(self.expires_at),
            "last4": self.last4,
            "revoked_at": format_instant(self.revoked_at),
            "rotated_to": self.rotated_to or "",
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> KeyRecord:
        created = _parseformat_instant(fields["created_at"])
        assert created is not None
        return cls(
            key_id=fields["key_id"],
            customer_id=fields["customer_id"],
            env=fields["env"],
            status=KeyStatus(fields["status"]),
            created_at=created,
            expires_at=_parseformat_instant(fields.get("expires_at", "")),
            last4=fields["last4"],
            revoked_at=_parseformat_instant(fields.get("revoked_at", "")),
            rotated_to=fields.get("rotated_to") or None,
        )


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller. ``key_id`` names the credential: an API key's id, or for a bearer token
    ``jwt:<issuer>:<subject>``. ``scopes`` are a token's granted scopes; ``None`` for API keys, to which
    per-feature scopes do not apply."""

    customer_id: str
    key_id: str
    env: str
    scopes: frozenset[str] | None = None


def identify(record: KeyRecord, now: datetime) -> Identity:
    """The caller a stored record stands for at ``now``, or the reason it no longer does."""
    if record.status is KeyStatus.REVOKED:
        raise RevokedKey()
    if record.expires_at is not None and now >= record.expires_at:
        raise ExpiredKey()
    return Identity(customer_id=record.customer_id, key_id=record.key_id, env=record.env)


def format_instant(value: datetime | None) -> str:
    """UTC, millisecond precision, ``Z`` suffix; empty for ``None``."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parseformat_instant(value: str) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
