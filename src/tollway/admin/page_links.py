"""Signed, expiring links to a customer's usage and invoice page, for people without an admin
credential (the customer themselves). A link's token is ``<expiry epoch seconds>.<signature>``, the
signature an HMAC-SHA-256 over the customer id and the expiry with a key derived from the pepper; it
opens that customer's page and invoice pages only, until it expires. Nothing is stored: a link cannot
be revoked before its expiry except by rotating the pepper (which also invalidates every API key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Final

_TOKEN: Final = re.compile(r"^([0-9]{1,12})\.([A-Za-z0-9_-]{43})$")


class PageLinkSigner:
    __slots__ = ("_key",)

    def __init__(self, pepper: bytes) -> None:
        self._key = hmac.new(pepper, b"tollway-admin-page-links", hashlib.sha256).digest()

    def _signature(self, customer_id: str, expires: int) -> str:
        mac = hmac.new(self._key, f"{customer_id}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def sign(self, customer_id: str, expires_at: datetime) -> str:
        expires = int(expires_at.timestamp())
        return f"{expires}.{self._signature(customer_id, expires)}"

    def verify(self, customer_id: str, token: str, now: datetime) -> bool:
        """True when ``token`` was signed for this customer and has not expired at ``now``."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return False
        expires = int(match.group(1))
        if datetime.fromtimestamp(expires, UTC) <= now:
            return False
        return hmac.compare_digest(match.group(2), self._signature(customer_id, expires))

    def __repr__(self) -> str:
        return "PageLinkSigner(key=<hidden>)"
