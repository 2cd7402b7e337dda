"""Reading a meter's quantity from a JSON body: paths, types, ranges, exactness, hostile input."""

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.usage.json_field import (
    MAX_FRACTION_DIGITS,
    FieldPath,
    NotQuantity,
    extract,
    format_quantity,
    parse_body,
    quantity,
)

TOKENS = FieldPath.parse("usage.total_tokens")


def reason(result: Decimal | NotQuantity) -> str:
    assert isinstance(result, NotQuantity), f"expected no quantity, got {result!r}"
    return result.reason


def test_nested_field() -> None:
    assert quantity(b'{"usage": {"total_tokens": 1234, "prompt_tokens": 3}}', TOKENS) == Decimal(1234)


@pytest.mark.parametrize(
    ("body", "path", "expected"),
    [
        (b'{"choices": [{"n": 1}, {"n": 2}]}', "choices.1.n", "2"),
        (b'{"choices": [{"x": 7}]}', "choices.0.x", "7"),
        (b"[[1, 2], [3, 4]]", "1.0", "3"),  # a path may start with an index when the body is an array
        (b'{"0": {"1": 5}}', "0.1", "5"),  # an all-digit segment is a key on an object
        (b'{"a": {"b": {"c": {"d": 0.25}}}}', "a.b.c.d", "0.25"),
        (b'{"meta": {"row_count": 42}}', "meta.row_count", "42"),
    ],
)
def test_paths(body: bytes, path: str, expected: str) -> None:
    result = quantity(body, FieldPath.parse(path))
    assert isinstance(result, Decimal)
    assert format_quantity(result) == expected


@pytest.mark.parametrize(
    ("body", "path", "why"),
    [
        (b'{"usage": {}}', "usage.total_tokens", "missing"),
        (b'{"usage": 5}', "usage.total_tokens", "missing"),
        (b'{"usage": null}', "usage.total_tokens", "missing"),
        (b'{"choices": []}', "choices.0.x", "missing"),
        (b'{"choices": [{"x": 1}]}', "choices.1.x", "missing"),
        (b'{"choices": {"x": 1}}', "choices.0", "missing"),
        (b'{"choices": [1]}', "choices.x", "missing"),
        (b'{"choices": [1]}', "choices.\xd9\xa1", "missing"),  # a non-ASCII digit is no index
        (b'{"usage": {"total_tokens": "1234"}}', "usage.total_tokens", "not_a_number"),
        (b'{"usage": {"total_tokens": true}}', "usage.total_tokens", "not_a_number"),
        (b'{"usage": {"total_tokens": false}}', "usage.total_tokens", "not_a_number"),
        (b'{"usage": {"total_tokens": null}}', "usage.total_tokens", "not_a_number"),
        (b'{"usage": {"total_tokens": [1]}}', "usage.total_tokens", "not_a_number"),
        (b'{"usage": {"total_tokens": {"n": 1}}}', "usage.total_tokens", "not_a_number"),
        (b'{"usage": {"total_tokens": NaN}}', "usage.total_tokens", "not_a_number"),
        (b'{"usage": {"total_tokens": Infinity}}', "usage.total_tokens", "not_a_number"),
        (b'{"usage": {"total_tokens": -Infinity}}', "usage.total_tokens", "not_a_number"),
        (b'{"usage": {"total_tokens": -1}}', "usage.total_tokens", "negative"),
        (b'{"usage": {"total_tokens": -0.001}}', "usage.total_tokens", "negative"),
        (b'{"usage": {"total_tokens": 1e29}}', "usage.total_tokens", "out_of_range"),
        (b'{"usage": {"total_tokens": 1e999999999}}', "usage.total_tokens", "out_of_range"),
        (b'{"usage": {"total_tokens": 0.0000000001}}', "usage.total_tokens", "too_precise"),
        (b'{"usage": {"total_tokens": 1e-999999999}}', "usage.total_tokens", "too_precise"),
        (b'{"usage": {"total_tokens": 12', "usage.total_tokens", "invalid_json"),
        (b"", "usage.total_tokens", "invalid_json"),
        (b"<html>502 Bad Gateway</html>", "usage.total_tokens", "invalid_json"),
        (b'{"usage": {"total_tokens": 1}} trailing', "usage.total_tokens", "invalid_json"),
        (b'{"a": "\xff\xfe"}', "a", "invalid_json"),  # not UTF-8
        (b"[" * 200_000 + b"]" * 200_000, "a", "invalid_json"),  # deeper than the recursion limit
    ],
)
def test_no_quantity(body: bytes, path: str, why: str) -> None:
    assert reason(quantity(body, FieldPath.parse(path))) == why


def test_a_nan_elsewhere_does_not_spoil_the_field() -> None:
    assert quantity(b'{"score": NaN, "usage": {"total_tokens": 3}}', TOKENS) == Decimal(3)


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("0", "0"),
        ("-0", "0"),
        ("-0.0", "0"),
        ("0.000", "0"),
        ("42", "42"),
        ("42.0", "42"),
        ("1.50", "1.5"),
        ("1e3", "1000"),
        ("1E+3", "1000"),
        ("2.5e-3", "0.0025"),
        ("0.1", "0.1"),
        ("0.123456789", "0.123456789"),
        ("1.0000000000000", "1"),  # trailing zeros beyond 9 places are not precision
        ("99999999999999999999999999999", "99999999999999999999999999999"),  # 29 digits: the largest
        ("12345678901234567890.123456789", "12345678901234567890.123456789"),  # 29 + 9 digits, exact
        ("18446744073709551616", "18446744073709551616"),  # 2**64: beyond int64, still exact
    ],
)
def test_numbers_are_exact(number: str, expected: str) -> None:
    result = quantity(f'{{"usage": {{"total_tokens": {number}}}}}', TOKENS)
    assert isinstance(result, Decimal)
    assert format_quantity(result) == expected
    assert result == Decimal(expected)


def test_never_a_binary_float() -> None:
    result = quantity(b'{"usage": {"total_tokens": 0.1}}', TOKENS)
    assert result == Decimal("0.1")
    assert result != Decimal(float("0.1"))  # what json's float parsing would have produced


def test_a_number_with_many_digits_is_refused_not_truncated() -> None:
    huge = "9" * 5000  # beyond Python's default int-from-text digit limit (4300)
    assert reason(quantity(f'{{"usage": {{"total_tokens": {huge}}}}}', TOKENS)) == "out_of_range"
    tiny = "0." + "0" * 4999 + "1"
    assert reason(quantity(f'{{"usage": {{"total_tokens": {tiny}}}}}', TOKENS)) == "too_precise"


def test_one_parse_serves_several_fields() -> None:
    document = parse_body(b'{"usage": {"total_tokens": 10, "prompt_tokens": 4}, "meta": {"rows": 2}}')
    assert not isinstance(document, NotQuantity)
    assert extract(document, TOKENS) == Decimal(10)
    assert extract(document, FieldPath.parse("usage.prompt_tokens")) == Decimal(4)
    assert reason(extract(document, FieldPath.parse("meta.cols"))) == "missing"


def test_str_bodies_and_other_encodings() -> None:
    assert quantity('{"usage": {"total_tokens": 5}}', TOKENS) == Decimal(5)
    assert quantity(b'\xef\xbb\xbf{"usage": {"total_tokens": 5}}', TOKENS) == Decimal(5)  # UTF-8 with a BOM
    assert quantity('{"usage": {"total_tokens": 5}}'.encode("utf-16"), TOKENS) == Decimal(5)


@pytest.mark.parametrize("text", ["", ".", "a.", ".a", "a..b"])
def test_bad_paths(text: str) -> None:
    with pytest.raises(ValueError, match="dotted field path"):
        FieldPath.parse(text)


def test_reasons_carry_a_detail() -> None:
    result = quantity(b'{"usage": {"prompt_tokens": 1}}', TOKENS)
    assert isinstance(result, NotQuantity)
    assert "total_tokens" in result.detail
    assert "usage" in result.detail


# --- properties ---------------------------------------------------------------------------------------

LARGEST = Decimal("9" * 29 + "." + "9" * MAX_FRACTION_DIGITS)
quantities = st.decimals(min_value=0, max_value=LARGEST, places=MAX_FRACTION_DIGITS, allow_nan=False)


@given(quantities)
def test_any_valid_quantity_round_trips_exactly(value: Decimal) -> None:
    body = json.dumps({"usage": {"total_tokens": "PLACEHOLDER"}}).replace('"PLACEHOLDER"', str(value))
    result = quantity(body, TOKENS)
    assert isinstance(result, Decimal)
    assert result == value
    text = format_quantity(result)
    assert Decimal(text) == value
    assert "E" not in text.upper()
    assert "." not in text or not text.endswith(("0", "."))


def test_the_largest_quantity() -> None:
    result = quantity(f'{{"n": {LARGEST}}}', FieldPath.parse("n"))
    assert isinstance(result, Decimal)
    assert format_quantity(result) == str(LARGEST)


@given(st.integers(min_value=0, max_value=10**29 - 1))
def test_any_integer_in_range_is_exact(value: int) -> None:
    result = quantity(json.dumps({"usage": {"total_tokens": value}}), TOKENS)
    assert result == Decimal(value)
    assert isinstance(result, Decimal)
    assert format_quantity(result) == str(value)


@given(st.integers(min_value=1, max_value=10**40))
def test_negative_numbers_are_refused(value: int) -> None:
    assert reason(quantity(json.dumps({"usage": {"total_tokens": -value}}), TOKENS)) == "negative"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@given(json_values, st.sampled_from(["usage.total_tokens", "0", "a.0.b", "usage"]))
def test_any_json_document_gives_a_quantity_or_a_reason(document: object, path: str) -> None:
    result = quantity(json.dumps(document), FieldPath.parse(path))
    assert isinstance(result, Decimal | NotQuantity)
    if isinstance(result, Decimal):
        assert result.is_finite()
        assert result >= 0


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(body: bytes) -> None:
    assert isinstance(quantity(body, TOKENS), Decimal | NotQuantity)


@given(st.text(max_size=200))
def test_truncations_of_a_valid_body_never_raise(tail: str) -> None:
    full = json.dumps({"usage": {"total_tokens": 1234}, "pad": tail}).encode()
    for end in range(0, len(full), 7):
        assert isinstance(quantity(full[:end], TOKENS), NotQuantity)
