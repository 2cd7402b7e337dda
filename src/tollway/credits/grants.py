"""Grants: amounts of a balance unit given to a customer, and the order they burn in. Pure.

A grant is live at ``t`` when ``effective_ms <= t`` and (no expiry, or ``t < expires_ms``). A check burns
its price from the live grants in *burn order*: lowest ``priority`` first, then earliest expiry (a grant
without expiry last), then grant id; all or nothing: a price the live grants cannot cover together burns
nothing.

Rollover: a grant with ``rollover_max`` (micro-units; ``None``: no rollover rule) keeps at most that much
across each billing-period boundary after it became effective: at the first check of a new period, its
remaining is capped to ``rollover_max`` (0: nothing carries) and the cut is added to ``forfeited``.
``rolled_ms`` is the start of the last period it was applied at (initially ``effective_ms``).

Redis form (the grants hash ``{p}cr:{<customer>}``, one field per grant id, read by ``consume.lua``)::

    remaining priority effective_ms expires_ms rollover_max rolled_ms forfeited

seven integers separated by single spaces; ``expires_ms`` 0 = never, ``rollover_max`` -1 = no rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

NO_EXPIRY: Final = 0
NO_ROLLOVER: Final = -1
MAX_GRANTS: Final = 100
"""Grants a customer may hold at once (live or waiting to become effective): each check reads them all."""

_FIELD: Final = re.compile(r"-?\d+( -?\d+){6}")
GRANT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class GrantState:
    """One grant as the limiter sees it (micro-units, epoch ms)."""

    grant_id: str
    remaining: int
    priority: int = 0
    effective_ms: int = 0
    expires_ms: int = NO_EXPIRY
    rollover_max: int = NO_ROLLOVER
    rolled_ms: int = 0
    forfeited: int = 0

    def live(self, now_ms: int) -> bool:
        return self.effective_ms <= now_ms and (self.expires_ms == NO_EXPIRY or now_ms < self.expires_ms)

    def order(self) -> tuple[int, int, str]:
        return (self.priority, self.expires_ms if self.expires_ms != NO_EXPIRY else 2**62, self.grant_id)

    def encode(self) -> str:
        return (
            f"{self.remaining} {self.priority} {self.effective_ms} {self.expires_ms} "
            f"{self.rollover_max} {self.rolled_ms} {self.forfeited}"
        )

    @classmethod
    def decode(cls, grant_id: str, value: str | bytes) -> GrantState:
        text = value.decode("ascii") if isinstance(value, bytes) else value
        if not _FIELD.fullmatch(text):
            raise ValueError(f"grant {grant_id!r}: malformed record {text!r}")
        remaining, priority, effective, expires, rollover, rolled, forfeited = (int(x) for x in text.split(" "))
        return cls(grant_id, remaining, priority, effective, expires, rollover, rolled, forfeited)

    def rolled_over(self, period_start_ms: int) -> GrantState:
        """This grant after the period that starts at ``period_start_ms`` began (a no-op unless it has a
        rollover rule, became effective before that start and was not rolled at it yet)."""
        if self.rollover_max < 0 or not (self.effective_ms < period_start_ms and self.rolled_ms < period_start_ms):
            return self
        cut = max(self.remaining - self.rollover_max, 0)
        return replace(self, remaining=self.remaining - cut, rolled_ms=period_start_ms, forfeited=self.forfeited + cut)


def decode_all(fields: Mapping[str, str] | Mapping[bytes, bytes]) -> list[GrantState]:
    """Every grant of a grants hash (its fields are grant ids)."""
    out = []
    for key, value in fields.items():
        name = key.decode("ascii") if isinstance(key, bytes) else key
        out.append(GrantState.decode(name, value))
    return out


def burn_order(grants: Iterable[GrantState], now_ms: int) -> list[GrantState]:
    """The live grants, in the order a price burns them."""
    return sorted((g for g in grants if g.live(now_ms)), key=GrantState.order)


def live_balance(grants: Iterable[GrantState], now_ms: int) -> int:
    return sum(g.remaining for g in grants if g.live(now_ms))


def burn(grants: Iterable[GrantState], price: int, now_ms: int) -> dict[str, int] | None:
    """How much of ``price`` (micro-units) each live grant gives, in burn order; None if they cannot cover
    it together (nothing burns). A price of 0 burns nothing and always fits."""
    taken: dict[str, int] = {}
    left = price
    for grant in burn_order(grants, now_ms):
        if left <= 0:
            break
        part = min(grant.remaining, left)
        if part > 0:
            taken[grant.grant_id] = part
            left -= part
    return taken if left <= 0 else None


def refund_target(grants: Iterable[GrantState], now_ms: int) -> str | None:
    """The grant a returned amount goes back to: the first live grant in burn order, else the grant that
    expires last (expired ones included; a grant without expiry counts as last), else None (the caller
    makes the reserved grant ``REFUND_GRANT``)."""
    every = list(grants)
    live = burn_order(every, now_ms)
    if live:
        return live[0].grant_id
    if not every:
        return None
    return max(every, key=lambda g: (g.expires_ms == NO_EXPIRY, g.expires_ms, g.grant_id)).grant_id


REFUND_GRANT: Final = "returned"
"""The grant id a returned amount is credited to when the customer holds no grant at all any more."""
