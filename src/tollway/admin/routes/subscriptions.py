"""A customer's subscription: read, create or replace, change plan from a given instant (recorded with
``Subscription.changed_to``, so billing prorates the period between the plans), replace the limit
overrides, delete. The rules are the CLI's (``tollway.cli.subscriptions.build_subscription``); with
``TOLLWAY_CATALOG`` set, plans and override names are checked against the catalog."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
)

from tollway.admin.customer_directory import require_known
from tollway.admin.dependencies import ChangeRecorder, Reader, Recorder, Services
from tollway.admin.identifiers import IDENTIFIER, CustomerId
from tollway.admin.instants import EARLIEST, LATEST
from tollway.admin.problems import ProblemError, conflict, invalid, not_found, problem_responses
from tollway.admin.services import AdminServices
from tollway.billing.errors import BillingError
from tollway.billing.migration import preview_migration
from tollway.notifications.emitter import emit_after_commit
from tollway.notifications.lifecycle import subscription_changed
from tollway.periods import INTERVALS, Interval, interval_error
from tollway.plans.errors import CatalogError
from tollway.plans.loader import load_catalog
from tollway.subscriptions import phases as subscription_phases
from tollway.subscriptions.addons import check_sale, with_quantity
from tollway.subscriptions.errors import UnreadableSubscription
from tollway.subscriptions.migration import NEXT_PERIOD, plan_migration, target_version
from tollway.subscriptions.model import MAX_ADDON_QUANTITY, Subscription
from tollway.subscriptions.phases import MAX_LENGTH, MAX_PHASES, PhaseRequest
from tollway.subscriptions.requests import (
    build_subscription,
    catalog_phases,
    check_addons_kept,
    check_against_catalog,
    check_plan_interval,
    parse_time,
    pinned_plan,
    subscription_json,
)

router = APIRouter(tags=["subscriptions"])

# Limits up to 10^15: exact in every JSON parser (the store takes up to 2^63-1).
MAX_OVERRIDE = 10**15

PlanId = Annotated[str, StringConstraints(pattern=IDENTIFIER, max_length=128)]
OverrideName = Annotated[str, StringConstraints(pattern=IDENTIFIER, max_length=128)]
AddOnId = Annotated[str, PathParam(pattern=IDENTIFIER, max_length=128, description="an add-on of the catalog")]
OverrideLimit = Annotated[int, Field(ge=0, le=MAX_OVERRIDE)]
# An override is a whole JSON object of name -> limit: names outside the pattern are refused too.
OVERRIDES_SCHEMA: dict[str, Any] = {"additionalProperties": False}
TimeText = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def _interval(value: object) -> object:
    if isinstance(value, str) and value in INTERVALS:
        return value
    raise ValueError(interval_error(value))


IntervalName = Annotated[Interval, BeforeValidator(_interval)]


class PlanChangeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    at: str
    from_plan: str = Field(alias="from")
    to: str
    phase: bool = Field(default=False, description="the end of a phase (trial, ramp); present only when true")

    @model_serializer(mode="wrap")
    def _phase_only_when_true(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        if not self.phase:
            data.pop("phase", None)
        return data


class PhaseIn(BaseModel):
    """One phase of a new subscription, before its `plan_id`: a plan (e.g. `pro:trial`, a phase the
    catalog compiled) and exactly one of `days`, `periods` or `end` (`start`, if given, must be where
    the previous phase ends)."""

    model_config = ConfigDict(extra="forbid")

    plan_id: PlanId
    days: Annotated[int, Field(ge=1, le=MAX_LENGTH)] | None = None
    periods: Annotated[int, Field(ge=1, le=MAX_LENGTH)] | None = None
    start: TimeText | None = None
    end: TimeText | None = None


class CurrentPeriod(BaseModel):
    index: int
    start: str
    end: str
    start_local: str
    end_local: str


class AddOnOut(BaseModel):
    addon: str
    quantity: int
    start: str
    end: str | None = Field(description="null: still held")


class SubscriptionOut(BaseModel):
    customer_id: str
    plan_id: str
    started_at: str
    timezone: str
    alignment: Literal["calendar", "anniversary"]
    anchor: str
    anchor_local: str
    interval: Interval
    overrides: dict[str, int]
    plan_changes: list[PlanChangeOut]
    current_period: CurrentPeriod
    addons: list[AddOnOut] = Field(
        default_factory=list, description="the add-ons held, each quantity over its span (docs/billing.md#add-ons)"
    )
    overdue: list[str] = Field(
        default_factory=list,
        description="the invoices whose payment failed and is not yet made: while any is, the gateway applies the "
        "plan's overdue policy (docs/payments.md#overdue-customers-at-the-gateway)",
    )


class SubscriptionPut(BaseModel):
    """The whole subscription. On an existing one (same start), a different `plan_id` is a plan change
    effective now and omitted options keep their values; `overrides` replace the old ones (none given:
    none kept). Times: `now` or ISO 8601; without an offset, wall-clock time in the `timezone`."""

    model_config = ConfigDict(extra="forbid")

    plan_id: PlanId
    started_at: TimeText | None = Field(default=None, description="default: now for a new subscription")
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="IANA timezone of the billing periods (default UTC)"
    )
    alignment: Literal["calendar", "anniversary"] | None = None
    anchor: TimeText | None = Field(default=None, description="anniversary anchor (default: the start)")
    interval: IntervalName | None = Field(default=None, description="default: the plan's pricing interval, else month")
    overrides: dict[OverrideName, OverrideLimit] = Field(default_factory=dict, json_schema_extra=OVERRIDES_SCHEMA)
    phases: list[PhaseIn] | None = Field(
        default=None,
        max_length=MAX_PHASES,
        description="a new subscription's phases before plan_id, in order (default: the plan's catalog phases; "
        "[]: none). On a running subscription, only the phases it has (docs/billing.md, phases)",
    )


class PlanChangeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan_id: PlanId
    effective: TimeText = Field(default="now", description="now or an earlier instant, after the last change")


class MigrationCreate(BaseModel):
    """Move the customer to another version of their plan (docs/billing.md, plan versions)."""

    model_config = ConfigDict(extra="forbid")

    to: PlanId = Field(description="the version to move to, e.g. pro@2 (a bare plan id: its latest version)")
    effective: TimeText = Field(
        default=NEXT_PERIOD,
        description="next-period (the start of the customer's next period), now, or a later instant",
    )
    preview: bool = Field(
        default=False, description="show the current and next invoice before and after; write nothing"
    )


class InvoicePreview(BaseModel):
    plans: list[str]
    total: str


class PeriodPreviewOut(BaseModel):
    period: Literal["current", "next"]
    start: str
    end: str
    currency: str | None
    before: InvoicePreview | None
    after: InvoicePreview | None
    difference: str | None


class MigrationOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    customer_id: str
    from_plan: str = Field(alias="from")
    to: str
    effective_at: str
    scheduled: bool
    cancelled: bool = Field(description="the migration took back a scheduled change (effective_at: when it was due)")
    preview: bool
    invoices: list[PeriodPreviewOut] | None = Field(default=None, description="with preview: true")
    subscription: SubscriptionOut = Field(description="as it stands after the migration (with preview: as it would)")


class AddOnPut(BaseModel):
    """Hold `quantity` of the add-on from `effective` on (0: stop holding it). The plan held then must
    allow it (the catalog's `addons`); needs `TOLLWAY_CATALOG`."""

    model_config = ConfigDict(extra="forbid")

    quantity: Annotated[int, Field(ge=0, le=MAX_ADDON_QUANTITY)] = 1
    effective: TimeText = Field(default="now", description="now or an ISO 8601 instant")


class OverridesPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overrides: dict[OverrideName, OverrideLimit] = Field(json_schema_extra=OVERRIDES_SCHEMA)


def to_out(subscription: Subscription, services: AdminServices) -> SubscriptionOut:
    return SubscriptionOut.model_validate(subscription_json(subscription, services.clock.now()))


def _as_dict(subscription: Subscription | None, services: AdminServices) -> dict[str, Any] | None:
    if subscription is None:
        return None
    # The audit trail of a subscription without add-ons reads as it always did.
    exclude = {"current_period"} if subscription.addons else {"current_period", "addons"}
    return to_out(subscription, services).model_dump(by_alias=True, exclude=exclude)


def _check_catalog(services: AdminServices, plan_id: str, overrides: Mapping[str, int]) -> str | None:
    """The plan's billing interval from the catalog (None without a catalog); 422 for an unknown plan
    or an override naming no limit or quota of the plan."""
    if services.catalog_path is None:
        return None
    try:
        return check_against_catalog(services.catalog_path, plan_id, overrides)
    except ValueError as exc:
        raise invalid(str(exc)) from None


async def _announce(services: AdminServices, previous: Subscription | None, current: Subscription) -> None:
    """``subscription.changed`` of a committed plan change or new subscription (docs/notifications.md)."""
    change = subscription_changed(previous, current, services.clock.now())
    if change is not None:
        await emit_after_commit(services.events, [change])


def _pinned(services: AdminServices, plan_id: str, held: str | None) -> str:
    """A bare id of a versioned plan: its latest version, unless the customer holds one (``plans.versions``)."""
    if services.catalog_path is None:
        return plan_id
    try:
        return pinned_plan(services.catalog_path, plan_id, held)
    except ValueError as exc:
        raise invalid(str(exc), ["body", "plan_id"]) from None


def _phases(
    services: AdminServices,
    body: SubscriptionPut,
    plan_id: str,
    previous: Subscription | None,
    plan_interval: str | None,
) -> tuple[list[PhaseRequest] | None, list[PhaseRequest]]:
    """The phases asked for (times in the subscription's timezone) and the catalog's defaults for the
    plan; with a catalog, each phase's plan pinned and checked (``requests.catalog_phases``). ``ValueError``."""
    timezone = body.timezone or (previous.timezone if previous else "UTC")
    now = services.clock.now()
    asked = None
    if body.phases is not None:
        asked = [
            PhaseRequest(
                phase.plan_id,
                days=phase.days,
                periods=phase.periods,
                start=None if phase.start is None else parse_time("start", phase.start, timezone, now),
                end=None if phase.end is None else parse_time("end", phase.end, timezone, now),
            )
            for phase in body.phases
        ]
    if services.catalog_path is None:
        return asked, []
    return catalog_phases(services.catalog_path, plan_id, asked, plan_interval)


async def _store(
    services: AdminServices,
    record: ChangeRecorder,
    action: str,
    previous: Subscription | None,
    current: Subscription,
    *,
    announce: bool = True,
) -> None:
    """Write ``current``, emit its lifecycle events (``announce``: the changes that have some), and audit
    ``action`` with the subscription before and after."""
    await services.subscriptions.put(current)
    if announce:
        await _announce(services, previous, current)
    customer_id = current.customer_id
    before, after = _as_dict(previous, services), _as_dict(current, services)
    await record(action, "subscription", customer_id, customer_id=customer_id, before=before, after=after)


def _within_range(subscription: Subscription) -> Subscription:
    for name, value in (("started_at", subscription.started_at), ("anchor", subscription.anchor)):
        if not EARLIEST <= value < LATEST:
            raise invalid(f"{name} must be from 1970 to 2199", ["body", name])
    if any(change.phase and change.at >= LATEST for change in subscription.changes):
        raise invalid("phases must end before 2200", ["body", "phases"])
    return subscription


async def _current(services: AdminServices, customer_id: str) -> Subscription:
    await require_known(services, customer_id)
    found = await services.subscriptions.get(customer_id)
    if found is None:
        raise not_found(f"The subscription of customer {customer_id!r}")
    return found


SUBSCRIPTION_PROBLEMS = problem_responses(401, 403, 404, 422, 503)


@router.get("/customers/{customer_id}/subscription", response_model=SubscriptionOut, responses=SUBSCRIPTION_PROBLEMS)
async def get_subscription(customer_id: CustomerId, services: Services, _: Reader) -> SubscriptionOut:
    """The plan, overrides, plan changes and current billing period."""
    return to_out(await _current(services, customer_id), services)


@router.put(
    "/customers/{customer_id}/subscription",
    response_model=SubscriptionOut,
    responses={201: {"description": "Created", "model": SubscriptionOut}, **SUBSCRIPTION_PROBLEMS},
)
async def put_subscription(
    customer_id: CustomerId, body: SubscriptionPut, response: Response, services: Services, record: Recorder
) -> SubscriptionOut:
    """Create (201) or replace (200) the subscription."""
    await require_known(services, customer_id)
    try:
        previous = await services.subscriptions.get(customer_id)
    except UnreadableSubscription:
        previous = None  # replaced, as `tollway subscriptions set` does
    plan_id = _pinned(services, body.plan_id, previous.plan_id if previous else None)
    catalog_interval = _check_catalog(services, plan_id, body.overrides)
    args = argparse.Namespace(
        customer=customer_id,
        plan=plan_id,
        start=body.started_at,
        timezone=body.timezone,
        alignment=body.alignment,
        anchor=body.anchor,
        interval=body.interval,
        effective=None,
    )
    try:
        args.phases, args.default_phases = _phases(services, body, plan_id, previous, catalog_interval)
        subscription = _within_range(
            build_subscription(args, services.clock.now(), previous, body.overrides, catalog_interval)
        )
        if services.catalog_path is not None and previous is not None and previous.plan_id != subscription.plan_id:
            check_addons_kept(services.catalog_path, subscription)
    except (ValueError, OverflowError) as exc:
        raise invalid(str(exc).replace("--", "")) from None
    action = "subscription.replace" if previous else "subscription.create"
    await _store(services, record, action, previous, subscription)
    if previous is None:
        response.status_code = 201
        response.headers["Location"] = f"/customers/{customer_id}/subscription"
    return to_out(subscription, services)


@router.post(
    "/customers/{customer_id}/subscription/plan-changes",
    status_code=201,
    response_model=SubscriptionOut,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def change_plan(
    customer_id: CustomerId, body: PlanChangeCreate, services: Services, record: Recorder
) -> SubscriptionOut:
    """Move the customer to another plan from `effective` on (now or earlier, after the start and the
    last change). The invoice of that period has one part per plan, each prorated (docs/billing.md).
    During a phase (a trial, a ramp), the phase in force ends at `effective` and those to come are
    dropped; naming the plan the phases lead to converts early."""
    previous = await _current(services, customer_id)
    plan_id = _pinned(services, body.plan_id, previous.plan_id)
    now = services.clock.now()
    # The plan the customer's phases lead to ends the phase in force (a trial converting early).
    if plan_id == previous.plan_id and not subscription_phases.in_phase(previous, now):
        raise conflict(f"Customer {customer_id!r} is on plan {plan_id!r} already.")
    plan_interval = _check_catalog(services, plan_id, previous.overrides)
    if plan_interval is not None:
        try:
            check_plan_interval(plan_id, plan_interval, previous.interval)
        except ValueError as exc:
            raise invalid(str(exc).replace(f" (--interval {previous.interval})", ""), ["body", "plan_id"]) from None
    try:
        at = parse_time("effective", body.effective, previous.timezone, now)
        if at > now:
            raise ValueError(f"effective {body.effective}: a plan change takes effect now or earlier, not later")
        changed = subscription_phases.change_plan(previous, plan_id, at)  # ends the phase in force, drops those to come
    except (ValueError, OverflowError) as exc:
        raise invalid(str(exc), ["body", "effective"]) from None
    if services.catalog_path is not None:
        try:
            check_addons_kept(services.catalog_path, changed)
        except ValueError as exc:
            raise invalid(str(exc), ["body", "plan_id"]) from None
    await _store(services, record, "subscription.plan_change", previous, changed)
    return to_out(changed, services)


@router.post(
    "/customers/{customer_id}/subscription/migrations",
    response_model=MigrationOut,
    responses={
        201: {"description": "Migrated", "model": MigrationOut},
        **problem_responses(401, 403, 404, 409, 422, 503),
    },
)
async def migrate(
    customer_id: CustomerId, body: MigrationCreate, response: Response, services: Services, record: Recorder
) -> MigrationOut:
    """Move the customer to another version of their plan from `effective` on (default: their next period;
    a later instant is scheduled: the gateway enforces the version held until then). With `preview`, the
    answer (200) shows the current and next invoice before and after, from the usage so far, and nothing
    is written; else the change is stored (201). Needs `TOLLWAY_CATALOG`; a version the catalog does not
    have is a 422, the version held already a 409."""
    previous = await _current(services, customer_id)
    if services.catalog_path is None:
        raise invalid("a migration needs the plan catalog: set TOLLWAY_CATALOG", ["body", "to"])
    now = services.clock.now()
    try:
        catalog = load_catalog(services.catalog_path)
    except (CatalogError, OSError) as exc:
        raise invalid(f"the catalog cannot be read: {exc}", ["body", "to"]) from None
    try:
        target = target_version(catalog.plans, body.to)
    except ValueError as exc:
        raise invalid(str(exc), ["body", "to"]) from None
    try:
        pricing = catalog.plans[target].pricing
        interval = pricing.interval if pricing is not None else None
        migrations, unchanged = plan_migration([previous], target, body.effective, now, interval)
    except (ValueError, OverflowError) as exc:
        raise invalid(str(exc).replace("--", ""), ["body", "effective"]) from None
    if unchanged:
        raise conflict(f"Customer {customer_id!r} is on {target!r} already.")
    [migration] = migrations
    if not migration.cancelled and not migration.at < LATEST:
        raise invalid("effective must be before 2200", ["body", "effective"])
    shown = migration.as_dict(now)
    invoices = None
    if body.preview:
        try:
            periods = await services.warehouse.run(
                lambda client, database: preview_migration(client, database, catalog, previous, migration.after, now)
            )
        except BillingError as exc:  # e.g. a version without pricing: nothing to preview
            raise invalid(str(exc), ["body", "to"]) from None
        invoices = [PeriodPreviewOut.model_validate(period.as_dict()) for period in periods]
    else:
        await _store(services, record, "subscription.migrate", previous, _within_range(migration.after))
        response.status_code = 201
    return MigrationOut.model_validate(
        {**shown, "preview": body.preview, "invoices": invoices, "subscription": to_out(migration.after, services)}
    )


@router.put(
    "/customers/{customer_id}/subscription/addons/{addon_id}",
    response_model=SubscriptionOut,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def put_addon(
    customer_id: CustomerId, addon_id: AddOnId, body: AddOnPut, services: Services, record: Recorder
) -> SubscriptionOut:
    """Buy, re-size or remove (`quantity: 0`) an add-on from `effective` on. Billing prices each quantity
    over the time it was held, on the add-on's own section of the invoice; the gateway enforces the
    combination (docs/entitlements.md#add-ons) within a second. An add-on the plan does not allow, or a
    quantity out of its range, is a 422 and nothing is written."""
    previous = await _current(services, customer_id)
    if services.catalog_path is None:
        raise invalid("an add-on needs the plan catalog: set TOLLWAY_CATALOG", ["path", "addon_id"])
    try:
        catalog = load_catalog(services.catalog_path)
    except (CatalogError, OSError) as exc:
        raise invalid(f"the catalog cannot be read: {exc}", ["path", "addon_id"]) from None
    try:
        at = parse_time("effective", body.effective, previous.timezone, services.clock.now())
    except (ValueError, OverflowError) as exc:
        raise invalid(str(exc), ["body", "effective"]) from None
    if not EARLIEST <= at < LATEST:
        raise invalid("effective must be from 1970 to 2199", ["body", "effective"])
    try:
        check_sale(catalog.plans, previous, addon_id, body.quantity, at)
    except ValueError as exc:
        raise invalid(str(exc), ["path", "addon_id"]) from None
    try:
        updated = with_quantity(previous, addon_id, body.quantity, at)
    except ValueError as exc:
        raise invalid(str(exc), ["body", "effective"]) from None
    if updated is not previous:
        await _store(services, record, "subscription.addon", previous, updated, announce=False)
    return to_out(updated, services)


@router.put(
    "/customers/{customer_id}/subscription/overrides", response_model=SubscriptionOut, responses=SUBSCRIPTION_PROBLEMS
)
async def put_overrides(
    customer_id: CustomerId, body: OverridesPut, services: Services, record: Recorder
) -> SubscriptionOut:
    """Replace the customer's limit overrides (an empty object removes them all)."""
    previous = await _current(services, customer_id)
    _check_catalog(services, previous.plan_id, body.overrides)
    try:
        updated = replace(previous, overrides=body.overrides)
    except ValueError as exc:
        raise invalid(str(exc), ["body", "overrides"]) from None
    if updated.overrides != previous.overrides:
        await _store(services, record, "subscription.overrides", previous, updated, announce=False)
    return to_out(updated, services)


@router.delete(
    "/customers/{customer_id}/subscription", status_code=204, response_class=Response, responses=SUBSCRIPTION_PROBLEMS
)
async def delete_subscription(customer_id: CustomerId, services: Services, record: Recorder) -> Response:
    """End the subscription: every running Tollway refuses the customer's requests within 1 s."""
    previous = await _current(services, customer_id)
    if not await services.subscriptions.delete(customer_id):
        raise ProblemError(404, "not-found", f"The subscription of customer {customer_id!r} does not exist.")
    await record(
        "subscription.delete",
        "subscription",
        customer_id,
        customer_id=customer_id,
        before=_as_dict(previous, services),
        after=None,
    )
    return Response(status_code=204)
