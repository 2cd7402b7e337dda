"""The seller an invoice names, from ``TOLLWAY_SELLER_*`` settings; read when invoices are finalized
(``tollway bill --finalize`` and ``--progressive``), which refuse to run without it.

=====================================  ===========================================================
``TOLLWAY_SELLER_NAME``                the seller's legal name (required to finalize)
``TOLLWAY_SELLER_ADDRESS``             address lines: a JSON list (``["Main St 1", "Berlin"]``) or one
                                       line per line of the value
``TOLLWAY_SELLER_COUNTRY``             ISO 3166-1 alpha-2 (``DE``)
``TOLLWAY_SELLER_TAX_ID``              e.g. a VAT id
``TOLLWAY_SELLER_EMAIL``               where buyers write to
``TOLLWAY_SELLER_TIMEZONE``            the IANA zone issue and due dates are in (default ``UTC``)
``TOLLWAY_SELLER_PAYMENT_TERMS_DAYS``  days from issue to due date (default 30; a customer record's
                                       ``billing.payment_terms_days`` replaces it)
``TOLLWAY_SELLER_NUMBER_PREFIX``       the invoice number series (default ``INV``: ``INV-2026-000001``)
=====================================  ===========================================================

``load_seller`` reports every bad setting at once, in one line (``SellerNotConfigured``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tollway.billing.errors import BillingError
from tollway.billing.numbering import check_series
from tollway.parties import (
    NAME_MAX,
    TAX_ID_MAX,
    Party,
    check_address,
    check_country,
    check_email,
    check_payment_terms,
    check_text,
)

ENV_PREFIX = "TOLLWAY_SELLER_"


class SellerNotConfigured(BillingError):
    """No seller, or a bad seller setting: the message names every one."""


class SellerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=None, extra="ignore")

    name: str = Field(default="", validate_default=True)
    address: Annotated[tuple[str, ...], NoDecode] = ()
    country: str | None = None
    tax_id: str | None = None
    email: str | None = None
    timezone: str = "UTC"
    payment_terms_days: int = 30
    number_prefix: str = "INV"

    @field_validator("country", "tax_id", "email", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is not set")
        return check_text(value, "the name", NAME_MAX)

    @field_validator("address", mode="before")
    @classmethod
    def _lines(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                lines: Any = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list of lines: {exc.msg} at column {exc.colno}") from None
            if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
                raise ValueError("a JSON list of lines must hold strings only")
            return tuple(lines)
        return tuple(line.strip() for line in text.splitlines() if line.strip())

    @field_validator("address")
    @classmethod
    def _address(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_address(value)

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        return None if value is None else check_country(value)

    @field_validator("tax_id")
    @classmethod
    def _tax_id(cls, value: str | None) -> str | None:
        return None if value is None else check_text(value, "the tax id", TAX_ID_MAX)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else check_email(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Berlin or UTC") from None
        return value

    @field_validator("payment_terms_days")
    @classmethod
    def _terms(cls, value: int) -> int:
        return check_payment_terms(value)

    @field_validator("number_prefix")
    @classmethod
    def _series(cls, value: str) -> str:
        return check_series(value)


@dataclass(frozen=True, slots=True)
class Seller:
    """Who issues the invoices, the zone their dates are in, the default payment terms and the series."""

    party: Party
    timezone: str = "UTC"
    payment_terms_days: int = 30
    series: str = "INV"


def _problem(error: Any) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    separator = " " if message == "is not set" else ": "
    return f"{ENV_PREFIX}{field.upper()}{separator}{message}"


def load_seller() -> Seller:
    """The seller from the environment; ``SellerNotConfigured`` naming every bad setting (and a missing
    ``TOLLWAY_SELLER_NAME``) at once."""
    try:
        settings = SellerSettings()
    except ValidationError as exc:
        problems = "; ".join(_problem(error) for error in exc.errors())
        raise SellerNotConfigured(
            f"the seller is not configured for finalizing invoices ({problems}): set TOLLWAY_SELLER_NAME and "
            "valid TOLLWAY_SELLER_* settings (docs/operations.md)"
        ) from None
    party = Party(settings.name, settings.address, settings.country, settings.tax_id, settings.email)
    return Seller(party, settings.timezone, settings.payment_terms_days, settings.number_prefix)


def seller_timezone() -> str:
    """The seller's time zone (``TOLLWAY_SELLER_TIMEZONE``), where credit notes take their issue date;
    UTC where the seller is not configured (no invoice could have been finalized, so none credited)."""
    try:
        return load_seller().timezone
    except SellerNotConfigured:
        return "UTC"
