"""Read a meter's quantity from a JSON response body: parse once, then follow a dotted path. Pure.

A ``response_json`` meter names a field such as ``usage.total_tokens`` or ``choices.0.n``: segments are
object keys, and an all-digit segment is also an array index (on an object it is the key ``"0"``).

What counts as a quantity: a JSON number (integer or decimal, exponent allowed) that is finite, ≥ 0,
below 10**29 and with at most 9 decimal places once trailing zeros are dropped — what the usage table's
``Decimal(38, 9)`` column holds exactly. Anything else (a string, ``true``, ``null``, ``NaN``, a negative
or an over-precise number) is not a quantity; it is never rounded, clamped or coerced. Numbers are
parsed straight into ``Decimal`` from their text, never through a binary float.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

MAX_INTEGER_DIGITS: Final = 29
MAX_FRACTION_DIGITS: Final = 9
_UPPER: Final = Decimal(10) ** MAX_INTEGER_DIGITS

Reason = Literal[
    "invalid_json",  # the body is not JSON (syntax, encoding, nesting too deep, empty)
    "missing",  # the path leads nowhere (no such key, index out of range, not a container)
    "not_a_number",  # the field is a string, boolean, null, object, array, NaN or Infinity
    "negative",
    "out_of_range",  # ≥ 10**29
    "too_precise",  # more than 9 decimal places
]


@dataclass(frozen=True, slots=True)
class NotQuantity:
    """Why a body gave no quantity for a field (``reason`` is a fixed label for counters)."""

    reason: Reason
    detail: str


class _NonFinite:
    """``NaN``, ``Infinity`` or ``-Infinity`` in the body: kept as a marker so only a meter that reads it fails."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A parsed dotted path; build with ``FieldPath.parse``."""

    text: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        segments = tuple(text.split("."))
        if not text or any(not s for s in segments):
            raise ValueError(f"{text!r} is not a dotted field path (e.g. usage.total_tokens or choices.0.n)")
        return cls(text, segments)


def parse_body(body: bytes | str) -> object | NotQuantity:
    """The JSON document in ``body`` (numbers as ``Decimal``), or ``NotQuantity('invalid_json')``.

    Never raises for any input: bad UTF-8, truncated text, ``[[[[…`` nested beyond the recursion limit and
    numbers with millions of digits all end up as a value or as the reason.
    """
    try:
        document: object = json.loads(body, parse_float=Decimal, parse_int=Decimal, parse_constant=_NonFinite)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return NotQuantity("invalid_json", _first_line(exc))
    return document


def extract(document: object, path: FieldPath) -> Decimal | NotQuantity:
    """The quantity at ``path`` in a document from ``parse_body``."""
    node = document
    for depth, segment in enumerate(path.segments):
        if isinstance(node, dict):
            if segment not in node:
                return NotQuantity("missing", f"no key {segment!r} at {_where(path, depth)}")
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and segment.isascii():
            index = int(segment)
            if index >= len(node):
                return NotQuantity("missing", f"index {index} beyond {len(node)} items at {_where(path, depth)}")
            node = node[index]
        else:
            return NotQuantity("missing", f"{_kind(node)} at {_where(path, depth)} has no {segment!r}")
    if not isinstance(node, Decimal):
        return NotQuantity("not_a_number", f"{path.text} is {_kind(node)}")
    return _quantity(node, path)


def quantity(body: bytes | str, path: FieldPath) -> Decimal | NotQuantity:
    """``parse_body`` then ``extract``: for one field of one body."""
    document = parse_body(body)
    if isinstance(document, NotQuantity):
        return document
    return extract(document, path)


def format_quantity(value: Decimal) -> str:
    """Canonical text of a quantity from ``extract``: no exponent, no trailing zeros (``"42"``, ``"0.5"``)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _quantity(value: Decimal, path: FieldPath) -> Decimal | NotQuantity:
    if value.is_signed() and not value.is_zero():
        return NotQuantity("negative", f"{path.text} is negative")
    if value >= _UPPER:  # comparisons are exact whatever the exponent
        return NotQuantity("out_of_range", f"{path.text} is not below 10**{MAX_INTEGER_DIGITS}")
    if value.is_zero():
        return Decimal(0)
    # Drop trailing zeros by hand, not with normalize(): a context would round or flush tiny exponents to 0.
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite: NaN and Infinity never reach here
    zeros = 0
    while digits[-1 - zeros] == 0:  # the value is not zero: some digit is not
        zeros += 1
    digits, exponent = digits[: len(digits) - zeros], exponent + zeros
    if -exponent > MAX_FRACTION_DIGITS:
        return NotQuantity("too_precise", f"{path.text} has more than {MAX_FRACTION_DIGITS} decimal places")
    if exponent > 0:  # 1E+3 → 1000: an integer without exponent
        digits, exponent = digits + (0,) * exponent, 0
    return Decimal((0, digits, exponent))


def _where(path: FieldPath, depth: int) -> str:
    return ".".join(path.segments[:depth]) or "the top level"


def _kind(node: object) -> str:
    if isinstance(node, _NonFinite):
        return node.text
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "a boolean"
    if isinstance(node, str):
        return "a string"
    if isinstance(node, dict):
        return "an object"
    if isinstance(node, list):
        return "an array"
    return "a number"


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
