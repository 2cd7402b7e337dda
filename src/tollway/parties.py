"""The parties of an invoice: who sells (from configuration, ``billing.seller``) and who buys (from the
customer record, ``customers``), with the rules their fields follow wherever they are entered (the
admin API, the seller settings), so both sides accept and refuse the same values.

A party as it appears in an invoice document (``Party.as_dict``) is an object of strings: ``name``,
``address`` (a list of lines), ``country`` (ISO 3166-1 alpha-2), ``tax_id``, ``email``; missing ones are
omitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

NAME_MAX: Final = 200
ADDRESS_LINES_MAX: Final = 6
ADDRESS_LINE_MAX: Final = 200
TAX_ID_MAX: Final = 64
EMAIL_MAX: Final = 254
PAYMENT_TERMS_MAX_DAYS: Final = 365

TEXT: Final = r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"
"""One line of text: no control characters (no line breaks), not only spaces."""
COUNTRY: Final = r"^[A-Z]{2}$"
"""An ISO 3166-1 alpha-2 code, upper case: ``DE``, ``US``."""
EMAIL: Final = r"^[^@\s]{1,64}@[^@\s]{1,189}$"

_TEXT = re.compile(TEXT)
_COUNTRY = re.compile(COUNTRY)
_EMAIL = re.compile(EMAIL)


def check_text(value: str, what: str, limit: int) -> str:
    if len(value) > limit or not _TEXT.fullmatch(value):
        raise ValueError(f"{what} must be 1-{limit} characters on one line, not only spaces")
    return value


def check_country(value: str) -> str:
    if not _COUNTRY.fullmatch(value):
        raise ValueError(f"country {value!r} must be an ISO 3166-1 alpha-2 code in upper case, e.g. DE or US")
    return value


def check_email(value: str) -> str:
    if len(value) > EMAIL_MAX or not _EMAIL.fullmatch(value):
        raise ValueError(f"email {value!r} must look like name@example.com (up to {EMAIL_MAX} characters)")
    return value


def check_address(lines: tuple[str, ...]) -> tuple[str, ...]:
    if len(lines) > ADDRESS_LINES_MAX:
        raise ValueError(f"an address has at most {ADDRESS_LINES_MAX} lines, not {len(lines)}")
    for line in lines:
        check_text(line, "each address line", ADDRESS_LINE_MAX)
    return lines


def check_payment_terms(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= PAYMENT_TERMS_MAX_DAYS:
        raise ValueError(f"payment terms must be a whole number of days from 0 to {PAYMENT_TERMS_MAX_DAYS}")
    return days


@dataclass(frozen=True, slots=True)
class Party:
    """A seller or a buyer as an invoice names it."""

    name: str
    address: tuple[str, ...] = ()
    country: str | None = None
    tax_id: str | None = None
    email: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The document's object: the fields the party has (``address`` only when it has lines)."""
        found: dict[str, Any] = {"name": self.name}
        if self.address:
            found["address"] = list(self.address)
        for key, value in (("country", self.country), ("tax_id", self.tax_id), ("email", self.email)):
            if value is not None:
                found[key] = value
        return found
