"""Document numbers: a gapless, consecutive sequence per series and year (``INV-2026-000042``).

A number is assigned to a document id once, atomically, by one Lua script call in Redis::

    {p}docseq:{<series>-<year>}    string  the last number assigned in the series and year
    {p}docno:{<series>-<year>}     hash    document id -> its number

(``{p}`` is ``TOLLWAY_REDIS_PREFIX``.) Both keys share the hash tag ``{<series>-<year>}``, so they live in
one Redis Cluster slot and one script touches both. The script returns the document's number if it has
one, or else increments the counter and records it for the document: the same id always gets the same
number (a re-run, or a run after a crash, reuses it), and two racing callers never get the same number.
The numbers of a series and year are exactly 1..N, one per document id, in the order they were
assigned; a gap can only come from a document that got a number and was never written (the caller
writes every document it numbered, or re-runs with the same ids). Durability is Redis's (AOF, as
configured for the limiter's counters: docs/operations.md).

``assign_numbers`` numbers many documents of one series and year in one pipeline (the same script per
id, in order: new ids get increasing numbers in the order given), for a run that finalizes thousands.
``numbers_assigned`` reads back every (document id, number) of a series and year, for audits and tests.
``raise_sequence`` moves a sequence up to a number already used elsewhere (a Redis restored from an older
backup, or emptied, would otherwise hand out numbers again that stored documents carry): finalizing runs
call it with the highest number ClickHouse holds before they assign any.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final, cast

from tollway.redis_types import RedisClient

SERIES_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,31}")
"""A series name: letters, digits and ``_`` (``-`` separates the parts of a formatted number)."""

BATCH: Final = 1000
"""Scripts per pipeline round trip in ``assign_numbers``."""

DIGITS: Final = 6
"""Numbers are zero-padded to this many digits (more when the sequence outgrows them)."""

ASSIGN_LUA: Final = """
local found = redis.call('HGET', KEYS[2], ARGV[1])
if found then
  return tonumber(found)
end
local number = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[1], number)
return number
"""

RAISE_LUA: Final = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
  redis.call('SET', KEYS[1], floor)
  return floor
end
return current
"""


def check_series(series: str) -> str:
    """``series`` if it is a valid series name, else ``ValueError``."""
    if not SERIES_PATTERN.fullmatch(series):
        raise ValueError(f"series {series!r} must be 1-32 letters, digits or '_', starting with a letter or digit")
    return series


def _check_year(year: int) -> int:
    if isinstance(year, bool) or not isinstance(year, int) or not 1 <= year <= 9999:
        raise ValueError(f"year {year!r} must be an integer from 1 to 9999")
    return year


def sequence_key(prefix: str, series: str, year: int) -> str:
    """The last number assigned in ``series`` and ``year``."""
    return f"{prefix}docseq:{{{check_series(series)}-{_check_year(year)}}}"


def numbers_key(prefix: str, series: str, year: int) -> str:
    """Document id -> number, for ``series`` and ``year``."""
    return f"{prefix}docno:{{{check_series(series)}-{_check_year(year)}}}"


async def assign_number(redis: RedisClient, *, prefix: str, series: str, year: int, document_id: str) -> int:
    """The number of ``document_id`` in ``series`` and ``year``: the one it was given before, or the next
    of the sequence (1 for the first). Atomic: concurrent callers, in any processes, get consecutive
    numbers, each id one. ``ValueError`` for a bad series, year or empty id; Redis errors propagate (and
    then nothing was assigned, or it was and the same call again returns it)."""
    if not document_id:
        raise ValueError("document id must not be empty")
    keys = [sequence_key(prefix, series, year), numbers_key(prefix, series, year)]
    script: Any = redis.register_script(ASSIGN_LUA)
    return int(await script(keys=keys, args=[document_id]))


async def assign_numbers(
    redis: RedisClient, *, prefix: str, series: str, year: int, document_ids: Sequence[str]
) -> list[int]:
    """``assign_number`` for each of ``document_ids``, in that order, pipelined (``BATCH`` scripts a round
    trip): the numbers, in the same order. Concurrent callers interleave, each id still gets one number."""
    if any(not document_id for document_id in document_ids):
        raise ValueError("document id must not be empty")
    keys = [sequence_key(prefix, series, year), numbers_key(prefix, series, year)]
    found: list[int] = []
    for start in range(0, len(document_ids), BATCH):
        pipe = redis.pipeline(transaction=False)
        for document_id in document_ids[start : start + BATCH]:
            pipe.eval(ASSIGN_LUA, 2, *keys, document_id)
        found.extend(int(number) for number in await pipe.execute())
    return found


async def raise_sequence(redis: RedisClient, *, prefix: str, series: str, year: int, at_least: int) -> int:
    """Make the last number of ``series`` and ``year`` at least ``at_least`` (never lower it); the last
    number after. The next ``assign_number`` for a new id then gives ``at_least + 1`` or more."""
    if isinstance(at_least, bool) or not isinstance(at_least, int) or at_least < 0:
        raise ValueError(f"at_least {at_least!r} must be an integer >= 0")
    script: Any = redis.register_script(RAISE_LUA)
    return int(await script(keys=[sequence_key(prefix, series, year)], args=[at_least]))


async def numbers_assigned(redis: RedisClient, *, prefix: str, series: str, year: int) -> dict[str, int]:
    """Every document id given a number in ``series`` and ``year``, with its number."""
    found = cast(dict[str, str], await redis.hgetall(numbers_key(prefix, series, year)))
    return {document_id: int(number) for document_id, number in found.items()}


def format_number(series: str, year: int, number: int) -> str:
    """``INV-2026-000042``: series, year and the number zero-padded to six digits."""
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"number {number!r} must be a positive integer")
    return f"{check_series(series)}-{_check_year(year)}-{number:0{DIGITS}d}"
