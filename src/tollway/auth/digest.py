"""Keys are stored and looked up only as HMAC-SHA-256(pepper, key).

The pepper is a server secret kept outside Redis (environment or a mounted secret file), so a copy of the
store alone cannot be used to test guessed keys offline.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

MIN_PEPPER_BYTES: Final = 32


class KeyDigester:
    """Computes the lookup digest of a key. Holds the pepper; its repr never shows it."""

    __slots__ = ("_base",)

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < MIN_PEPPER_BYTES:
            raise ValueError(f"the pepper must be at least {MIN_PEPPER_BYTES} bytes")
        self._base = hmac.new(pepper, digestmod=hashlib.sha256)

    def digest(self, key_text: str) -> str:
        mac = self._base.copy()
        mac.update(key_text.encode("ascii"))
        return mac.hexdigest()

    def __repr__(self) -> str:
        return "KeyDigester(pepper=<hidden>)"
