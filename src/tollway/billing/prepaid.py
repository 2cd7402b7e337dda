"""Prepaid balances and spend caps on the invoice (docs/billing.md, "Prepaid plans").

A plan's charges that burn in real time (``plans.realtime.PlanMoney.burning``) are rated on the invoice
as any other charge: the marginal prices the limiter burned, summed over the period, are exactly the
charge's amount for the period's quantity (before rounding). Then, per part of the period:

* **spend cap** (a hard ``spend_cap``): when the real-time charges' lines add up to more than the cap, a
  ``spend_cap`` line takes the excess off, so the invoice never bills more than the cap for them;
* **credits applied** (a ``prepaid`` plan): a ``credits`` line pays the real-time charges from the balance.
  When what the part's admitted requests burned (``price_micros`` of their usage rows, times the credit
  unit's value) covers the charges' exact amount, the line is minus their rounded lines (after the cap),
  so nothing is due for them; otherwise (requests admitted without a burn, e.g. under ``fail_open``) it is
  minus the burned amount rounded to the currency, and the rest is due. A burn beyond the charges (a
  request burned whose status the meter does not bill) is not refunded by the invoice.

Charges that settle at invoice (flat fees, volume, minimum commitment, discounts, charges not in
``prepaid.charges``) are **due as usual**: the invoice does not take them from the balance.

The balance section (``PeriodBalance``) is a pure function of the credit ledger's entries and the burns:
the balance at the period's start, each top-up (grant), void, expiry, rollover cut and other entry in
the period, the burns, and the balance at its end. Pure: no I/O (the queries are ``ledger_moves`` and
``burned_micros``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from tollway.billing.aggregate import format_instant
from tollway.billing.charges import price_charge
from tollway.billing.money import exact, format_amount, format_decimal, round_line
from tollway.billing.rating import InvoiceDraft, InvoiceLine
from tollway.credits.ledger import NOT_SUMMED
from tollway.credits.units import BalanceUnit, from_micros, to_micros
from tollway.plans.pricing import Pricing
from tollway.plans.realtime import PlanMoney
from tollway.warehouse.connection import check_identifier, query_rows

CREDITS_LINE: Final = "credits_applied"
"""``charge_id`` of the line paying the real-time charges from the balance (its ``kind`` is ``credits``)."""
SPEND_CAP_LINE: Final = "spend_cap"
"""``charge_id`` of the line taking off what the real-time charges bill above a hard cap (``kind`` ``spend_cap``)."""
BALANCE_KIND: Final = "balance"
"""``kind`` of the informational balance rows in ``invoice_lines`` (never part of the total)."""


def _ms(at: datetime) -> int:
    return int(at.astimezone(UTC).timestamp() * 1000)


# --- lines -------------------------------------------------------------------------------------------


def settle(
    draft: InvoiceDraft,
    pricing: Pricing,
    money: PlanMoney | None,
    burned: int = 0,
) -> InvoiceDraft:
    """``draft`` with its spend-cap and credits-applied lines (``money`` None: unchanged). ``burned``: what
    the part's admitted requests burned, in micro-units of ``money.unit``."""
    if money is None:
        return draft
    currency = draft.currency
    ids = {charge.charge_id for charge in money.burning}
    charges = {charge.id: charge for charge in pricing.charges}
    realtime = [line for line in draft.lines if line.kind == "charge" and line.charge_id in ids]
    zero = round_line(Decimal(0), currency)
    with exact():
        rounded = sum((line.amount for line in realtime), zero)
        exact_amounts = (
            price_charge(charges[line.charge_id], line.quantity or Decimal(0), draft.period).amount for line in realtime
        )
        owed = sum(exact_amounts, Decimal(0))
    added: list[InvoiceLine] = []
    cut = zero
    if money.cap_amount is not None and not money.cap_soft and rounded > money.cap_amount:
        cut = round_line(rounded - money.cap_amount, currency)
        cap = format_amount(round_line(money.cap_amount, currency), currency)
        billed = format_amount(rounded, currency)
        above = f"real-time charges {billed} − spend cap {cap} = {format_amount(cut, currency)}"
        about = f"spend cap {cap} {currency} per period"
        added.append(InvoiceLine("spend_cap", SPEND_CAP_LINE, about, None, -cut, (above,)))
    if money.prepaid:
        unit = money.unit
        burned_units = from_micros(burned)
        with exact():
            worth = burned_units * unit.value
        payable = rounded - cut
        if worth >= owed:
            applied = payable
            why = "the burns cover the real-time charges: nothing is due for them"
        else:
            applied = min(round_line(worth, currency, pricing.effective_rounding), payable)
            covered = f"{format_amount(applied, currency)} of {format_amount(payable, currency)}"
            why = f"the burns cover {covered}: the rest is due"
        steps = (
            f"burned {format_decimal(burned_units)} {unit.code}"
            + ("" if unit.is_currency else f" × {format_decimal(unit.value)} {currency}")
            + f" = {format_decimal(worth)} {currency}; real-time charges {format_amount(payable, currency)} "
            f"({format_decimal(owed)} before rounding)",
            why,
        )
        names = ", ".join(sorted(ids)) or "none"
        amount = -applied if applied else applied
        added.append(
            InvoiceLine(
                "credits",
                CREDITS_LINE,
                f"credits applied from the prepaid balance ({unit.code}) to {names}",
                burned_units,
                amount,
                steps,
            )
        )
    if not added:
        return draft
    total = draft.total + sum((line.amount for line in added), zero)
    return replace(draft, lines=(*draft.lines, *added), total=total)


# --- the balance section -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Move:
    """One ``credit_ledger`` entry (not a burn): signed ``amount`` of ``unit`` at ``ts_ms``."""

    ts_ms: int
    kind: str
    grant_id: str
    amount: Decimal
    unit: str
    note: str = ""


_SECTIONS: Final[Mapping[str, tuple[str, str]]] = {
    "grant": ("top_up", "top-up"),
    "void": ("voided", "voided"),
    "expiry": ("expired", "expired"),
    "rollover": ("rolled_over", "cut at the period boundary (rollover)"),
    "return": ("returned", "returned"),
    "adjustment": ("adjusted", "adjustment"),
}


@dataclass(frozen=True, slots=True)
class BalanceLine:
    """One informational row: ``kind`` (``balance_start``, ``top_up``, ``burned``, ``voided``,
    ``expired``, ``rolled_over``, ``returned``, ``adjusted``, ``balance_end``), the amount in the unit."""

    kind: str
    description: str
    amount: Decimal
    grant_id: str = ""
    at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class PeriodBalance:
    """The customer's balance over ``[start_ms, end_ms)`` in ``unit``: ``start`` + the lines in between =
    ``end``."""

    unit: BalanceUnit
    start: Decimal
    lines: tuple[BalanceLine, ...]
    end: Decimal

    def rows(self) -> tuple[BalanceLine, ...]:
        return (
            BalanceLine("balance_start", "balance at the period's start", self.start),
            *self.lines,
            BalanceLine("balance_end", "balance at the period's end", self.end),
        )

    def in_currency(self, amount: Decimal) -> Decimal:
        with exact():
            worth = amount * self.unit.value
        return round_line(worth, self.unit.currency)

    def as_dict(self) -> dict[str, Any]:
        unit = self.unit
        return {
            "unit": unit.code,
            "currency": unit.currency,
            "value": format_decimal(unit.value),
            "start": format_decimal(self.start),
            "end": format_decimal(self.end),
            "lines": [
                {
                    "kind": line.kind,
                    "grant_id": line.grant_id or None,
                    "at": None if line.at_ms is None else format_instant(_instant(line.at_ms)),
                    "description": line.description,
                    "amount": format_decimal(line.amount),
                    "amount_currency": format_amount(self.in_currency(line.amount), unit.currency),
                }
                for line in self.rows()
            ],
        }


def _instant(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def period_balance(
    unit: BalanceUnit, moves: Sequence[Move], burned_before: int, burned_in: int, start_ms: int, end_ms: int
) -> PeriodBalance:
    """The balance section from the ledger's entries. Left out: entries of another unit, and the kinds
    reconcile leaves out (``ledger.NOT_SUMMED``: burns are the usage rows' ``price_micros``,
    ``burned_before`` before the period and ``burned_in`` in it, micro-units). Rollover cuts at the
    period's start belong to the period (the balance at its start is before them). Top-ups, voids,
    expiries and rollover cuts are one line each (per grant, in time order); returns and adjustments,
    one line each. So ``end`` is the live balance whenever reconcile is clean."""
    before = Decimal(0)
    lines: list[BalanceLine] = []
    mine = sorted(
        (m for m in moves if m.unit == unit.code and m.kind not in NOT_SUMMED), key=lambda m: (m.ts_ms, m.grant_id)
    )
    with exact():
        for move in mine:
            if move.ts_ms < start_ms:
                before += move.amount
            elif move.ts_ms < end_ms:
                kind, what = _SECTIONS.get(move.kind, ("adjusted", move.kind))
                about = f"{what}: grant {move.grant_id}" if move.grant_id else what
                if move.note and kind == "top_up":
                    about += f" ({move.note})"
                lines.append(BalanceLine(kind, about, move.amount, move.grant_id, move.ts_ms))
        start = before - from_micros(burned_before)
        burned = from_micros(burned_in)
        lines.append(BalanceLine("burned", "burned by admitted requests", -burned if burned else burned))
        end = start + sum((line.amount for line in lines), Decimal(0))
    return PeriodBalance(unit, start + 0, tuple(lines), end + 0)


# --- ClickHouse --------------------------------------------------------------------------------------


def ledger_moves(client: Any, database: str, customer_id: str) -> list[Move]:
    """Every ``credit_ledger FINAL`` entry of the customer (filtered by time in Python: ``ts`` is not in
    the table's sorting key, so it is not a safe ``FINAL`` condition)."""
    rows = query_rows(
        client,
        "SELECT toUnixTimestamp64Milli(ts), kind, grant_id, toString(amount), unit, note "
        "FROM {db:Identifier}.credit_ledger FINAL WHERE customer_id = {customer:String} ORDER BY entry_id",
        {"db": check_identifier(database), "customer": customer_id},
    )
    return [Move(int(r[0]), str(r[1]), str(r[2]), _exact(str(r[3])), str(r[4]), str(r[5])) for r in rows]


def _exact(text: str) -> Decimal:
    """A ledger amount (6 places) normalised: ``2500.000000`` → ``2500``."""
    return from_micros(to_micros(Decimal(text)))


def burned_micros(
    client: Any, database: str, customer_id: str, unit: str, ranges: Sequence[tuple[datetime, datetime]]
) -> list[int]:
    """Σ ``price_micros`` of the customer's admitted requests that burned ``unit`` (``balance_unit``), per
    ``[start, end)`` of ``ranges``, from ``usage FINAL`` (each request once)."""
    if not ranges:
        return []
    parameters: dict[str, str] = {"db": check_identifier(database), "customer": customer_id, "unit": unit}
    columns = []
    for n, (start, end) in enumerate(ranges):
        parameters[f"s{n}"], parameters[f"e{n}"] = format_instant(start), format_instant(end)
        columns.append(
            f"toString(sumIf(price_micros, outcome = 'admitted' AND balance_unit = {{unit:String}} "
            f"AND ts >= {{s{n}:DateTime64(6, 'UTC')}} AND ts < {{e{n}:DateTime64(6, 'UTC')}}))"
        )
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    parameters["low"], parameters["high"] = format_instant(low), format_instant(high)
    rows = query_rows(
        client,
        f"SELECT {', '.join(columns)} FROM {{db:Identifier}}.usage FINAL "  # noqa: S608 (no data spliced)
        "WHERE customer_id = {customer:String} "
        "AND ts >= {low:DateTime64(6, 'UTC')} AND ts < {high:DateTime64(6, 'UTC')}",
        parameters,
    )
    return [int(value) for value in rows[0]] if rows else [0] * len(ranges)


EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def balance_of(
    client: Any, database: str, customer_id: str, unit: BalanceUnit, start: datetime, end: datetime
) -> PeriodBalance:
    """The customer's ``PeriodBalance`` over ``[start, end)`` from ClickHouse."""
    before, during = burned_micros(client, database, customer_id, unit.code, [(EPOCH, start), (start, end)])
    moves = ledger_moves(client, database, customer_id)
    return period_balance(unit, moves, before, during, _ms(start), _ms(end))
