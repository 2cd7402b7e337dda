"""Catalog pricing objects for the billing tests, built through the catalog's own models (so money is
validated exactly as the loader validates it)."""

from pathlib import Path
from typing import Any

from tollway.plans.pricing import (
    AllowanceCharge,
    Discount,
    FlatCharge,
    GraduatedCharge,
    PackageCharge,
    PerUnitCharge,
    Pricing,
    VolumeCharge,
)

STRIPE_CATALOG = Path(__file__).parents[2] / "fixtures" / "billing" / "stripe.yaml"
STRIPE_TIERS: list[dict[str, Any]] = [
    {"up_to": 5, "unit_amount": "7.00"},
    {"up_to": 10, "unit_amount": "6.50"},
    {"up_to": None, "unit_amount": "6.00"},
]


def flat(amount: str = "49.00", timing: str = "in_advance", id: str = "platform") -> FlatCharge:
    return FlatCharge.model_validate({"id": id, "model": "flat", "amount": amount, "timing": timing})


def per_unit(unit_amount: str, meter: str = "requests", id: str = "calls") -> PerUnitCharge:
    return PerUnitCharge.model_validate({"id": id, "model": "per_unit", "meter": meter, "unit_amount": unit_amount})


def graduated(tiers: list[dict[str, Any]] = STRIPE_TIERS, meter: str = "units", id: str = "units") -> GraduatedCharge:
    return GraduatedCharge.model_validate({"id": id, "model": "graduated", "meter": meter, "tiers": tiers})


def volume(tiers: list[dict[str, Any]] = STRIPE_TIERS, meter: str = "units", id: str = "units") -> VolumeCharge:
    return VolumeCharge.model_validate({"id": id, "model": "volume", "meter": meter, "tiers": tiers})


def package(
    size: int, amount: str, rounding: str = "up", free_units: int = 0, meter: str = "search", id: str = "search"
) -> PackageCharge:
    return PackageCharge.model_validate(
        {
            "id": id,
            "model": "package",
            "meter": meter,
            "package_size": size,
            "package_amount": amount,
            "rounding": rounding,
            "free_units": free_units,
        }
    )


def allowance(included: int, overage: str, meter: str = "egress", id: str = "egress") -> AllowanceCharge:
    return AllowanceCharge.model_validate(
        {"id": id, "model": "allowance", "meter": meter, "included": included, "overage_unit_amount": overage}
    )


def discount(id: str = "promo", **fields: Any) -> Discount:
    return Discount.model_validate({"id": id, **fields})


def pricing(*charges: Any, currency: str = "USD", **fields: Any) -> Pricing:
    return Pricing.model_validate(
        {
            "currency": currency,
            "interval": "month",
            "charges": [c.model_dump(mode="json") for c in charges],
            **{k: [d.model_dump(mode="json") for d in v] if k == "discounts" else v for k, v in fields.items()},
        }
    )
