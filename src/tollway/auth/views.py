"""A key record as the management faces (the CLI and the admin API) show it: never the secret."""

from __future__ import annotations

from datetime import datetime

from tollway.auth.records import KeyRecord, format_instant


def _iso(value: datetime | None) -> str | None:
    return format_instant(value) or None


def record_json(record: KeyRecord, now: datetime) -> dict[str, object]:
    return {
        "key_id": record.key_id,
        "customer_id": record.customer_id,
        "env": record.env,
        "state": record.state_at(now),
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
        "revoked_at": _iso(record.revoked_at),
        "rotated_to": record.rotated_to,
        "last4": record.last4,
    }
