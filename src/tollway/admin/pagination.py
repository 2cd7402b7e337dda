"""Cursor pagination, the same on every list: ``?limit=N`` (1–500, default 50) and ``?cursor=…``.

A page is ``{"items": [...], "next": "<path and query of the next page>" | null}``. The cursor is
opaque to clients: base64url of a JSON list of strings, the sort key of the last item returned (keyset
pagination: an item added or removed elsewhere never shifts a page), or an offset for warehouse
queries whose rows do not change while they are read.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Query, Request
from pydantic import BaseModel, Field

from tollway.admin.problems import ProblemError

T = TypeVar("T")
Item = TypeVar("Item", bound=BaseModel)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    next: str | None = Field(description="the next page's path and query; null on the last page")


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    cursor: str | None


async def page_request(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=1024, description="from the previous page's `next`")] = None,
) -> PageRequest:
    return PageRequest(limit, cursor)


def encode_cursor(key: Sequence[str]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[str]:
    """The sort key a cursor carries; a 400 problem for anything this API did not hand out."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        value = None
    if not isinstance(value, list) or not value or not all(isinstance(part, str) for part in value):
        raise ProblemError(400, "invalid-cursor", "The cursor is not one this API handed out; start from page 1.")
    return value


def decode_offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    key = decode_cursor(cursor)
    if len(key) != 1 or not (key[0].isascii() and key[0].isdigit()) or len(key[0]) > 12:
        raise ProblemError(400, "invalid-cursor", "The cursor is not one this API handed out; start from page 1.")
    return int(key[0])


def next_link(request: Request, cursor: str | None) -> str | None:
    """The path and query of this request with ``cursor`` replaced; None when there is no next page."""
    if cursor is None:
        return None
    url = request.url.include_query_params(cursor=cursor)
    return f"{url.path}?{url.query}"


def paginate(
    items: Sequence[T], sort_key: Callable[[T], Sequence[str]], page: PageRequest
) -> tuple[list[T], str | None]:
    """One page of ``items`` in ``sort_key`` order after the cursor, and the next page's cursor."""
    ordered = sorted(items, key=lambda item: list(sort_key(item)))
    if page.cursor is not None:
        after = decode_cursor(page.cursor)
        ordered = [item for item in ordered if list(sort_key(item)) > after]
    shown = ordered[: page.limit]
    more = len(ordered) > page.limit
    return shown, encode_cursor(sort_key(shown[-1])) if more and shown else None
