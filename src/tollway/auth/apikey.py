"""API key format: ``tw_<env>_<secret><checksum>``.

* ``tw`` names the product and ``live``/``test`` the environment, so a leaked key is recognisable and
  secret scanners can match ``tw_(live|test)_[0-9A-Za-z]{33}``.
* The secret is 27 base62 characters carrying 160 bits from the OS CSPRNG (≥ 128 bits required).
* The checksum is CRC-32 of everything before it, as 6 base62 characters: a mistyped or truncated key is
  refused without a store lookup (it is a typo check, not a security control).

Pure code: no I/O, no clock.
"""

from __future__ import annotations

import re
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from tollway.auth.errors import MalformedKey

PRODUCT: Final = "tw"
ENVIRONMENTS: Final = ("live", "test")
ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SECRET_BYTES: Final = 20
SECRET_CHARS: Final = 27  # ceil(160 / log2(62))
CHECKSUM_CHARS: Final = 6  # ceil(32 / log2(62))
_BODY_CHARS: Final = SECRET_CHARS + CHECKSUM_CHARS
_MAX_KEY_CHARS: Final = len(PRODUCT) + 1 + max(len(e) for e in ENVIRONMENTS) + 1 + _BODY_CHARS
_KEY_PATTERN: Final = re.compile(rf"{PRODUCT}_({'|'.join(ENVIRONMENTS)})_[0-9A-Za-z]{{{_BODY_CHARS}}}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """A syntactically valid key. ``text`` is the secret itself: never log or store it."""

    env: str
    text: str

    @property
    def last4(self) -> str:
        return self.text[-4:]

    def __repr__(self) -> str:
        return f"ParsedKey(env={self.env!r}, text='…{self.last4}')"


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        chars.append(ALPHABET[rem])
    if value:
        raise ValueError("value does not fit the width")
    return "".join(reversed(chars))


def checksum(prefix_and_secret: str) -> str:
    """Six base62 characters of CRC-32 over the key's leading part."""
    return _base62(zlib.crc32(prefix_and_secret.encode("ascii")), CHECKSUM_CHARS)


def generate(env: str, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> ParsedKey:
    """A fresh key for ``env``. ``random_bytes`` is injectable for deterministic tests only."""
    if env not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")
    secret = _base62(int.from_bytes(random_bytes(SECRET_BYTES), "big"), SECRET_CHARS)
    head = f"{PRODUCT}_{env}_{secret}"
    return ParsedKey(env=env, text=head + checksum(head))


def parse(text: str) -> ParsedKey:
    """Check form and checksum; raise :class:`MalformedKey` otherwise. Never echoes the input."""
    match = _KEY_PATTERN.fullmatch(text)
    if match is None or checksum(text[:-CHECKSUM_CHARS]) != text[-CHECKSUM_CHARS:]:
        raise MalformedKey()
    return ParsedKey(env=match[1], text=text)


def well_formed_length(text: str) -> bool:
    """Cheap pre-check before hashing untrusted input: no key is longer than this."""
    return len(text) <= _MAX_KEY_CHARS
