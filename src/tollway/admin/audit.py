"""The audit log: one entry per change made through the management API — who (the admin credential's
name), what (action, resource), when, and the resource before and after — never a secret.

Kept in a Redis stream, ``{p}admin-audit``, beside the state it audits (keys, subscriptions, customer
records): a change and its entry go to the same store, so the log cannot be down while changes go
through, and the stream's ids (milliseconds-sequence, strictly increasing) are the pagination cursor.
Entries are never trimmed; the log is as durable as that Redis (run it with ``appendonly yes``, as the
key store needs anyway). The entry is written right after the change; if that write fails, the entry
goes to the error log instead, so it is not lost with the response.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

from redis.exceptions import RedisError

from tollway.auth.records import format_instant
from tollway.redis_types import RedisClient

log = logging.getLogger(__name__)

STREAM_ID: Final = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
# Never written to the log, at any depth: the secrets and their digests.
SECRET_FIELDS: Final = frozenset({"api_key", "token", "secret", "digest", "key_digest", "pepper"})


@dataclass(frozen=True, slots=True)
class AuditEntry:
    audit_id: str
    at: str
    actor: str
    action: str
    resource_type: str
    resource_id: str
    customer_id: str | None
    request_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def scrub(value: Any) -> Any:
    """``value`` with every field named like a secret removed, recursively."""
    if isinstance(value, Mapping):
        return {k: scrub(v) for k, v in value.items() if str(k) not in SECRET_FIELDS}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


class AuditLog:
    def __init__(self, redis: RedisClient, prefix: str = "tw:") -> None:
        self._redis = redis
        self._stream = f"{prefix}admin-audit"

    async def record(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        resource_type: str,
        resource_id: str,
        customer_id: str | None,
        request_id: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> str | None:
        """Append an entry; its id, or None when Redis refused it (the entry is then logged as an error)."""
        fields = {
            "at": format_instant(at),
            "actor": actor,
            "action": action,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "customer_id": customer_id or "",
            "request_id": request_id,
            "before": json.dumps(scrub(before), sort_keys=True) if before is not None else "",
            "after": json.dumps(scrub(after), sort_keys=True) if after is not None else "",
        }
        try:
            return str(await self._redis.xadd(self._stream, cast(dict[Any, Any], fields)))
        except (RedisError, OSError) as exc:
            log.error("audit entry not stored (%s): %s", exc, json.dumps(fields, sort_keys=True))
            return None

    async def newest_first(self, limit: int, before_id: str | None = None) -> tuple[list[AuditEntry], str | None]:
        """Up to ``limit`` entries older than ``before_id`` (all when None), newest first, and the id to
        continue from (None when no older entry remains)."""
        upper = f"({before_id}" if before_id is not None else "+"
        raw = cast(
            list[tuple[str, dict[str, str]]],
            await self._redis.xrevrange(self._stream, max=upper, min="-", count=limit + 1),
        )
        entries = [_decode(entry_id, fields) for entry_id, fields in raw[:limit]]
        more = len(raw) > limit
        return entries, entries[-1].audit_id if more and entries else None


def _json_or_none(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def _decode(entry_id: str, fields: dict[str, str]) -> AuditEntry:
    return AuditEntry(
        audit_id=entry_id,
        at=fields.get("at", ""),
        actor=fields.get("actor", ""),
        action=fields.get("action", ""),
        resource_type=fields.get("resource_type", ""),
        resource_id=fields.get("resource_id", ""),
        customer_id=fields.get("customer_id") or None,
        request_id=fields.get("request_id", ""),
        before=_json_or_none(fields.get("before", "")),
        after=_json_or_none(fields.get("after", "")),
    )
