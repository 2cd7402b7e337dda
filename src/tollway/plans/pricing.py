"""Pricing as written in a plan: charges, tiers, minimum commitment, discounts. Schema only.

The billing math lives in ``tollway.billing``; these models fix what the catalog can say. Tier bounds:
``up_to`` is inclusive; a tier covers quantities above the previous tier's ``up_to`` up to and including
its own; the last tier has ``up_to: null`` (no upper bound). A bound is a whole number (``1000``) or a
decimal (``0.5``, for a meter counted in fractions such as GB).

Per-charge options (docs/billing.md, "Per-charge options"): ``minimum_amount`` / ``maximum_amount`` on a
metered charge, ``flat_fee_at_zero`` on a tiered charge; ``rounding`` on a plan's pricing (or for the
whole catalog or a currency, ``schema.Catalog.rounding``). Every option left out prices as before it
existed, and a catalog that writes none of them keeps its digest (the serializers drop them).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tollway.currencies import MINOR_UNITS
from tollway.periods import INTERVALS, Interval, interval_error
from tollway.plans.fields import Identifier, Money, NonNegativeInt, PositiveInt, StrictModel

_CURRENCY: Final = re.compile(r"[A-Z]{3}")
INVOICE: Final = "invoice"
"""``applies_to`` value for a discount on the whole invoice (reserved: no charge may be called this)."""

RoundingMode = Literal["half_even", "half_up"]
"""How an invoice line is rounded to the currency's minor unit: ``half_even`` (banker's rounding, the
default) or ``half_up`` (a tie goes away from zero: 0.005 → 0.01, as Flexprice and OpenMeter round)."""
DEFAULT_ROUNDING: Final[RoundingMode] = "half_even"

_BOUND_TEXT: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
BOUND_MAX_PLACES: Final = 9
"""A tier bound has at most 9 decimal places, the places a quantity can have (``billing.quantity``)."""


def _tier_bound(value: object) -> object:
    """``up_to``: None, a whole number ≥ 1 (kept an ``int``) or a decimal above 0 (``0.5``, ``"0.5"``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise PydanticCustomError("tier_bound", "expected a number above 0, or null for the last tier")
    if isinstance(value, int):
        if value < 1:
            raise PydanticCustomError("tier_bound", "must be above 0")
        return value
    if isinstance(value, float):  # only from data built in Python: the YAML loader turns floats into Decimal
        raise PydanticCustomError("tier_bound", 'a tier bound must not be a binary float: write it as "0.5"')
    if isinstance(value, str):
        if not _BOUND_TEXT.fullmatch(value):
            raise PydanticCustomError("tier_bound", 'a tier bound is a plain decimal such as 1000 or "0.5"')
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise PydanticCustomError("tier_bound", "expected a number above 0, or null for the last tier")
    if not value.is_finite() or value <= 0:
        raise PydanticCustomError("tier_bound", "must be above 0")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -BOUND_MAX_PLACES:
        raise PydanticCustomError(
            "tier_bound", f"a tier bound has at most {BOUND_MAX_PLACES} decimal places (a quantity has no more)"
        )
    return value


TierBound = Annotated[int | Decimal | None, BeforeValidator(_tier_bound)]
"""``up_to``: an ``int`` as before, or a ``Decimal`` for a fractional bound (``0.5``)."""


def _drop_defaults(data: dict[str, object], model: object, names: tuple[str, ...]) -> dict[str, object]:
    """``data`` without the options ``model`` leaves at their defaults (None or False), so a catalog that
    does not use them keeps the digest it had before they existed."""
    for name in names:
        value = getattr(model, name)
        if value is None or value is False:  # not ``in (None, False)``: Decimal(0) == False
            data.pop(name, None)
    return data


_SPEND_OPTIONS: Final = ("minimum_amount", "maximum_amount", "flat_fee_at_zero")


class _Charge(StrictModel):
    id: Identifier
    display_name: str | None = None

    @model_serializer(mode="wrap")
    def _without_unset_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return _drop_defaults(handler(self), self, tuple(n for n in _SPEND_OPTIONS if hasattr(self, n)))


class _Metered(_Charge):
    """A usage charge may have a spend floor and ceiling per period, prorated like a flat fee
    (``billing.charges.spend``): the charge's amount is lifted to ``minimum_amount`` and cut to
    ``maximum_amount``, each as its own breakdown step. ``checks`` refuses a minimum above the maximum."""

    minimum_amount: Money | None = None
    maximum_amount: Money | None = None


class FlatCharge(_Charge):
    """A fixed amount per period, billed at its start (``in_advance``) or end (``in_arrears``)."""

    model: Literal["flat"]
    amount: Money
    timing: Literal["in_advance", "in_arrears"] = "in_advance"


class PerUnitCharge(_Metered):
    """quantity × unit_amount."""

    model: Literal["per_unit"]
    meter: Identifier
    unit_amount: Money


class Tier(StrictModel):
    up_to: TierBound
    unit_amount: Money
    flat_amount: Money = Decimal(0)


class GraduatedCharge(_Metered):
    """Each band of the quantity at its own tier's price; every tier reached adds its flat amount.
    ``flat_fee_at_zero``: a quantity of 0 still pays the first tier's flat amount (default: it reaches
    no tier and pays nothing)."""

    model: Literal["graduated"]
    meter: Identifier
    tiers: list[Tier] = Field(min_length=1)
    flat_fee_at_zero: bool = False


class VolumeCharge(_Metered):
    """The whole quantity at the price of the tier it reaches, plus that tier's flat amount.
    ``flat_fee_at_zero``: a quantity of 0 pays the first tier's flat amount (default: nothing)."""

    model: Literal["volume"]
    meter: Identifier
    tiers: list[Tier] = Field(min_length=1)
    flat_fee_at_zero: bool = False


class PackageCharge(_Metered):
    """(quantity − free_units) in packages of ``package_size``, rounded up or down, × package_amount."""

    model: Literal["package"]
    meter: Identifier
    package_size: PositiveInt
    package_amount: Money
    rounding: Literal["up", "down"] = "up"
    free_units: NonNegativeInt = 0


class AllowanceCharge(_Metered):
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


class Coupon(StrictModel):
    """A fixed ``amount`` each subscriber of the plan may use up across invoices: each invoice takes what
    it can (at most its amount due), the rest carries to the next one until none is left, or until the
    subscription's first ``periods`` periods are over (then the rest expires). ``currency``, when
    written, must be the plan's (a check, not a conversion). Applied by ``billing.coupons``."""

    id: Identifier
    amount: Money
    currency: Currency | None = None
    periods: PositiveInt | None = None

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise PydanticCustomError("coupon_amount", "a coupon's amount must be above 0")
        return value


class ProgressiveBilling(StrictModel):
    """Issue an interim invoice mid-period once what the period owes so far and no invoice has billed
    yet reaches ``threshold`` (``tollway bill --progressive``; docs/billing.md). ``currency``, when
    written, must be the plan's."""

    threshold: Money
    currency: Currency | None = None

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: Decimal) -> Decimal:
        if value <= 0:
            raise PydanticCustomError("progressive_threshold", "the progressive billing threshold must be above 0")
        return value


def _interval(value: object) -> object:
    if isinstance(value, str) and value in INTERVALS:
        return value
    raise PydanticCustomError("interval", "{message}", {"message": interval_error(value)})


PricingInterval = Annotated[Interval, BeforeValidator(_interval)]
"""The length of the period every amount of the pricing is for (``tollway.periods.INTERVALS``)."""


class Pricing(StrictModel):
    """``rounding``: how this plan's invoice lines are rounded; None (not written) takes the catalog's
    ``rounding`` for the currency, else ``half_even`` (``effective_rounding``)."""

    currency: Currency
    interval: PricingInterval
    charges: list[Charge] = Field(default_factory=list)
    minimum_commitment: Money | None = None
    discounts: list[Discount] = Field(default_factory=list)
    rounding: RoundingMode | None = None
    coupons: list[Coupon] = Field(default_factory=list)
    progressive_billing: ProgressiveBilling | None = None

    @model_serializer(mode="wrap")
    def _without_unset_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # Pricing without these options keeps the catalog digest it had before they existed.
        data = _drop_defaults(handler(self), self, ("rounding", "progressive_billing"))
        if not self.coupons:
            data.pop("coupons", None)
        return data

    @property
    def effective_rounding(self) -> RoundingMode:
        return self.rounding or DEFAULT_ROUNDING
