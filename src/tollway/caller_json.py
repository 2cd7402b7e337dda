"""A caller's JSON request body, read the same way wherever a caller may change something of their own
(their spend cap, their budgets): media type, size, then JSON with every number kept as its text (pure).

Every refusal is a :class:`BodyRefused` carrying the HTTP status and problem slug the edge answers with;
nothing else is raised, whatever the bytes."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any


class BodyRefused(ValueError):
    """A body the caller may not send: ``status`` (400, 409, 413, 415, 422) and ``slug`` (the problem type)."""

    def __init__(self, status: int, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail


def read_json_body(
    body: bytes,
    content_type: str,
    media_types: Collection[str],
    max_bytes: int,
    refused: type[BodyRefused],
    send_as: str,
) -> Any:
    """The parsed document (numbers as their text: ``"5.00"`` stays exact), or ``refused`` for a media type
    outside ``media_types`` (415, "Send … as ``send_as``"), a body over ``max_bytes`` (413), or bytes that
    are not JSON (400; ``NaN`` and ``Infinity`` are not numbers here)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in media_types:
        raise refused(415, "unsupported-media-type", f"Send {send_as}.")
    if len(body) > max_bytes:
        raise refused(413, "body-too-large", f"The body may be at most {max_bytes} bytes.")
    try:
        return json.loads(body.decode("utf-8"), parse_float=str, parse_int=str, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise refused(400, "invalid-body", f"The body is not JSON: {_short(exc)}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]
