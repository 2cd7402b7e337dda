"""What a migration between plan versions does to a customer's invoices: the current period's and the
next one's, priced as the subscription stands and as it would after the migration, from the same usage
(the re-rating ``tollway bill --dry-run`` does, with one catalog and two subscriptions). Reads usage,
writes nothing.

The current invoice is priced from the usage so far; the next period has had no usage yet, so its
invoice holds what does not depend on usage (flat fees, minimums) — with the migration from the next
period on, that is where the two versions first differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tollway.billing.invoices import BillingMonth, Invoice, build_invoice
from tollway.billing.money import format_amount
from tollway.periods import BillingPeriod, load_timezone
from tollway.plans.schema import Catalog
from tollway.subscriptions.model import Subscription, format_exact


@dataclass(frozen=True, slots=True)
class PeriodPreview:
    """One period's invoice as things stand (``before``) and after the migration (``after``)."""

    which: str  # "current" or "next"
    period: BillingPeriod
    before: Invoice | None  # None: nothing billed for the period
    after: Invoice | None

    @property
    def difference(self) -> Decimal | None:
        """After minus before; None when either is missing or they are in different currencies."""
        if self.before is None or self.after is None or self.before.currency != self.after.currency:
            return None
        return self.after.total - self.before.total

    def as_dict(self) -> dict[str, object]:
        def shown(invoice: Invoice | None) -> dict[str, object] | None:
            if invoice is None:
                return None
            plans = [part.draft.plan_id for part in invoice.parts]
            return {"plans": plans, "total": format_amount(invoice.total, invoice.currency)}

        either = self.after or self.before
        currency = either.currency if either is not None else None
        difference = self.difference
        return {
            "period": self.which,
            "start": format_exact(self.period.start),
            "end": format_exact(self.period.end),
            "currency": currency,
            "before": shown(self.before),
            "after": shown(self.after),
            "difference": None if difference is None or currency is None else format_amount(difference, currency),
        }


def preview_migration(
    client: Any, database: str, catalog: Catalog, before: Subscription, after: Subscription, now: datetime
) -> tuple[PeriodPreview, PeriodPreview]:
    """The current and next period's invoices of ``before`` and of ``after`` (the same customer, migrated).
    Raises the errors of ``build_invoice`` (a plan the catalog lacks, ...)."""
    current = before.current_period(now)
    following = before.schedule.period_containing(current.end)
    found = []
    for which, period in (("current", current), ("next", following)):
        local = period.start.astimezone(load_timezone(before.timezone))
        month = BillingMonth(local.year, local.month)
        old = build_invoice(client, database, catalog, before, month)
        new = build_invoice(client, database, catalog, after, month)
        found.append(PeriodPreview(which, period, old, new))
    return found[0], found[1]
