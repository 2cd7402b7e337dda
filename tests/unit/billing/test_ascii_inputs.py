"""Every parser of a number, date or period a user types accepts ASCII digits only (issue 13, item 13).

Python's ``int()`` and regex ``\\d`` accept any Unicode decimal digit (``٢٠٢٦``, ``２０２６``), so
``--period ٢٠٢٦-١١`` used to bill November 2026. Each parser is tried with its valid input rewritten
in another script's digits: each must refuse it."""

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.admin.audit import STREAM_ID
from tollway.admin.instants import _rfc3339
from tollway.admin.page_links import PageLinkSigner
from tollway.admin.pagination import decode_offset, encode_cursor
from tollway.admin.problems import ProblemError
from tollway.billing.invoices import InvalidBillingPeriod, parse_month
from tollway.cli.durations import parse_duration, parse_instant
from tollway.cli.main import build_parser, os_error_message
from tollway.cli.numbers import ascii_int
from tollway.cli.subscriptions import parse_overrides
from tollway.plans.schema import parse_window
from tollway.warehouse.migrations import _FILE_NAME

NOW = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
# Decimal digits of other scripts: Arabic-Indic, Extended Arabic-Indic, Devanagari, Fullwidth, Bengali, Thai.
ZEROS = (0x0660, 0x06F0, 0x0966, 0xFF10, 0x09E6, 0x0E50)


def foreign(text: str, zero: int, mask: int) -> str:
    """``text`` with the ASCII digits selected by ``mask`` (bit i: i-th digit) in the script of ``zero``."""
    out, position = [], 0
    for char in text:
        if char.isascii() and char.isdigit():
            out.append(chr(zero + int(char)) if mask >> position & 1 else char)
            position += 1
        else:
            out.append(char)
    return "".join(out)


def _refuses(parse: Callable[[str], Any]) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        try:
            result = parse(text)
        except (ValueError, InvalidBillingPeriod, ProblemError, argparse.ArgumentTypeError):
            return True
        return result is None or result is False

    return check


SIGNER = PageLinkSigner(b"k" * 32)
TOKEN = SIGNER.sign("acme", datetime(2027, 1, 1, tzinfo=UTC))

# (name, a valid input, the parser: refuses → truthy from the check)
PARSERS: list[tuple[str, str, Callable[[str], bool]]] = [
    ("bill --period", "2026-11", _refuses(lambda t: parse_month(t, NOW))),
    ("durations", "1h30m", _refuses(parse_duration)),
    ("--expires instant", "2027-01-31T00:00:00Z", _refuses(lambda t: parse_instant(t, NOW))),
    ("--override", "requests_per_minute=600", _refuses(lambda t: parse_overrides([t]))),
    ("catalog window", "1h30m", _refuses(parse_window)),
    ("admin instant", "2026-11-01T00:00:00Z", _refuses(_rfc3339)),
    ("usage page token", TOKEN, _refuses(lambda t: SIGNER.verify("acme", t, NOW))),
    ("audit cursor", "1700000000000-0", _refuses(STREAM_ID.fullmatch)),
    ("page cursor", "12", _refuses(lambda t: decode_offset(encode_cursor([t])))),
    ("migration file", "0005_x.sql", _refuses(_FILE_NAME.fullmatch)),
    ("--http-port and other whole numbers", "8080", _refuses(ascii_int)),
]


@pytest.mark.parametrize(("name", "valid", "refuses"), PARSERS, ids=[p[0] for p in PARSERS])
def test_the_valid_input_is_accepted(name: str, valid: str, refuses: Callable[[str], bool]) -> None:
    assert not refuses(valid), name


@pytest.mark.parametrize(("name", "valid", "refuses"), PARSERS, ids=[p[0] for p in PARSERS])
@given(zero=st.sampled_from(ZEROS), mask=st.integers(min_value=1, max_value=2**20 - 1))
def test_non_ascii_digits_are_refused(
    name: str, valid: str, refuses: Callable[[str], bool], zero: int, mask: int
) -> None:
    digits = sum(1 for c in valid if c.isascii() and c.isdigit())
    mask &= (1 << digits) - 1
    if mask == 0:
        mask = 1
    assert refuses(foreign(valid, zero, mask)), (name, foreign(valid, zero, mask))


def test_the_reported_period() -> None:
    with pytest.raises(InvalidBillingPeriod, match="YYYY-MM"):
        parse_month("٢٠٢٦-١١", NOW)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--http-port", "٨٠٨٠"],
        ["serve", "--workers", "٢"],
        ["meter", "--metering-port", "９０００"],
        ["admin", "serve", "--port", "٩١٩٥"],
    ],
)
def test_numeric_options_refuse_other_digits(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert "ASCII digits" in capsys.readouterr().err


def test_an_os_error_names_its_path_and_never_blames_redis() -> None:
    error = FileExistsError(17, "File exists", "invoices")
    assert os_error_message(error) == "cannot use invoices: File exists"
    assert os_error_message(OSError(28, "No space left on device")) == "[Errno 28] No space left on device"
