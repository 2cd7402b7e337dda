"""Money at the gateway as a catalog writes it: credit units, prepaid plans and spend caps. Schema only.

Rules that span objects (a prepaid plan's unit must be its currency or a credit unit in it, its charges
must exist and be able to burn in real time, every real-time price must be exact in micro-units of the
balance unit) live in ``plans.realtime`` so each can point at the node at fault.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final

from pydantic import AfterValidator, Field, SerializerFunctionWrapHandler, StrictInt, field_validator, model_serializer
from pydantic_core import PydanticCustomError

from tollway.credits.units import MAX_AMOUNT, PLACES
from tollway.notifications.thresholds import MAX_ALERTS
from tollway.plans.fields import Identifier, Money, StrictModel
from tollway.plans.pricing import Currency

MAX_CREDIT_DECIMALS: Final = PLACES
"""A credit unit's grants have at most this many decimal places (a micro-unit is the finest amount)."""


def _at_most_max(value: Decimal) -> Decimal:
    if value > MAX_AMOUNT:
        raise PydanticCustomError("amount_max", "must be at most {max}", {"max": str(MAX_AMOUNT)})
    return value


def _above_zero(value: Decimal) -> Decimal:
    if value <= 0:
        raise PydanticCustomError("amount_zero", "must be above 0")
    return _at_most_max(value)


class CreditUnit(StrictModel):
    """A unit customers prepay in: one unit is worth ``value`` of ``currency``; grants of it have at most
    ``decimals`` places (0: whole credits only)."""

    value: Money
    currency: Currency
    decimals: int = Field(ge=0, le=MAX_CREDIT_DECIMALS)
    description: str | None = None

    @field_validator("value")
    @classmethod
    def _value(cls, value: Decimal) -> Decimal:
        return _above_zero(value)


class Prepaid(StrictModel):
    """The plan's real-time charges burn a balance at admission. ``unit``: the plan's currency code or a
    credit unit name. ``charges``: the charge ids that burn (default: every charge of the plan that can
    burn at admission). ``overrun``: how far, in ``unit``, a settlement may take the balance below 0.
    ``reserve``: per meter known only after the response (``response_bytes``, ``response_json``), the
    quantity a request reserves at admission (a whole number above 0); a charge over such a meter then
    burns in real time by reservation, settled with the actual quantity (docs/credits.md#reservations)."""

    unit: str = Field(min_length=1)
    charges: list[Identifier] | None = Field(default=None, min_length=1)
    overrun: Money = Decimal(0)
    reserve: dict[Identifier, Annotated[StrictInt, Field(ge=1)]] | None = Field(default=None, min_length=1)
    # balance.low thresholds in ``unit`` (each above 0, at most the unit's places: plans.realtime).
    alerts: list[Annotated[Money, AfterValidator(_above_zero)]] | None = Field(
        default=None, min_length=1, max_length=MAX_ALERTS
    )

    @model_serializer(mode="wrap")
    def _without_unset_reserve(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # A prepaid plan without reserves (or alerts) keeps the digest it had before they existed.
        data: dict[str, object] = handler(self)
        if self.reserve is None:
            data.pop("reserve", None)
        if self.alerts is None:
            data.pop("alerts", None)
        return data

    @field_validator("alerts")
    @classmethod
    def _alerts(cls, value: list[Decimal] | None) -> list[Decimal] | None:
        if value is not None and len(set(value)) != len(value):
            raise PydanticCustomError("alerts_repeated", "a balance alert is listed twice")
        return value

    @field_validator("overrun")
    @classmethod
    def _overrun(cls, value: Decimal) -> Decimal:
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and exponent < -PLACES:
            raise PydanticCustomError("overrun_places", "must have at most {places} decimal places", {"places": PLACES})
        return _at_most_max(value)


class SpendCap(StrictModel):
    """At most ``amount`` of the plan's currency of real-time charges per billing period; ``soft``: admit
    past it and mark the requests (``x-tollway-overage``)."""

    amount: Money
    soft: bool = False

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: Decimal) -> Decimal:
        return _above_zero(value)


__all__ = ["MAX_CREDIT_DECIMALS", "CreditUnit", "Prepaid", "SpendCap"]
