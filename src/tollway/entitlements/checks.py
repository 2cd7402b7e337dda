"""The static part of one limiter check, memoised: built once per plan feature, customer limits, billing
period and route cost, then shared by every request it applies to.

A :class:`Check` is equal to another built from the same memo key, and hashes from that key computed
once: it is part of the capacity lease key looked up on every request, and a memo reset that builds it
again still finds the same lease. The edge keys the static part of its RateLimit fields on it too.
"""

from __future__ import annotations

from tollway.ratelimit import Policy
from tollway.ratelimit.money import Money

# Memo key of a check: catalog digest, plan, feature, route cost, the customer's limits (None: the plan's
# own, no overrides), the billing period in epoch ms and the customer's own spend cap in micro-units
# (None: the plan's cap, or none).
CheckKey = tuple[str, str, str, int, tuple[int, ...] | None, tuple[int, int], int | None]


class Check:
    """``policies`` and ``costs`` of one check (one limiter call), valid for ``period_ms`` (start, end).
    ``money``: the real-time charges, balance and spend cap checked in the same call (None: no money);
    ``balance_unit``: the prepaid balance's unit ('' for none)."""

    __slots__ = ("_hash", "balance_unit", "costs", "key", "money", "policies", "reserves")

    def __init__(
        self,
        key: CheckKey,
        policies: tuple[Policy, ...],
        costs: tuple[int, ...],
        money: Money | None = None,
        balance_unit: str = "",
    ) -> None:
        self.key = key
        self.policies = policies
        self.costs = costs
        self.money = money
        self.reserves = money is not None and money.reserves  # records a reservation: never leased
        self.balance_unit = balance_unit
        self._hash = hash(key)

    @property
    def period_ms(self) -> tuple[int, int]:
        return self.key[5]

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Check) and self.key == other.key)

    def __repr__(self) -> str:
        return f"Check({self.key!r})"
