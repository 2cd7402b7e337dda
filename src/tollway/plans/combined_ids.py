"""The id of a base plan combined with add-ons: ``pro@2+boost*2+sso`` (``plans.addons``). Pure, no imports.

A subscription holding add-ons is entitled by the combination of its plan and the add-ons it holds at
the moment, which the compiled catalog builds once per id and looks up like any plan. ``+`` and ``*``
cannot appear in a plan id (``check_identifier``), so a combined id never collides with a plan's; the
add-ons are sorted by id and a quantity of 1 is left out, so one combination has one id.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

PLUS: Final = "+"
TIMES: Final = "*"


def combined_plan_id(plan_id: str, addons: Iterable[tuple[str, int]]) -> str:
    """``plan_id`` alone without add-ons, else ``plan+addon*quantity+…`` (sorted; quantities summed per add-on)."""
    totals: dict[str, int] = {}
    for addon_id, quantity in addons:
        totals[addon_id] = totals.get(addon_id, 0) + quantity
    if not totals:
        return plan_id
    held = (addon if quantity == 1 else f"{addon}{TIMES}{quantity}" for addon, quantity in sorted(totals.items()))
    return PLUS.join((plan_id, *held))


def split_combined_id(text: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    """``pro+boost*2`` → ``("pro", (("boost", 2),))``; ``ValueError`` when malformed."""
    base, *rest = text.split(PLUS)
    held: list[tuple[str, int]] = []
    for item in rest:
        addon, times, quantity = item.partition(TIMES)
        if not addon or (times and not quantity.isdigit()):
            raise ValueError(f"{text!r} is not a combined plan id")
        held.append((addon, int(quantity) if quantity else 1))
    if not base or not held:
        raise ValueError(f"{text!r} is not a combined plan id")
    return base, tuple(held)
