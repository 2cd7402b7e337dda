"""Moving subscribers between versions of their plan (``tollway subscriptions migrate``, the admin API's
migration): which subscriptions move, to which version, from when. Pure: no I/O; the faces read the
catalog and the subscriptions, show the preview (``billing.migration``) or write the result.

A migration is a plan change (``Subscription.changed_to``) to another version of the same plan, effective
at the start of the customer's next period (the default), now, or a later instant: billing prorates it
like any plan change, and a change after now is *scheduled* — the gateway keeps enforcing the version
held until it takes effect (``Subscription.as_of``). A migration back to the version held while a change
is scheduled cancels that change. Every subscription is checked before anything is
written: one that cannot move makes the whole migration fail, with a message naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from tollway.plans.errors import UnknownPlan
from tollway.plans.schema import Plan
from tollway.plans.versions import pin, same_version, split_plan_id, versions_of
from tollway.subscriptions.model import Subscription, format_exact
from tollway.subscriptions.requests import check_plan_interval, parse_time

NEXT_PERIOD: Final = "next-period"


@dataclass(frozen=True, slots=True)
class Migration:
    """``before`` as stored, ``after`` with the change to ``plan_id`` from ``at`` on."""

    before: Subscription
    after: Subscription
    at: datetime
    cancelled: bool = False  # the migration takes back a scheduled change (``at``: when it was due)

    @property
    def customer_id(self) -> str:
        return self.before.customer_id

    def as_dict(self, now: datetime) -> dict[str, object]:
        return {
            "customer_id": self.customer_id,
            "from": self.before.as_of(_ms(now)).plan_id,
            "to": self.after.plan_id,
            "effective_at": format_exact(self.at),
            "scheduled": self.at > now and not self.cancelled,
            "cancelled": self.cancelled,
        }


def target_version(plans: Mapping[str, Plan], plan_id: str) -> str:
    """The version a migration to ``plan_id`` moves to (a bare id: the latest). ``ValueError`` naming the
    versions there are when the catalog does not have it."""
    base, _ = split_plan_id(plan_id)
    try:
        return pin(plans, plan_id)
    except UnknownPlan:
        numbers = versions_of(plans, base)
        if numbers:
            known = f"plan {base!r} has versions {', '.join(map(str, numbers))}"
        elif base in plans:
            known = f"plan {base!r} has no versions besides itself (version 1)"
        else:
            known = f"the catalog has no plan {base!r}"
        raise ValueError(f"cannot migrate to {plan_id!r}: no such plan version ({known})") from None


def plan_migration(
    subscriptions: Iterable[Subscription], target: str, effective: str, now: datetime, interval: str | None = None
) -> tuple[list[Migration], list[str]]:
    """The migrations of ``subscriptions`` to ``target`` (a version the catalog has: ``target_version``)
    and the customers already on it. ``effective``: ``next-period`` (each customer's), ``now`` or an
    instant (ISO 8601; without an offset, wall-clock time in the customer's timezone), never before now.
    ``interval``: the target's pricing interval, which must be each subscription's (None: not checked).
    ``ValueError`` for the first subscription that cannot move (nothing is to be written then)."""
    now_ms = _ms(now)
    base, _ = split_plan_id(target)
    migrations: list[Migration] = []
    unchanged: list[str] = []
    for subscription in subscriptions:
        customer = subscription.customer_id
        held = subscription.as_of(now_ms)
        pending = subscription.scheduled(now)
        if pending and same_version(held.plan_id, target):  # back to the version held: cancel what is scheduled
            migrations.append(Migration(subscription, held, pending[0].at, cancelled=True))
            continue
        if pending:
            raise ValueError(
                f"customer {customer!r} already has a plan change scheduled at {format_exact(pending[0].at)} "
                f"(to {pending[0].plan_id!r}); it takes effect before another can (a migration to "
                f"{held.plan_id!r}, the version held, cancels it)"
            )
        if same_version(held.plan_id, target):
            unchanged.append(customer)
            continue
        if split_plan_id(held.plan_id)[0] != base:
            raise ValueError(
                f"customer {customer!r} is on plan {held.plan_id!r}: a migration moves between versions of one "
                f"plan ({base!r}); change plans with `subscriptions set`"
            )
        if interval is not None:
            try:
                check_plan_interval(target, interval, subscription.interval)
            except ValueError as exc:
                message = str(exc).replace(f" (--interval {subscription.interval})", "")
                raise ValueError(f"customer {customer!r}: {message}") from None
        if effective == NEXT_PERIOD:
            at = held.current_period(now).end
        else:
            at = parse_time("--effective", effective, subscription.timezone, now)
            if at < now.replace(microsecond=0):
                raise ValueError(
                    f"--effective {effective}: a migration takes effect now or later (re-pricing the past is a "
                    "correction of the catalog, not a migration)"
                )
        try:
            after = subscription.changed_to(target, at)
        except ValueError as exc:
            raise ValueError(f"customer {customer!r}: {exc}") from None
        migrations.append(Migration(subscription, after, at))
    return migrations, unchanged


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)
