"""Invoices for a billed month: each subscribed customer's billing period, usage summed in ClickHouse
(``aggregate``), priced by ``rating.rate``.

Which periods ``--period YYYY-MM`` bills, per customer, in the customer's timezone: **the periods of
their schedule that start (local wall-clock time) in that month** (``billed_periods``). For calendar
months that is the local month itself (00:00 on the 1st to 00:00 on the next 1st, in their timezone,
stored in UTC); for an anniversary schedule it is the period starting on the anchor day of that month;
a quarterly, half-yearly or yearly schedule is billed only in the months its periods start; a weekly
one gets an invoice for each week starting in the month (four or five). A customer whose subscription
starts after the period ends, or whose period has not begun yet (an anniversary later in the current
month), is not billed; one that starts inside it pays the fraction it covered of the flat fees and the
minimum (``proration.period_fraction``) and its usage, and its coupons count periods from its start.

**Intervals.** Every amount of a plan is for one period of its ``pricing.interval``; a subscription is
billed on its own interval, which must be its plans' (``IntervalMismatch`` otherwise: the subscription
tools refuse to create one, this catches one stored before that check or edited by hand).

**Plan changes.** A subscription whose plan changed inside the period (``Subscription.terms``) has one
*part* per plan held: each part is priced by its own plan over the time it was held, its flat fees
and minimum prorated by the part's fraction of the period (``proration.period_fraction``) and its usage
summed over the part alone, split at the change instant. So the old plan's recurring fee is charged
only for the time it was used (the rest credited, as it never reaches the invoice) and the new one from
the change on. Every line names its part (``part``: 0, 1, ...); ``plans`` lists the parts.

An invoice id is derived from (customer, period start) only, so the same period always has the same
id: re-running a month writes a new version of the same invoices (see ``invoice_store``).

**Late usage.** A finalized invoice never changes; usage that reaches ClickHouse for its period after
it was finalized becomes an *adjustment line* on the next invoice built for the customer (in a run that
bills several periods of a customer, weeks, on the latest of them only). For each of
the customer's finalized invoices before the billed period (the last ``ADJUSTMENT_LOOKBACK`` of them),
the period's quantities are summed again and compared with what was billed so far according to the
``Ledger``: the invoice's own stored lines, then every adjustment line of it on *any* finalized invoice
(whatever its period), in the order they were finalized. So each late quantity is claimed by exactly
one finalized invoice, whatever order periods are billed and finalized in. Any difference is priced as
the difference of the two totals under the plan's current pricing (same fraction and period index), so
tiers, minimums and discounts are respected and nothing is rounded twice; the line's *billed* figure
is what was actually invoiced (the stored lines plus the finalized adjustments), never a re-pricing.
Both totals of a prepaid or spend-capped plan are settled (``prepaid.settle``) with the period's burns
as they are now, so late usage that burned in real time adds only what settles at invoice, and a hard
cap still holds.

**Prepaid plans and spend caps** (``billing.prepaid``): each part of such a plan gets its spend-cap and
credits-applied lines; an invoice with a prepaid part carries the period's balance section.

**Coupons and interim invoices** (``billing.coupons``). The coupons of the plan held at the period's end
take what they have left off the amount due, the rest carrying to the next invoice; what is left is
the coupon's amount less its lines on the customer's finalized invoices. A plan with
``progressive_billing`` may get *interim* invoices mid-period (``tollway bill --progressive``: the
period's next one is ``build_invoice(..., interim=True)``, id ``invoice_id(customer, start, n)``,
finalized when issued); the period's invoice, and each later interim one, credits what the earlier
interim invoices of the period billed before their coupons, so the period bills its total once.

**Finalizing** (``finalize_refusal``): a period is finalized only once it has ended (unless forced)
and while no earlier period of the customer is still a draft.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final, Literal

from tollway.billing.aggregate import Quantities, QuantitySource, billable_quantities, part_quantities_of
from tollway.billing.charges import PeriodContext
from tollway.billing.coupons import CouponUse, InterimCredit, apply_coupons, used_before
from tollway.billing.errors import BillingError, PlanNotPriced
from tollway.billing.money import format_amount, format_decimal, minor_unit
from tollway.billing.prepaid import PeriodBalance, balance_of, burned_micros, settle
from tollway.billing.proration import period_fraction
from tollway.billing.rating import InvoiceDraft, InvoiceLine, rate
from tollway.periods import ADJECTIVES, BillingPeriod, BillingSchedule, resolve_local
from tollway.plans.pricing import FlatCharge, Pricing
from tollway.plans.realtime import PlanMoney, compile_plan_money
from tollway.plans.schema import Billable, Catalog
from tollway.subscriptions.model import AddOn, PlanTerm, Subscription, format_exact

Status = Literal["draft", "finalized"]
_MONTH: Final = re.compile(r"([0-9]{4})-([0-9]{2})")
# The earliest local midnight on Earth is UTC+14 (Pacific/Kiritimati): a month has begun somewhere
# once UTC reaches its first day minus 14 hours.
_EARLIEST_OFFSET_HOURS: Final = 14
QUERY_CUSTOMERS: Final = 5000
"""At most this many customers per usage query (the ``IN`` list)."""
ADJUSTMENT_LOOKBACK: Final = 12
"""How many of a customer's latest finalized invoices are checked for late usage on each run."""
ADJUSTMENT: Final = "late_usage"
"""``charge_id`` of an adjustment line (its ``kind`` is ``adjustment``)."""


class InvalidBillingPeriod(BillingError):
    """``--period`` is not ``YYYY-MM``, or names a month that has not begun anywhere yet."""


class PlanNotInCatalog(BillingError):
    """A subscription names a plan the catalog does not have."""


class IntervalMismatch(BillingError):
    """A subscription's interval is not the pricing interval of a plan it holds."""


@dataclass(frozen=True, slots=True)
class BillingMonth:
    """The month a bill run is for (``2026-11``)."""

    year: int
    month: int

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def index(self) -> int:
        """``BillingPeriod.index`` of the monthly period nominally starting in this month."""
        return self.year * 12 + self.month - 1


def parse_month(text: str, now: datetime) -> BillingMonth:
    """``YYYY-MM`` → ``BillingMonth``; ``InvalidBillingPeriod`` when malformed or in the future (the
    month has not begun in any timezone at ``now``)."""
    match = _MONTH.fullmatch(text)
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1970:
        raise InvalidBillingPeriod(f"--period {text!r}: expected a month as YYYY-MM, e.g. 2026-11")
    month = BillingMonth(int(match[1]), int(match[2]))
    first = datetime(month.year, month.month, 1, tzinfo=UTC)
    if (first - now.astimezone(UTC)).total_seconds() > _EARLIEST_OFFSET_HOURS * 3600:
        raise InvalidBillingPeriod(f"--period {text}: the period is in the future (it has not begun anywhere yet)")
    return month


def billed_periods(
    subscription: Subscription, month: BillingMonth, now: datetime | None = None
) -> tuple[BillingPeriod, ...]:
    """The customer's periods starting (local time) in ``month``, in order (see the module docstring):
    none when none starts in the month (a quarter starting in another month), the subscription starts
    after it, or it has not begun at ``now``; one for every interval but ``week``, which has four or five."""
    schedule = subscription.schedule
    first, last = _local_month(month.year, month.month, subscription.timezone)
    # A boundary is the first instant the local clock reads its time or later, so a period starts in
    # the local month exactly when its start is in [first, last).
    index = schedule.index_of(first)
    if schedule.boundary(index) < first:
        index += 1
    periods: list[BillingPeriod] = []
    while (start := schedule.boundary(index)) < last:
        period = schedule.period(index)
        index += 1
        if period.end <= subscription.started_at:
            continue
        if now is not None and start > now:
            break
        periods.append(period)
    return tuple(periods)


@lru_cache(maxsize=4096)
def _local_month(year: int, month: int, timezone: str) -> tuple[datetime, datetime]:
    """The UTC instants the local month begins and ends (a bill run asks it of every customer)."""
    following = datetime(year + month // 12, month % 12 + 1, 1)
    return resolve_local(datetime(year, month, 1), timezone), resolve_local(following, timezone)


def billed_period(subscription: Subscription, month: BillingMonth, now: datetime | None = None) -> BillingPeriod | None:
    """The customer's first period starting (local time) in ``month`` (``billed_periods``), or None."""
    periods = billed_periods(subscription, month, now)
    return periods[0] if periods else None


def invoice_id(customer_id: str, period_start: datetime, interim: int | None = None) -> str:
    """``in_`` + 24 hex digits of SHA-256 over the customer id and the period's UTC start (and, for the
    period's ``interim``-th interim invoice, that number)."""
    text = f"{customer_id}\n{format_exact(period_start)}" + ("" if interim is None else f"\ninterim {interim}")
    return f"in_{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def interim_documents(
    history: Sequence[Mapping[str, Any]], customer_id: str, period_start: datetime
) -> list[Mapping[str, Any]]:
    """The customer's finalized interim invoices of the period starting at ``period_start``, in order."""
    start = format_exact(period_start)
    found = [
        d
        for d in history
        if d.get("customer_id") == customer_id
        and d.get("status") == "finalized"
        and d.get("interim")
        and d["period"]["start"] == start
    ]
    return sorted(found, key=lambda d: int(d["interim"]["sequence"]))


class CustomerNotBilled(BillingError):
    """One customer's invoice could not be built or finalized; the others are billed."""

    def __init__(self, customer_id: str, reason: str) -> None:
        named = reason.startswith(f"customer {customer_id!r}")
        super().__init__(reason if named else f"customer {customer_id!r}: {reason}")
        self.customer_id = customer_id
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claim:
    """A finalized adjustment line of invoice ``by``: it billed one part of an earlier invoice from
    ``billed`` to ``now`` quantities, for ``amount``. What it covers is the difference."""

    by: str
    billed: Mapping[str, Decimal]
    now: Mapping[str, Decimal]
    amount: Decimal


class Ledger:
    """What has been invoiced of each part of each finalized invoice: its own stored lines plus what
    every finalized adjustment line claiming it covers (its ``now`` − ``billed`` quantities, its
    amount). Built from the finalized documents (``invoice_store.load_finalized``), which never change;
    the sum does not depend on the order in which periods were billed or finalized."""

    def __init__(self, documents: Sequence[Mapping[str, Any]]) -> None:
        self._claims: dict[tuple[str, int], list[Claim]] = {}
        for document in documents:
            if document.get("status") != "finalized":
                continue
            for line in document["lines"]:
                if line["kind"] != "adjustment":
                    continue
                claim = Claim(
                    str(document["invoice_id"]),
                    {meter: Decimal(str(q["billed"])) for meter, q in line["quantities"].items()},
                    {meter: Decimal(str(q["now"])) for meter, q in line["quantities"].items()},
                    Decimal(str(line["amount"])),
                )
                self._claims.setdefault((str(line["adjusts"]), int(line.get("adjusts_part", 0))), []).append(claim)

    def claims(self, invoice_id: str, part: int) -> tuple[Claim, ...]:
        """The finalized adjustments of ``invoice_id``'s ``part``."""
        return tuple(self._claims.get((invoice_id, part), ()))

    def billed(self, invoice: Mapping[str, Any], part: int) -> tuple[dict[str, Decimal], Decimal]:
        """The quantities and the amount invoiced so far for ``part`` of the finalized ``invoice``: its
        stored lines, plus what each claim of it covers."""
        quantities: dict[str, Decimal] = {}
        amount = Decimal(0)
        for line in invoice["lines"]:
            if line["kind"] == "adjustment" or line.get("part", 0) != part:
                continue
            amount += Decimal(str(line["amount"]))
            if line["kind"] == "charge" and line["meter"] and line["quantity"] is not None:
                quantities[str(line["meter"])] = Decimal(str(line["quantity"]))
        for claim in self.claims(str(invoice["invoice_id"]), part):
            for meter, now in claim.now.items():
                covered = now - claim.billed.get(meter, Decimal(0))
                quantities[meter] = quantities.get(meter, Decimal(0)) + covered
            amount += claim.amount
        return quantities, amount


@dataclass(frozen=True, slots=True)
class Adjustment:
    """Late usage of the finalized invoice ``invoice_id`` (period ``month``): the quantities billed so
    far and now, the amount invoiced so far (``billed_total``: stored lines and finalized adjustments)
    and with this adjustment (``now_total``), and how each quantity is reproduced."""

    invoice_id: str
    month: str
    part: int
    currency: str
    billed: Mapping[str, Decimal]
    now: Mapping[str, Decimal]
    billed_total: Decimal
    now_total: Decimal
    sources: Mapping[str, QuantitySource]

    @property
    def amount(self) -> Decimal:
        """The difference of two rounded totals: exact in the currency, never rounded again."""
        return self.now_total - self.billed_total

    def as_line(self) -> dict[str, Any]:
        """The adjustment as a line of the invoice document."""
        steps = [
            f"{meter}: {format_decimal(self.billed.get(meter, Decimal(0)))} billed, {format_decimal(quantity)} now"
            for meter, quantity in sorted(self.now.items())
            if quantity != self.billed.get(meter, Decimal(0))
        ]
        billed, now = format_amount(self.billed_total, self.currency), format_amount(self.now_total, self.currency)
        steps.append(f"{self.month} total: {now} now − {billed} billed = {format_amount(self.amount, self.currency)}")
        return {
            "kind": "adjustment",
            "charge_id": ADJUSTMENT,
            "discount_id": None,
            "meter": None,
            "description": f"late usage for {self.month} (invoice {self.invoice_id})",
            "quantity": None,
            "amount": format_amount(self.amount, self.currency),
            "timing": "in_arrears",
            "breakdown": steps,
            "quantity_source": None,
            "part": None,
            "adjusts": self.invoice_id,
            "adjusts_part": self.part,
            "billed_total": format_amount(self.billed_total, self.currency),
            "now_total": format_amount(self.now_total, self.currency),
            "quantities": {
                meter: {"billed": format_decimal(self.billed.get(meter, Decimal(0))), "now": format_decimal(quantity)}
                for meter, quantity in sorted(self.now.items())
            },
            "quantity_sources": {meter: source.as_dict() for meter, source in sorted(self.sources.items())},
        }


@dataclass(frozen=True, slots=True)
class PlanPart:
    """The part ``term`` of an invoice's period (all of it without a plan change), priced by the plan
    held then. ``sources``: meter → how its quantity is reproduced."""

    term: PlanTerm
    draft: InvoiceDraft
    sources: Mapping[str, QuantitySource]
    addon: AddOn | None = None
    """The add-on this part prices (its section of the invoice: ``addon_parts``); None for the plan."""


@dataclass(frozen=True, slots=True)
class Invoice:
    """One customer's priced period: one part per plan held in it, then any late-usage adjustments."""

    invoice_id: str
    customer_id: str
    month: str
    period: BillingPeriod
    timezone: str
    parts: tuple[PlanPart, ...]
    status: Status = "draft"
    generated_at: datetime | None = None
    finalized_at: datetime | None = field(default=None)
    adjustments: tuple[Adjustment, ...] = ()
    balance: PeriodBalance | None = None
    interim_credits: tuple[InterimCredit, ...] = ()
    coupons: tuple[CouponUse, ...] = ()
    sequence: int | None = None
    """The number of an interim invoice (1, 2, ...) in its period; None for the period's invoice."""

    @property
    def plan_id(self) -> str:
        """The plan at the end of the period (add-ons, after the plan's parts, are not plans)."""
        return next(part for part in reversed(self.parts) if part.addon is None).draft.plan_id

    @property
    def currency(self) -> str:
        return self.parts[-1].draft.currency

    @property
    def lines(self) -> tuple[InvoiceLine, ...]:
        """The priced lines of every part, in order (adjustments not included)."""
        return tuple(line for part in self.parts for line in part.draft.lines)

    @property
    def subtotal(self) -> Decimal:
        """What is due before coupons: the priced parts plus the adjustments, less what the period's
        earlier interim invoices billed."""
        priced = sum((part.draft.total for part in self.parts), Decimal(0))
        priced += sum((adjustment.amount for adjustment in self.adjustments), Decimal(0))
        return priced - sum((credit.billed for credit in self.interim_credits), Decimal(0))

    @property
    def total(self) -> Decimal:
        """The subtotal less the coupons: the sum of every line."""
        return self.subtotal - sum((use.applied for use in self.coupons), Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        """The JSON document (stored in ``invoices.document`` and written by ``render``)."""
        lines: list[dict[str, Any]] = []
        plans: list[dict[str, Any]] = []
        for number, part in enumerate(self.parts):
            draft = part.draft.as_dict()
            for line, rendered in zip(part.draft.lines, draft["lines"], strict=True):
                source = part.sources.get(line.meter) if line.kind == "charge" and line.meter else None
                lines.append(
                    {**rendered, "part": number, "quantity_source": None if source is None else source.as_dict()}
                )
            plans.append(
                {
                    "part": number,
                    "plan": part.draft.plan_id,
                    "start": format_exact(part.term.start),
                    "end": format_exact(part.term.end),
                    "fraction": format_decimal(part.draft.period.fraction),
                    "subtotal": draft["total"],
                    # Only an add-on's section has these keys: a plan's is as it always was.
                    **({} if part.addon is None else {"addon": True, "quantity": part.addon.quantity}),
                }
            )
        lines.extend(adjustment.as_line() for adjustment in self.adjustments)
        lines.extend(credit.as_line() for credit in self.interim_credits)
        lines.extend(use.as_line() for use in self.coupons)
        local_start, local_end = self.period.local(self.timezone)
        first = self.parts[0].draft.period
        document: dict[str, Any] = {
            "invoice_id": self.invoice_id,
            "customer_id": self.customer_id,
            "status": self.status,
            "plan": self.plan_id,
            "currency": self.currency,
            "period": {
                "month": self.month,
                "start": format_exact(self.period.start),
                "end": format_exact(self.period.end),
                "timezone": self.timezone,
                "local_start": local_start.isoformat(),
                "local_end": local_end.isoformat(),
                "fraction": format_decimal(sum((p.draft.period.fraction for p in self.parts), Decimal(0))),
                "index": first.index,
            },
            "plans": plans,
            "lines": lines,
            "total": format_amount(self.total, self.currency),
            "balance": None if self.balance is None else self.balance.as_dict(),
            "generated_at": None if self.generated_at is None else format_exact(self.generated_at),
            "finalized_at": None if self.finalized_at is None else format_exact(self.finalized_at),
        }
        # Only invoices that have them carry these keys: every other document is as it always was.
        if self.sequence is not None or self.interim_credits or self.coupons:
            document["subtotal"] = format_amount(self.subtotal, self.currency)
        if self.sequence is not None:
            document["interim"] = {
                "sequence": self.sequence,
                "period_invoice_id": invoice_id(self.customer_id, self.period.start),
            }
        return document


def _pricing(catalog: Catalog, customer_id: str, plan_id: str) -> tuple[Pricing, dict[str, Billable]]:
    """The plan's pricing and the billable rule of each meter it prices."""
    plan = catalog.plans.get(plan_id)
    if plan is None:
        raise PlanNotInCatalog(
            f"customer {customer_id!r} is on plan {plan_id!r}, which the catalog "
            f"does not have (its plans: {', '.join(catalog.plans)})"
        )
    if plan.pricing is None:
        raise PlanNotPriced(plan_id)
    rules: dict[str, Billable] = {}
    for charge in plan.pricing.charges:
        if not isinstance(charge, FlatCharge):
            meter = catalog.meters.get(charge.meter)
            rules[charge.meter] = meter.billable if meter is not None else Billable()
    return plan.pricing, rules


def pricing_of(catalog: Catalog, customer_id: str, plan_id: str) -> Pricing:
    """The pricing ``customer_id``'s invoices are priced by for ``plan_id`` (``PlanNotInCatalog``,
    ``PlanNotPriced``): where its coupons and progressive billing terms are read."""
    return _pricing(catalog, customer_id, plan_id)[0]


def _priced(catalog: Catalog, customer_id: str, plan_id: str) -> bool:
    """Whether ``plan_id`` has pricing (a free plan has none: its time is not billed);
    ``PlanNotInCatalog`` when the catalog does not have it."""
    plan = catalog.plans.get(plan_id)
    if plan is None:
        _pricing(catalog, customer_id, plan_id)  # raises PlanNotInCatalog
    return plan is not None and plan.pricing is not None


def _priced_plans(catalog: Catalog, subscription: Subscription) -> tuple[str, ...]:
    """The priced plans of the subscription's history (``PlanNotInCatalog`` for one the catalog lacks)."""
    history = (subscription.first_plan_id, *(change.plan_id for change in subscription.changes))
    return tuple(plan_id for plan_id in history if _priced(catalog, subscription.customer_id, plan_id))


def _check_plans(catalog: Catalog, subscription: Subscription) -> None:
    """``PlanNotInCatalog`` or ``IntervalMismatch`` for the first plan of the subscription's history
    that cannot be billed (a plan without pricing can: its time is not billed)."""
    for plan_id in _priced_plans(catalog, subscription):
        pricing, _ = _pricing(catalog, subscription.customer_id, plan_id)
        _check_interval(subscription, plan_id, pricing)
    for addon in subscription.addons:
        addon_pricing(catalog, subscription, addon)


def _check_interval(subscription: Subscription, plan_id: str, pricing: Pricing) -> None:
    if pricing.interval != subscription.interval:
        raise IntervalMismatch(
            f"customer {subscription.customer_id!r} is billed {ADJECTIVES[subscription.interval]}, but plan "
            f"{plan_id!r} is priced per {pricing.interval}: its amounts do not fit the subscription's periods "
            "(a subscription's interval must be its plans')"
        )


def build_invoice(
    client: Any,
    database: str,
    catalog: Catalog,
    subscription: Subscription,
    month: BillingMonth,
    history: Sequence[Mapping[str, Any]] = (),
    *,
    now: datetime | None = None,
    usage: Quantities | None = None,
    interim: bool = False,
    period: BillingPeriod | None = None,
    adjust_late: bool = True,
    summed: Mapping[tuple[datetime, datetime], Quantities] | None = None,
) -> Invoice | None:
    """Price ``subscription``'s period of ``month`` from its usage; None when it has none that month.
    ``history``: the customer's finalized invoice documents, checked for late usage (``late_usage``),
    for the period's interim invoices (credited) and for what the coupons have left; ``now``: a period
    that has not begun by then is not billed; ``usage``: the period's quantities when already summed
    (``build_invoices`` sums many customers at once; only for a period with one plan), else they are
    queried here, per part. ``interim``: the period's next interim invoice instead (what is due so far:
    no minimum-commitment true-up, which only the period's end can tell, and no late-usage
    adjustments, which the period's invoice carries); whether it is issued is the caller's decision.
    ``period``: which of the month's periods (``billed_periods``: a weekly subscription has several), by
    default the first; ``adjust_late``: False leaves late usage to another invoice of the run.
    ``summed``: quantities already summed, by ``(start, end)`` of a part (``build_invoices`` sums the
    parts of many customers at once too); a part not in it is queried here.

    The parts of the period on a plan without pricing (a free plan) are not billed: None when the
    whole period is (nothing to bill), else the invoice of the priced parts, each prorated as usual.

    Raises ``PlanNotInCatalog``, ``PlanNotPriced`` (a period on free plans only, with a priced add-on),
    ``IntervalMismatch`` and the errors of ``rating.rate``."""
    customer = subscription.customer_id
    if period is None:
        period = billed_period(subscription, month, now)
    elif period.end <= subscription.started_at or (now is not None and period.start > now):
        period = None
    if period is None:
        _check_plans(catalog, subscription)  # a bad plan is an error whatever the month
        return None
    schedule = subscription.schedule
    index = max(0, _number(schedule, period) - _index_of(schedule, subscription.started_at))
    held = subscription.terms(period.start, period.end)
    terms = [term for term in held if _priced(catalog, customer, term.plan_id)]
    if not terms:
        _check_plans(catalog, subscription)
        for addon in subscription.addons_held(period.start, period.end):
            if addon_pricing(catalog, subscription, addon) is not None:
                raise PlanNotPriced(held[-1].plan_id)  # an add-on's section needs the plan's currency
        return None
    parts: list[PlanPart] = []
    prepaid: PlanMoney | None = None
    for term in terms:
        pricing, rules = _pricing(catalog, customer, term.plan_id)
        _check_interval(subscription, term.plan_id, pricing)
        if interim and pricing.minimum_commitment is not None:
            pricing = pricing.model_copy(update={"minimum_commitment": None})
        money = plan_money(catalog, term.plan_id)
        burned = 0
        if money is not None and money.prepaid:
            prepaid = money
            (burned,) = burned_micros(client, database, customer, money.unit.code, [(term.start, term.end)])
        whole = term.start == period.start and term.end == period.end
        fraction = Decimal(1) if whole else period_fraction(period, term.start, term.end)
        quantities = usage if usage is not None and len(terms) == 1 else None
        if quantities is None and summed is not None:
            quantities = summed.get((term.start, term.end))
        if quantities is None:
            quantities = billable_quantities(client, database, customer, term.start, term.end, rules)
        draft = rate(term.plan_id, pricing, quantities.quantities, PeriodContext(fraction, index))
        draft = settle(draft, pricing, money, burned)
        if parts and draft.currency != parts[0].draft.currency:
            raise BillingError(
                f"customer {customer!r}: plan {term.plan_id!r} bills in {draft.currency}, plan "
                f"{parts[0].draft.plan_id!r} (earlier in {month.label}) in {parts[0].draft.currency}; a plan change "
                "cannot change the currency within a period"
            )
        parts.append(PlanPart(term, draft, quantities.sources))
    if subscription.addons:
        parts.extend(addon_parts(catalog, subscription, period, index, parts[0].draft.currency))
    currency = parts[-1].draft.currency
    adjustments = (
        () if interim or not adjust_late else late_usage(client, database, catalog, customer, period.start, history)
    )
    for adjustment in adjustments:
        if adjustment.currency != currency:
            raise BillingError(
                f"customer {customer!r}: late usage of invoice {adjustment.invoice_id} is in "
                f"{adjustment.currency}, the invoice for {month.label} in {currency}"
            )
    balance = None
    if prepaid is not None:
        balance = balance_of(client, database, customer, prepaid.unit, period.start, period.end)
    credits = tuple(
        InterimCredit(str(d["invoice_id"]), int(d["interim"]["sequence"]), currency, Decimal(str(d["subtotal"])))
        for d in interim_documents(history, customer, period.start)
    )
    for credit in credits:
        if any(d["invoice_id"] == credit.invoice_id and d["currency"] != currency for d in history):
            raise BillingError(
                f"customer {customer!r}: interim invoice {credit.invoice_id} of {month.label} is not in "
                f"{currency}, the invoice's currency"
            )
    sequence = len(credits) + 1 if interim else None
    invoice = Invoice(
        invoice_id(customer, period.start, sequence),
        customer,
        month.label,
        period,
        subscription.timezone,
        tuple(parts),
        adjustments=adjustments,
        balance=balance,
        interim_credits=credits,
        sequence=sequence,
    )
    last = pricing_of(catalog, customer, invoice.plan_id)  # the coupons of the plan held at the period's end
    if not last.coupons:
        return invoice
    used = used_before(history, customer, invoice.invoice_id, currency)
    uses = apply_coupons(last.coupons, invoice.subtotal, index, currency, used)
    return replace(invoice, coupons=uses)


def _number(schedule: BillingSchedule, period: BillingPeriod) -> int:
    """``schedule.index_of(period.start)``: the period's own number when it is one of the schedule's."""
    if period.index is not None and schedule.boundary(period.index) == period.start:
        return period.index
    return schedule.index_of(period.start)


@lru_cache(maxsize=4096)
def _index_of(schedule: BillingSchedule, at: datetime) -> int:
    """``schedule.index_of(at)``, remembered (a bill run asks it of every customer's start)."""
    return schedule.index_of(at)


def plan_money(catalog: Catalog, plan_id: str) -> PlanMoney | None:
    """The plan's prepaid balance and spend cap as the gateway enforces them (``plans.realtime``); None
    when it has neither."""
    plan = catalog.plans.get(plan_id)
    if plan is None:
        return None
    try:
        return compile_plan_money(plan_id, plan, catalog)
    except ValueError as exc:  # only a catalog that skipped the loader's checks
        raise BillingError(f"plan {plan_id!r}: its prepaid or spend_cap terms cannot be compiled: {exc}") from None


def build_invoices(
    client: Any,
    database: str,
    catalog: Catalog,
    subscriptions: Sequence[Subscription],
    month: BillingMonth,
    history: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    *,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    failures: list[CustomerNotBilled] | None = None,
    interim: bool = False,
) -> tuple[list[Invoice], list[str]]:
    """The invoices of ``month`` for ``subscriptions`` (in customer order) and the customers with
    nothing to bill (no period in the month, or only plans without pricing in it). Every plan is
    checked before any usage is read. Usage is summed with one query per period span and chunk of up
    to ``QUERY_CUSTOMERS`` customers: each customer's parts (before and after a plan change, a version
    migration, the end of a trial) are cut in SQL, each part summing its own plan's meters under its
    rules (``aggregate.part_quantities_of``); a part on a free plan is not read.
    ``progress(done, total)`` after each customer.

    A customer whose invoice cannot be priced (plan missing, a currency Tollway cannot
    round, ...) raises its ``BillingError``; with ``failures``, it is appended there instead (as
    ``CustomerNotBilled``) and the other customers are billed. ``interim``: each customer's next interim
    invoice instead (``build_invoice``)."""

    def failed(subscription: Subscription, exc: BillingError) -> None:
        if failures is None:
            raise exc
        failures.append(CustomerNotBilled(subscription.customer_id, str(exc)))

    ordered: list[Subscription] = []
    for subscription in sorted(subscriptions, key=lambda s: s.customer_id):
        try:
            _check_plans(catalog, subscription)
            for plan_id in _priced_plans(catalog, subscription):
                pricing, _ = _pricing(catalog, subscription.customer_id, plan_id)
                minor_unit(pricing.currency)
        except BillingError as exc:
            failed(subscription, exc)
        else:
            ordered.append(subscription)
    # One scan per period span and chunk of customers: the parts of each customer's period (a plan
    # change, a migration, the end of a trial, the subscription's start) are cut in SQL, and each part
    # takes its own plan's meters and rules from the same scan (``aggregate.part_quantities_of``).
    groups: dict[tuple[datetime, datetime], dict[str, list[tuple[datetime, datetime, Mapping[str, Billable]]]]] = {}
    periods: dict[str, tuple[BillingPeriod, ...]] = {}
    for subscription in ordered:
        found = billed_periods(subscription, month, now)
        if interim:  # only a period still open gets an interim invoice (a week that ended has its own)
            found = tuple(period for period in found if now is None or period.end > now)
        periods[subscription.customer_id] = found
        for period in found:
            priced: list[tuple[datetime, datetime, Mapping[str, Billable]]] = []
            for term in subscription.terms(period.start, period.end):
                if not _priced(catalog, subscription.customer_id, term.plan_id):
                    continue  # a free plan's part: not billed
                _, rules = _pricing(catalog, subscription.customer_id, term.plan_id)
                priced.append((term.start, term.end, rules))
            if priced:
                groups.setdefault((period.start, period.end), {})[subscription.customer_id] = priced
    # customer → (part start, part end) → quantities
    summed: dict[str, dict[tuple[datetime, datetime], Quantities]] = {}
    for (start, end), customers in groups.items():
        chosen = sorted(customers)
        for first in range(0, len(chosen), QUERY_CUSTOMERS):
            chunk = {customer: customers[customer] for customer in chosen[first : first + QUERY_CUSTOMERS]}
            for customer, parts in part_quantities_of(client, database, start, end, chunk).items():
                own = summed.setdefault(customer, {})
                for quantities in parts:
                    own[quantities.start, quantities.end] = quantities
    invoices: list[Invoice] = []
    skipped: list[str] = []
    for done, subscription in enumerate(ordered, start=1):
        customer = subscription.customer_id
        past = (history or {}).get(customer, ())
        try:
            if not periods[customer]:
                build_invoice(client, database, catalog, subscription, month, past, now=now)  # checks its plans
                skipped.append(customer)
            billed = 0
            for period in periods[customer]:
                # Late usage goes on one invoice of the run, the customer's latest (weekly: the last week).
                built = build_invoice(
                    client,
                    database,
                    catalog,
                    subscription,
                    month,
                    past,
                    now=now,
                    summed=summed.get(customer),
                    interim=interim,
                    period=period,
                    adjust_late=period == periods[customer][-1],
                )
                if built is None:  # the period is on plans without pricing only (free): nothing to bill
                    continue
                billed += 1
                invoices.append(built)
                if built.coupons and all(d.get("invoice_id") != built.invoice_id for d in past):
                    # The run's later periods (weeks) see what this one's coupons take, as they will
                    # once the run finalizes the periods in order.
                    past = (*past, {**built.as_dict(), "status": "finalized"})
            if periods[customer] and not billed:
                skipped.append(customer)
        except BillingError as exc:
            failed(subscription, exc)
            invoices = [invoice for invoice in invoices if invoice.customer_id != customer]
        if progress is not None:
            progress(done, len(ordered))
    return invoices, skipped


def _start(document: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(document["period"]["start"]))


def document_parts(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An invoice document's parts (``plans``); a document without them (written before plan changes
    were billed by part) is one part: its plan over its period."""
    parts = document.get("plans")
    if parts:
        return [dict(part) for part in parts]
    period = document["period"]
    return [
        {
            "part": 0,
            "plan": document["plan"],
            "start": period["start"],
            "end": period["end"],
            "fraction": period["fraction"],
        }
    ]


def late_usage(
    client: Any,
    database: str,
    catalog: Catalog,
    customer_id: str,
    before: datetime,
    history: Sequence[Mapping[str, Any]],
) -> tuple[Adjustment, ...]:
    """Adjustments for the usage of ``customer_id``'s finalized invoices (of periods starting before
    ``before``) that no finalized invoice has billed yet (``Ledger``), one per part whose quantities
    changed. ``history``: the customer's finalized invoice documents, of every period."""
    # Interim invoices bill part of a period whose own invoice carries (and credits) them: not a period.
    mine = [
        d for d in history if d["customer_id"] == customer_id and d["status"] == "finalized" and not d.get("interim")
    ]
    ledger = Ledger(mine)
    finalized = sorted((d for d in mine if _start(d) < before), key=_start)
    adjustments: list[Adjustment] = []
    for invoice in finalized[-ADJUSTMENT_LOOKBACK:]:
        index = int(invoice["period"]["index"])
        for part in document_parts(invoice):
            number, plan_id = int(part["part"]), str(part["plan"])
            billed, invoiced = ledger.billed(invoice, number)
            pricing, rules = _pricing(catalog, customer_id, plan_id)
            start, end = datetime.fromisoformat(str(part["start"])), datetime.fromisoformat(str(part["end"]))
            usage = billable_quantities(client, database, customer_id, start, end, rules)
            if all(usage.quantities[meter] == billed.get(meter, Decimal(0)) for meter in rules):
                continue
            context = PeriodContext(Decimal(str(part["fraction"])), index)
            old = rate(plan_id, pricing, billed, context)
            new = rate(plan_id, pricing, usage.quantities, context)
            money = plan_money(catalog, plan_id)
            if money is not None:  # what burned in real time was paid by the balance, then and now
                burned = 0
                if money.prepaid:
                    (burned,) = burned_micros(client, database, customer_id, money.unit.code, [(start, end)])
                old, new = settle(old, pricing, money, burned), settle(new, pricing, money, burned)
            adjustments.append(
                Adjustment(
                    str(invoice["invoice_id"]),
                    str(invoice["period"]["month"]),
                    number,
                    pricing.currency,
                    {meter: billed.get(meter, Decimal(0)) for meter in rules},
                    dict(usage.quantities),
                    invoiced,
                    invoiced + (new.total - old.total),
                    usage.sources,
                )
            )
    return tuple(adjustments)


def finalize_refusal(
    invoice: Invoice, now: datetime, earlier_drafts: Sequence[str], *, force: bool = False
) -> str | None:
    """Why ``invoice`` may not be finalized at ``now``, or None. ``earlier_drafts``: the months of the
    customer's draft invoices of periods starting before this one. A period that has not ended is
    refused unless ``force``; an earlier draft always is (finalize or re-bill it first)."""
    if earlier_drafts:
        return (
            f"cannot finalize {invoice.month} while an earlier period is still a draft "
            f"({', '.join(earlier_drafts)}): finalize that first"
        )
    if invoice.period.end > now and not force:
        return (
            f"cannot finalize {invoice.month}: its period ends at {format_exact(invoice.period.end)}, "
            "after now (--force-finalize finalizes it anyway)"
        )
    return None


def addon_pricing(catalog: Catalog, subscription: Subscription, addon: AddOn) -> Pricing | None:
    """The pricing of one add-on the subscription holds (None: the add-on is free). ``PlanNotInCatalog``
    when the catalog lacks it, ``IntervalMismatch`` when it is priced on another interval."""
    plan = catalog.plans.get(addon.addon_id)
    if plan is None or plan.addon is None:
        raise PlanNotInCatalog(
            f"customer {subscription.customer_id!r} holds add-on {addon.addon_id!r}, which the catalog "
            f"{'does not have' if plan is None else 'has as a plan, not an add-on'}"
        )
    if plan.pricing is not None:
        _check_interval(subscription, addon.addon_id, plan.pricing)
    return plan.pricing


def addon_parts(
    catalog: Catalog, subscription: Subscription, period: BillingPeriod, index: int, currency: str
) -> list[PlanPart]:
    """One section per add-on held in ``period`` (docs/billing.md#add-ons), in the order bought: its flat
    fees times its quantity, prorated by the part of the period it was held
    (``proration.period_fraction`` of ``[max(start, period start), min(end, period end))``) and rounded
    once per line, as a plan's are. A free add-on (no pricing) has no section. Raises ``BillingError``
    for an add-on in another currency than the plan's."""
    parts: list[PlanPart] = []
    for addon in subscription.addons_held(period.start, period.end):
        pricing = addon_pricing(catalog, subscription, addon)
        if pricing is None:
            continue
        if pricing.currency != currency:
            raise BillingError(
                f"customer {subscription.customer_id!r}: add-on {addon.addon_id!r} bills in {pricing.currency}, "
                f"the plan in {currency}"
            )
        start = max(addon.started_at, period.start)
        end = period.end if addon.ended_at is None else min(addon.ended_at, period.end)
        whole = start == period.start and end == period.end
        fraction = Decimal(1) if whole else period_fraction(period, start, end)
        draft = rate(addon.addon_id, _times(pricing, addon.quantity), {}, PeriodContext(fraction, index))
        parts.append(PlanPart(PlanTerm(addon.addon_id, start, end), draft, {}, addon))
    return parts


def _times(pricing: Pricing, quantity: int) -> Pricing:
    """An add-on's pricing for ``quantity`` of it: each flat fee times the quantity (named so on its line)."""
    if quantity == 1:
        return pricing
    charges = [
        charge.model_copy(
            update={
                "amount": charge.amount * quantity,
                "display_name": f"{charge.display_name or charge.id} × {quantity}",
            }
        )
        if isinstance(charge, FlatCharge)
        else charge
        for charge in pricing.charges
    ]
    return pricing.model_copy(update={"charges": charges})
