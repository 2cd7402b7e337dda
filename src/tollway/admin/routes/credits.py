"""A customer's prepaid balance: credit grants (make, list, read, void) and the live balance. The rules
are ``tollway credits``' (``tollway.credits.operations``): a grant is made in Redis, then its ledger entry
is written to ClickHouse (``"ledger": "pending"`` in the answer when that write failed; ``tollway credits
sync`` completes it). Amounts are decimal strings, never JSON numbers."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tollway.admin.customer_directory import require_known
from tollway.admin.dependencies import Reader, Recorder, Services
from tollway.admin.identifiers import CustomerId
from tollway.admin.instants import Instant
from tollway.admin.pagination import Page, PageRequest, next_link, page_request, paginate
from tollway.admin.problems import conflict, invalid, not_found, problem_responses
from tollway.admin.services import AdminServices
from tollway.credits.grants import GRANT_ID
from tollway.credits.operations import (
    MAX_PRIORITY,
    MAX_REASON,
    MIN_PRIORITY,
    GrantRequest,
    balance_unit,
    build_grant,
    default_unit,
    load_catalog_file,
    make_grant,
    void_grant,
)
from tollway.credits.store import (
    GrantConflict,
    GrantError,
    GrantNotFound,
    GrantView,
    format_ms,
    instant_ms,
    live_balance,
    plain,
)
from tollway.credits.units import AmountError, from_micros
from tollway.subscriptions.model import Subscription

log = logging.getLogger(__name__)

router = APIRouter(tags=["credits"])

AMOUNT_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,6})?$"
GrantId = Annotated[
    str, Path(pattern=f"^{GRANT_ID.pattern}$", description="a grant id: 1-64 of letters, digits and . _ -")
]
AmountText = Annotated[
    str,
    StringConstraints(pattern=AMOUNT_PATTERN),
    Field(description='a decimal string in ASCII digits, e.g. "25" or "12.50" (never a JSON number)'),
]


class CreditGrant(BaseModel):
    grant_id: str
    customer_id: str
    status: Literal["active", "scheduled", "expired", "voided"]
    unit: str
    amount: str | None = Field(description="what was granted (null for the limiter's returned-amount record)")
    remaining: str = Field(description="what is left to burn (0 once voided or expired)")
    forfeited: str = Field(description="what period boundaries cut under the rollover rule")
    priority: int
    effective_at: str | None
    expires_at: str | None
    rollover_max: str | None = Field(description="kept at each period end; null: no rule (all is kept)")
    reason: str
    created_at: str | None
    created_by: str | None
    voided_at: str | None
    voided_by: str | None
    voided_amount: str | None = Field(description="what the void took: the remaining then, never burned amounts")
    expired_amount: str | None


class CreditGrantWritten(CreditGrant):
    ledger: Literal["recorded", "pending"] = Field(
        description="pending: the change is made, its ledger entry is not written yet (tollway credits sync)"
    )


class CreditGrantCreate(BaseModel):
    """A grant of `amount` in `unit` (default: the customer's plan currency in the catalog). With a
    `grant_id`, a retry of the same request answers 200 with the existing grant; a different request
    with that id is a 409."""

    model_config = ConfigDict(extra="forbid")

    amount: AmountText
    unit: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")] | None = None
    effective_at: Instant | None = Field(default=None, description="default: now")
    expires_at: Instant | None = Field(default=None, description="after effective_at and now; none: never")
    priority: int = Field(default=0, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="lower burns first")
    rollover_max: AmountText | None = Field(
        default=None, description='at each period end keep at most this much ("0": nothing); none: keep all'
    )
    reason: str = Field(default="", max_length=MAX_REASON)
    grant_id: Annotated[str, StringConstraints(pattern=f"^{GRANT_ID.pattern}$")] | None = Field(
        default=None, description="for idempotent retries; default: a new grt_… id"
    )


class Balance(BaseModel):
    customer_id: str
    unit: str = Field(description="the unit of the customer's grants ('' without any)")
    balance: str = Field(description="Σ remaining of the grants live now, as the next check sees it")
    grants: int = Field(description="grants held (live, scheduled, or expired and not swept yet)")
    at: str


def to_grant(view: GrantView, services: AdminServices) -> CreditGrant:
    return CreditGrant.model_validate(view.as_dict(instant_ms(services.clock.now())))


def _written(view: GrantView, services: AdminServices, ledger_error: str | None) -> CreditGrantWritten:
    if ledger_error is not None:
        log.warning(
            "credit grant %s of %s: ledger entry not written: %s", view.grant_id, view.customer_id, ledger_error
        )
    body = view.as_dict(instant_ms(services.clock.now()))
    return CreditGrantWritten.model_validate({**body, "ledger": "pending" if ledger_error else "recorded"})


async def _subscription(services: AdminServices, customer_id: str) -> Subscription:
    await require_known(services, customer_id)
    found = await services.subscriptions.get(customer_id)
    if found is None:
        raise invalid(f"Customer {customer_id!r} has no subscription: a balance needs one.", ["path", "customer_id"])
    return found


def _audit_view(view: CreditGrant) -> dict[str, Any]:
    return view.model_dump(exclude={"ledger"})


GRANT_PROBLEMS = problem_responses(401, 403, 404, 409, 422, 503)


def _sort_key(view: CreditGrant) -> tuple[str, str]:
    return (view.created_at or "", view.grant_id)


@router.get(
    "/customers/{customer_id}/credit-grants",
    response_model=Page[CreditGrant],
    responses=problem_responses(400, 401, 403, 404, 422, 503),
)
async def list_grants(
    request: Request,
    customer_id: CustomerId,
    services: Services,
    _: Reader,
    page: Annotated[PageRequest, Depends(page_request)],
) -> Page[CreditGrant]:
    """Every grant of the customer, oldest first: held ones with what remains, voided and expired ones
    with what their removal took."""
    await require_known(services, customer_id)
    grants = [to_grant(v, services) for v in await services.grants.list(customer_id)]
    shown, cursor = paginate(grants, _sort_key, page)
    return Page[CreditGrant](items=shown, next=next_link(request, cursor))


@router.post(
    "/customers/{customer_id}/credit-grants",
    status_code=201,
    response_model=CreditGrantWritten,
    responses={200: {"description": "The same grant again (a retry)", "model": CreditGrantWritten}, **GRANT_PROBLEMS},
)
async def create_grant(
    customer_id: CustomerId, body: CreditGrantCreate, response: Response, services: Services, record: Recorder
) -> CreditGrantWritten:
    """Give the customer an amount to burn. 201 with the new grant; 200 with the existing one for a retry
    of the same `grant_id` and request."""
    subscription = await _subscription(services, customer_id)
    now = services.clock.now()
    try:
        catalog = load_catalog_file(services.catalog_path)
        unit = balance_unit(body.unit if body.unit is not None else default_unit(catalog, subscription), catalog)
        info = build_grant(
            GrantRequest(
                amount=Decimal(body.amount),
                unit=unit,
                effective_at=body.effective_at,
                expires_at=body.expires_at,
                priority=body.priority,
                rollover_max=Decimal(body.rollover_max) if body.rollover_max is not None else None,
                reason=body.reason,
                grant_id=body.grant_id,
            ),
            now=now,
            actor=record.actor,
        )
    except (AmountError, GrantError, ValueError) as exc:
        raise invalid(str(exc).replace("--", "")) from None
    try:
        outcome = await make_grant(
            services.grants,
            services.warehouse,
            customer_id,
            info,
            period_start_ms=instant_ms(subscription.current_period(now).start),
            effective_given=body.effective_at is not None,
        )
    except GrantConflict as exc:
        raise conflict(str(exc)) from None
    except GrantError as exc:  # too many grants
        raise conflict(str(exc)) from None
    written = _written(outcome.grant, services, outcome.ledger_error)
    response.headers["Location"] = f"/customers/{customer_id}/credit-grants/{written.grant_id}"
    if outcome.created:
        await record(
            "credit_grant.create",
            "credit_grant",
            written.grant_id,
            customer_id=customer_id,
            before=None,
            after=_audit_view(written),
        )
    else:
        response.status_code = 200
    return written


@router.get(
    "/customers/{customer_id}/credit-grants/{grant_id}",
    response_model=CreditGrant,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def get_grant(customer_id: CustomerId, grant_id: GrantId, services: Services, _: Reader) -> CreditGrant:
    await require_known(services, customer_id)
    view = await services.grants.get(customer_id, grant_id)
    if view is None:
        raise not_found(f"Credit grant {grant_id!r} of customer {customer_id!r}")
    return to_grant(view, services)


@router.post(
    "/customers/{customer_id}/credit-grants/{grant_id}/void",
    response_model=CreditGrantWritten,
    responses=GRANT_PROBLEMS,
)
async def void(customer_id: CustomerId, grant_id: GrantId, services: Services, record: Recorder) -> CreditGrantWritten:
    """Void a grant: what it still holds leaves the balance (burned amounts stay burned). Voiding a
    voided grant changes nothing; an expired grant is a 409."""
    await require_known(services, customer_id)
    before = await services.grants.get(customer_id, grant_id)
    if before is None:
        raise not_found(f"Credit grant {grant_id!r} of customer {customer_id!r}")
    if before.removal is not None and before.removal.kind == "expired":
        raise conflict(f"Credit grant {grant_id!r} expired; there is nothing to void.")
    try:
        outcome = await void_grant(
            services.grants, services.warehouse, customer_id, grant_id, at=services.clock.now(), actor=record.actor
        )
    except GrantNotFound:
        raise not_found(f"Credit grant {grant_id!r} of customer {customer_id!r}") from None
    if outcome.removal.kind == "expired":
        raise conflict(f"Credit grant {grant_id!r} expired; there is nothing to void.")
    written = _written(outcome.grant, services, outcome.ledger_error)
    if outcome.voided_now:
        await record(
            "credit_grant.void",
            "credit_grant",
            grant_id,
            customer_id=customer_id,
            before=to_grant(before, services).model_dump(),
            after=_audit_view(written),
        )
    return written


@router.get(
    "/customers/{customer_id}/balance", response_model=Balance, responses=problem_responses(401, 403, 404, 422, 503)
)
async def get_balance(customer_id: CustomerId, services: Services, _: Reader) -> Balance:
    """The live balance: what the customer's next request can burn (after the rollover the limiter
    applies at the first check of a period)."""
    await require_known(services, customer_id)
    now = services.clock.now()
    subscription = await services.subscriptions.get(customer_id)
    period_start = instant_ms(subscription.current_period(now).start) if subscription is not None else None
    snapshot = await services.grants.snapshot(customer_id)
    micros = live_balance(snapshot.records.values(), instant_ms(now), period_start)
    return Balance(
        customer_id=customer_id,
        unit=snapshot.unit,
        balance=plain(from_micros(micros)),
        grants=len(snapshot.records),
        at=format_ms(instant_ms(now)),
    )
