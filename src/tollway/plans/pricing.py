"""Pricing as written in a plan: charges, tiers, minimum commitment, discounts. Schema only.

The billing math (rating usage into invoice lines) is a later issue; these models fix what the
catalog can say. Tier bounds: ``up_to`` is inclusive; a tier covers quantities above the previous
tier's ``up_to`` up to and including its own; the last tier has ``up_to: null`` (no upper bound).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tollway.currencies import MINOR_UNITS
from tollway.periods import INTERVALS, Interval, interval_error
from tollway.plans.fields import Identifier, Money, NonNegativeInt, PositiveInt, StrictModel

_CURRENCY: Final = re.compile(r"[A-Z]{3}")
INVOICE: Final = "invoice"
"""``applies_to`` value for a discount on the whole invoice (reserved: no charge may be called this)."""


class _Charge(StrictModel):
    id: Identifier
    display_name: str | None = None


class FlatCharge(_Charge):
    """A fixed amount per period, billed at its start (``in_advance``) or end (``in_arrears``)."""

    model: Literal["flat"]
    amount: Money
    timing: Literal["in_advance", "in_arrears"] = "in_advance"


class PerUnitCharge(_Charge):
    """quantity × unit_amount."""

    model: Literal["per_unit"]
    meter: Identifier
    unit_amount: Money


class Tier(StrictModel):
    up_to: PositiveInt | None
    unit_amount: Money
    flat_amount: Money = Decimal(0)


class GraduatedCharge(_Charge):
    """Each band of the quantity at its own tier's price; every tier reached adds its flat amount."""

    model: Literal["graduated"]
    meter: Identifier
    tiers: list[Tier] = Field(min_length=1)


class VolumeCharge(_Charge):
    """The whole quantity at the price of the tier it reaches, plus that tier's flat amount."""

    model: Literal["volume"]
    meter: Identifier
    tiers: list[Tier] = Field(min_length=1)


class PackageCharge(_Charge):
    """(quantity − free_units) in packages of ``package_size``, rounded up or down, × package_amount."""

    model: Literal["package"]
    meter: Identifier
    package_size: PositiveInt
    package_amount: Money
    rounding: Literal["up", "down"] = "up"
    free_units: NonNegativeInt = 0


class AllowanceCharge(_Charge):
    """``included`` units per period at no charge; each unit beyond costs overage_unit_amount."""

    model: Literal["allowance"]
    meter: Identifier
    included: NonNegativeInt
    overage_unit_amount: Money


Charge = Annotated[
    FlatCharge | PerUnitCharge | GraduatedCharge | VolumeCharge | PackageCharge | AllowanceCharge,
    Field(discriminator="model"),
]
MeteredCharge = PerUnitCharge | GraduatedCharge | VolumeCharge | PackageCharge | AllowanceCharge
CHARGE_MODELS: Final = ("flat", "per_unit", "graduated", "volume", "package", "allowance")


class Discount(StrictModel):
    """``percent`` off, or a fixed ``amount`` off, the invoice or one charge; for ``periods`` periods if set."""

    id: Identifier
    percent: Money | None = None
    amount: Money | None = None
    applies_to: Identifier = INVOICE
    periods: PositiveInt | None = None

    @field_validator("percent")
    @classmethod
    def _percent(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not Decimal(0) < value <= Decimal(100):
            raise PydanticCustomError("discount_percent", "percent must be above 0 and at most 100")
        return value

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value <= 0:
            raise PydanticCustomError("discount_amount", "amount must be above 0")
        return value

    @model_validator(mode="after")
    def _percent_xor_amount(self) -> Discount:
        if (self.percent is None) == (self.amount is None):
            raise PydanticCustomError("discount_kind", "a discount needs exactly one of `percent` or `amount`")
        return self


def _currency(value: str) -> str:
    if not _CURRENCY.fullmatch(value):
        raise PydanticCustomError("currency", "expected an ISO 4217 currency code: three upper-case letters (USD)")
    if value not in MINOR_UNITS:
        raise PydanticCustomError(
            "currency_unsupported",
            "Tollway cannot bill in {currency}: it rounds only to the minor unit of {known}",
            {"currency": value, "known": ", ".join(sorted(MINOR_UNITS))},
        )
    return value


Currency = Annotated[str, AfterValidator(_currency)]
"""An ISO 4217 code Tollway can bill in (``tollway.currencies``)."""


def _interval(value: object) -> object:
    if isinstance(value, str) and value in INTERVALS:
        return value
    raise PydanticCustomError("interval", "{message}", {"message": interval_error(value)})


PricingInterval = Annotated[Interval, BeforeValidator(_interval)]
"""The length of the period every amount of the pricing is for (``tollway.periods.INTERVALS``)."""


class Pricing(StrictModel):
    currency: Currency
    interval: PricingInterval
    charges: list[Charge] = Field(default_factory=list)
    minimum_commitment: Money | None = None
    discounts: list[Discount] = Field(default_factory=list)
