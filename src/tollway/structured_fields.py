"""RFC 9651 structured-field values that several layers write (RateLimit fields at the edge, the usage and
balance fields): shared here, below every layer that uses them."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def sf_string(value: str) -> str:
    """An RFC 9651 sf-string: printable ASCII with ``"`` and ``\\`` escaped."""
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{value!r} cannot be a structured-field string")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
