"""What ``tollway credits`` and the management API do with grants: check a grant request, make or void
it in Redis and write its ledger entry, sweep expiries and complete the ledger (``sync``), and prove
that Redis and the ledger agree (``reconcile``).

**Order and failures.** A change is made in Redis first (the limiter burns from there), then its ledger
entry is written. Before the Redis write the ledger table is probed, so a ClickHouse that cannot be
reached refuses the command with nothing written. Should the entry's write fail after the change, the
outcome carries ``ledger_error``: the command says so (the CLI exits 1, the API answers with
``"ledger": "pending"``), and ``sync`` writes the missing entry from Redis state later (as does a retry
of the same grant id). Entry ids are deterministic, so nothing is ever counted twice.

**The reconcile identity**, per customer, in micro-units of the balance unit. For a grant ``g`` the
limiter's script keeps ``remaining_g = amount_g − burned_g + returned_g − forfeited_g`` (``forfeited_g``:
what period boundaries cut, accumulated in the record). A void or an expiry removes the record and
takes exactly ``remaining_g`` (never what was burned), and the cuts of a removed grant are in the ledger
as rollover entries (written with its void or expiry). So, summed over every grant::

    Σ_held (remaining_g + forfeited_g)                                                  (Redis)
      = Σ amount of the ledger's entries − Σ burns                                      (ledger and usage)
      = grants − voids − expiries − rollover cuts of grants no longer held + returns ± adjustments − burns

with ledger amounts signed (voids, expiries and rollover cuts negative), ``Σ burns`` the ``price_micros``
of the customer's admitted prepaid requests in ``usage FINAL``, and two kinds of entries left out of the
ledger's sum: ``burn`` entries (burns are counted from usage; summing both would count a burn twice), and
the rollover entries of grants still held, whose cut is on the Redis side as ``forfeited``. A grant past
its expiry that the sweep has not removed yet is still held: its remaining is on the Redis side and no
expiry entry on the other. So the identity holds at any moment once every change's entry is written
(``sync`` completes them); a difference names a lost ledger entry, a lost usage row, or a balance
changed outside the script.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tollway.credits import ledger
from tollway.credits.store import (
    CustomerCredits,
    GrantConflict,
    GrantError,
    GrantInfo,
    GrantStore,
    GrantView,
    MakeResult,
    Removal,
    check_grant_id,
    instant_ms,
    new_grant_id,
)
from tollway.credits.units import AmountError, BalanceUnit, from_micros
from tollway.currencies import MINOR_UNITS
from tollway.plans.realtime import credit_balance_unit, currency_unit
from tollway.plans.schema import Catalog
from tollway.subscriptions.model import Subscription
from tollway.warehouse.errors import WarehouseError

T = TypeVar("T")

MIN_PRIORITY = -1_000_000
MAX_PRIORITY = 1_000_000
MAX_REASON = 500


class LedgerRunner(Protocol):
    """Runs ``query(client, database)`` on the warehouse (``admin.warehouse_access.Warehouse`` is one)."""

    async def run(self, query: Callable[[Any, str], T]) -> T: ...


def balance_unit(code: str, catalog: Catalog | None) -> BalanceUnit:
    """The unit named ``code``: a credit unit of the catalog (``credit_units``), else a currency Tollway
    bills in. ``ValueError`` for anything else. The one place that knows where units are defined."""
    credit_units = catalog.credit_units if catalog is not None else {}
    spec = credit_units.get(code)
    if spec is not None:
        return credit_balance_unit(code, spec)
    if code in MINOR_UNITS:
        return currency_unit(code)
    known = sorted(credit_units)
    more = f"; the catalog's credit units: {', '.join(known)}" if known else ""
    raise ValueError(f"unknown unit {code!r}: use a currency code such as USD or EUR{more}")


def load_catalog_file(path: Path | None) -> Catalog | None:
    if path is None:
        return None
    from tollway.plans.errors import CatalogError
    from tollway.plans.loader import load_catalog

    try:
        return load_catalog(path)
    except CatalogError as exc:
        raise ValueError(f"the catalog {path} is not valid:\n{exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read the catalog {path}: {exc.strerror or exc}") from None


def default_unit(catalog: Catalog | None, subscription: Subscription) -> str:
    """The unit of a grant that names none: the plan's prepaid unit, else its currency."""
    plan = catalog.plans.get(subscription.plan_id) if catalog is not None else None
    if plan is not None and plan.prepaid is not None:
        return plan.prepaid.unit
    if plan is None or plan.pricing is None:
        raise ValueError(
            f"no unit given, and the plan {subscription.plan_id!r} of {subscription.customer_id!r} has no currency "
            "in the catalog (or no catalog is set): give the unit"
        )
    return plan.pricing.currency


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """A grant as asked for, before it is checked. ``effective_at`` None: now; ``expires_at`` None:
    never; ``rollover_max`` None: no rollover rule (0: nothing carries); ``grant_id`` None: minted."""

    amount: Decimal
    unit: BalanceUnit
    effective_at: datetime | None = None
    expires_at: datetime | None = None
    priority: int = 0
    rollover_max: Decimal | None = None
    reason: str = ""
    grant_id: str | None = None


def build_grant(request: GrantRequest, *, now: datetime, actor: str) -> GrantInfo:
    """The grant's metadata; ``ValueError`` (``AmountError``, ``GrantError``) with a message for the user."""
    unit = request.unit
    unit.grant_amount(request.amount)  # positive, at most MAX_AMOUNT, at most the unit's places
    if request.rollover_max is not None and request.rollover_max != 0:
        try:
            unit.grant_amount(request.rollover_max)
        except AmountError as exc:
            raise AmountError(f"the rollover maximum: {exc}") from None
    elif request.rollover_max is not None and not request.rollover_max.is_finite():
        raise AmountError("the rollover maximum is not a number")
    if not MIN_PRIORITY <= request.priority <= MAX_PRIORITY:
        raise GrantError(f"the priority must be from {MIN_PRIORITY} to {MAX_PRIORITY} (got {request.priority})")
    if len(request.reason) > MAX_REASON:
        raise GrantError(f"the reason must be at most {MAX_REASON} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in request.reason):
        raise GrantError("the reason must be plain text: no control characters, no undecodable bytes")
    now_ms = instant_ms(now)
    effective_ms = instant_ms(request.effective_at) if request.effective_at is not None else now_ms
    expires_ms = instant_ms(request.expires_at) if request.expires_at is not None else None
    if expires_ms is not None:
        if expires_ms <= effective_ms:
            raise GrantError("the expiry must be after the grant becomes effective")
        if expires_ms <= now_ms:
            raise GrantError("the expiry must be in the future")
    grant_id = check_grant_id(request.grant_id) if request.grant_id is not None else new_grant_id()
    return GrantInfo(
        grant_id=grant_id,
        amount=request.amount.normalize() + Decimal(0),
        unit=unit.code,
        effective_ms=effective_ms,
        expires_ms=expires_ms,
        priority=request.priority,
        rollover_max=request.rollover_max.normalize() + Decimal(0) if request.rollover_max is not None else None,
        reason=request.reason,
        created_ms=now_ms,
        created_by=actor,
    )


@dataclass(frozen=True, slots=True)
class GrantOutcome:
    grant: GrantView
    created: bool
    ledger_error: str | None


@dataclass(frozen=True, slots=True)
class VoidOutcome:
    grant: GrantView
    removal: Removal
    voided_now: bool
    ledger_error: str | None

    @property
    def amount(self) -> Decimal:
        return from_micros(self.removal.remaining)


async def _write_missing(
    store: GrantStore, runner: LedgerRunner, customer_id: str, grant_ids: Sequence[str] | None
) -> tuple[int, str | None]:
    """Write the ledger entries Redis state calls for (of ``grant_ids``); (written, error message)."""
    try:
        snapshot = await store.snapshot(customer_id)

        def write(client: Any, database: str) -> int:
            existing = ledger.customer_rows(client, database, customer_id)
            return ledger.insert_entries(client, database, ledger.missing_entries(snapshot, existing, grant_ids))

        return await runner.run(write), None
    except WarehouseError as exc:
        return 0, str(exc)


async def make_grant(
    store: GrantStore,
    runner: LedgerRunner,
    customer_id: str,
    grant: GrantInfo,
    *,
    period_start_ms: int | None,
    effective_given: bool,
) -> GrantOutcome:
    """Make the grant (an idempotent retry of the same id returns the existing one) and write its ledger
    entry. The record starts as rolled at the current period's start (``period_start_ms``) when it became
    effective before it: a period boundary it was not held at cuts nothing. ``WarehouseError`` before
    anything is written when the ledger cannot be reached; ``GrantConflict`` for an id taken by another
    grant."""
    await runner.run(ledger.check_table)
    rolled_ms = grant.effective_ms if period_start_ms is None else max(grant.effective_ms, period_start_ms)
    result: MakeResult = await store.make(customer_id, grant, rolled_ms=rolled_ms)
    existing = result.grant.info
    if not result.created and (existing is None or not existing.same_request(grant, compare_effective=effective_given)):
        raise GrantConflict(
            f"grant id {grant.grant_id!r} of customer {customer_id!r} is a different grant "
            "(a retry must repeat the same amount, unit, times, priority, rollover and reason)"
        )
    _, error = await _write_missing(store, runner, customer_id, [grant.grant_id])
    return GrantOutcome(result.grant, result.created, error)


async def void_grant(
    store: GrantStore, runner: LedgerRunner, customer_id: str, grant_id: str, *, at: datetime, actor: str
) -> VoidOutcome:
    """Void a held grant: what it still holds leaves the balance, burned amounts stay burned. Voiding a
    removed grant again returns its removal (``voided_now`` False) and completes its ledger entries.
    ``GrantNotFound`` for an unknown id; ``WarehouseError`` with nothing changed when the ledger cannot be
    reached."""
    await runner.run(ledger.check_table)
    removal, voided_now = await store.void(customer_id, grant_id, at_ms=instant_ms(at), actor=actor)
    _, error = await _write_missing(store, runner, customer_id, [grant_id])
    view = await store.get(customer_id, grant_id)
    assert view is not None
    return VoidOutcome(view, removal, voided_now, error)


@dataclass(frozen=True, slots=True)
class SyncReport:
    customers: int
    expired: list[tuple[str, Removal]]
    written: int


async def sync(store: GrantStore, runner: LedgerRunner, *, now: datetime, customer_id: str | None = None) -> SyncReport:
    """Sweep the grants past expiry and write every ledger entry Redis state calls for and the ledger
    lacks (grants, voids, expiries, rollover cuts). Idempotent: a second run writes nothing."""
    await runner.run(ledger.check_table)
    customers = [customer_id] if customer_id is not None else await store.customers()
    expired: list[tuple[str, Removal]] = []
    written = 0
    for customer in customers:
        expired.extend((customer, removal) for removal in await store.expire(customer, instant_ms(now)))
        snapshot = await store.snapshot(customer)

        def write(client: Any, database: str, snapshot: CustomerCredits = snapshot) -> int:
            existing = ledger.customer_rows(client, database, snapshot.customer_id)
            return ledger.insert_entries(client, database, ledger.missing_entries(snapshot, existing))

        written += await runner.run(write)
    return SyncReport(len(customers), expired, written)


@dataclass(frozen=True, slots=True)
class Difference:
    """A customer whose Redis figure differs from the ledger's (micro-units of ``unit``)."""

    customer_id: str
    unit: str
    redis: int
    ledger: int

    def as_dict(self) -> dict[str, str]:
        return {
            "customer_id": self.customer_id,
            "unit": self.unit,
            "redis": format(from_micros(self.redis), "f"),
            "ledger": format(from_micros(self.ledger), "f"),
            "difference": format(from_micros(self.redis - self.ledger), "f"),
        }


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    checked: list[str]
    differences: list[Difference]


async def reconcile(store: GrantStore, runner: LedgerRunner, *, customer_id: str | None = None) -> ReconcileReport:
    """Check the identity of the module docstring for every customer (or one)."""

    def read(client: Any, database: str) -> tuple[dict[str, list[ledger.LedgerRow]], dict[str, int]]:
        ledger.check_table(client, database)
        return ledger.all_rows(client, database, customer_id), ledger.usage_burns(client, database, customer_id)

    rows, burns = await runner.run(read)
    customers = {customer_id} if customer_id is not None else set(await store.customers()) | set(rows) | set(burns)
    differences = []
    for customer in sorted(customers):
        snapshot = await store.snapshot(customer)
        redis_side = snapshot.held_total()
        ledger_side = ledger.summed(rows.get(customer, []), snapshot.records) - burns.get(customer, 0)
        if redis_side != ledger_side:
            differences.append(Difference(customer, snapshot.unit, redis_side, ledger_side))
    return ReconcileReport(sorted(customers), differences)
