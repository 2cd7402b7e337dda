"""Billing errors. Each is a ``ValueError`` whose message names the problem, so the CLI prints it as one line."""

from __future__ import annotations


class BillingError(ValueError):
    """Input that cannot be priced: the message says what and why."""


class UnknownCurrency(BillingError):
    """A currency code Tollway has no minor unit for (see ``tollway.billing.money.MINOR_UNITS``)."""

    def __init__(self, currency: str) -> None:
        super().__init__(
            f"unknown currency {currency!r}: Tollway knows the minor unit (decimal places) of "
            "the ISO 4217 codes in tollway.billing.money.MINOR_UNITS (e.g. USD, EUR, JPY, KWD)"
        )
        self.currency = currency


class InvalidQuantity(BillingError):
    """A usage quantity that is not a finite, non-negative ``Decimal`` within the warehouse's range."""


class InvalidPeriod(BillingError):
    """A period fraction outside ``[0, 1]`` or a negative period index."""


class PlanNotPriced(BillingError):
    """The plan has no ``pricing`` section: there is nothing to bill or quote."""

    def __init__(self, plan_id: str) -> None:
        super().__init__(f"plan {plan_id!r} has no pricing: nothing to quote")
        self.plan_id = plan_id


class UnpricedMeter(BillingError):
    """Usage given for a meter that the plan's pricing does not charge for."""

    def __init__(self, plan_id: str, meter: str, priced: tuple[str, ...]) -> None:
        which = ", ".join(priced) if priced else "none"
        super().__init__(f"plan {plan_id!r} does not price meter {meter!r} (meters it prices: {which})")
        self.plan_id = plan_id
        self.meter = meter


class AmountOutOfRange(BillingError):
    """An amount too large to compute exactly (more than ``money.EXACT_DIGITS`` significant digits)."""
