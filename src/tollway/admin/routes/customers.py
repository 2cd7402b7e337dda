"""``/customers``: list, create, read and update customer records (with the billing details an invoice
names the buyer by: ``billing``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tollway.admin.customer_directory import all_customer_ids, require_known
from tollway.admin.dependencies import Reader, Recorder, Services
from tollway.admin.identifiers import IDENTIFIER, CustomerId
from tollway.admin.pagination import Page, PageRequest, next_link, page_request, paginate
from tollway.admin.problems import conflict, problem_responses
from tollway.admin.services import AdminServices
from tollway.customers.store import BillingDetails, CustomerRecord
from tollway.parties import (
    ADDRESS_LINE_MAX,
    ADDRESS_LINES_MAX,
    COUNTRY,
    EMAIL_MAX,
    NAME_MAX,
    PAYMENT_TERMS_MAX_DAYS,
    TAX_ID_MAX,
    TEXT,
)
from tollway.subscriptions.errors import UnreadableSubscription

router = APIRouter(tags=["customers"])

EMAIL = r"^[^@\s]{1,64}@[^@\s]{1,189}$"

AddressLine = Annotated[str, Field(min_length=1, max_length=ADDRESS_LINE_MAX, pattern=TEXT)]


class BillingDetailsIn(BaseModel):
    """The buyer's details on invoices (``tollway bill --finalize``). In an update, the fields given replace
    the stored ones and null clears one."""

    model_config = ConfigDict(extra="forbid")

    legal_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=NAME_MAX,
        pattern=TEXT,
        description="the name invoices give the buyer (default: display_name, else the customer id)",
    )
    address: list[AddressLine] | None = Field(default=None, max_length=ADDRESS_LINES_MAX, description="lines")
    country: str | None = Field(default=None, pattern=COUNTRY, description="ISO 3166-1 alpha-2, e.g. DE")
    tax_id: str | None = Field(default=None, min_length=1, max_length=TAX_ID_MAX, pattern=TEXT)
    email: str | None = Field(
        default=None, pattern=EMAIL, max_length=EMAIL_MAX, description="where invoices go (default: email)"
    )
    payment_terms_days: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=PAYMENT_TERMS_MAX_DAYS,
        description="days from issue to due date; replaces the seller's (TOLLWAY_SELLER_PAYMENT_TERMS_DAYS)",
    )


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(pattern=IDENTIFIER, max_length=128)
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, pattern=EMAIL, max_length=254)
    billing: BillingDetailsIn | None = None


class CustomerUpdate(BaseModel):
    """Fields given replace the stored ones; null clears one (``billing``: each field given replaces the
    stored one; ``billing: null`` clears them all)."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, pattern=EMAIL, max_length=254)
    billing: BillingDetailsIn | None = None


class BillingDetailsOut(BaseModel):
    legal_name: str | None
    address: list[str]
    country: str | None
    tax_id: str | None
    email: str | None
    payment_terms_days: int | None


def billing_details(given: BillingDetailsIn | None, current: BillingDetails) -> BillingDetails:
    """``current`` with the fields ``given`` names replaced (all cleared when ``given`` is None)."""
    if given is None:
        return BillingDetails()
    changes: dict[str, Any] = given.model_dump(include=given.model_fields_set)
    if "address" in changes:
        changes["address"] = tuple(changes["address"] or ())
    merged = {**current.as_dict(), "address": current.address, **changes}
    return BillingDetails(**merged)


class CustomerLinks(BaseModel):
    keys: str
    subscription: str
    usage: str
    invoices: str
    page: str


class Customer(BaseModel):
    customer_id: str
    display_name: str | None
    email: str | None
    created_at: str | None = Field(description="when the record was made; null for a customer without one")
    plan_id: str | None = Field(description="the current plan; null without a subscription")
    api_keys: int = Field(description="keys on record, whatever their state")
    links: CustomerLinks
    billing: BillingDetailsOut = Field(description="the buyer's details on invoices (empty without a record)")


async def describe(services: AdminServices, customer_id: str) -> Customer:
    record = await services.customers.get(customer_id)
    try:
        subscription = await services.subscriptions.get(customer_id)
        plan_id = subscription.plan_id if subscription else None
    except UnreadableSubscription:
        plan_id = None
    keys = await services.keyring.list(customer_id)
    base = f"/customers/{customer_id}"
    return Customer(
        customer_id=customer_id,
        display_name=record.display_name if record else None,
        email=record.email if record else None,
        created_at=record.as_dict()["created_at"] if record else None,
        plan_id=plan_id,
        api_keys=len(keys),
        links=CustomerLinks(
            keys=f"{base}/keys",
            subscription=f"{base}/subscription",
            usage=f"{base}/usage",
            invoices=f"{base}/invoices",
            page=f"{base}/page",
        ),
        billing=BillingDetailsOut(**(record.billing if record else BillingDetails()).as_dict()),
    )


@router.get("/customers", response_model=Page[Customer], responses=problem_responses(400, 401, 403, 422, 503))
async def list_customers(
    request: Request, services: Services, _: Reader, page: Annotated[PageRequest, Depends(page_request)]
) -> Page[Customer]:
    """Customers with a record or a subscription, by id."""
    ids, cursor = paginate(sorted(await all_customer_ids(services)), lambda c: (c,), page)
    return Page[Customer](items=[await describe(services, c) for c in ids], next=next_link(request, cursor))


@router.post(
    "/customers",
    status_code=201,
    response_model=Customer,
    responses=problem_responses(401, 403, 409, 422, 503),
)
async def create_customer(body: CustomerCreate, response: Response, services: Services, record: Recorder) -> Customer:
    """Make a customer record (409 if it has one already)."""
    if await services.customers.get(body.customer_id) is not None:
        raise conflict(f"Customer {body.customer_id!r} exists already.")
    created = CustomerRecord(
        body.customer_id,
        body.display_name,
        body.email,
        services.clock.now(),
        billing_details(body.billing, BillingDetails()),
    )
    await services.customers.put(created)
    await record(
        "customer.create",
        "customer",
        body.customer_id,
        customer_id=body.customer_id,
        before=None,
        after=created.as_dict(),
    )
    response.headers["Location"] = f"/customers/{body.customer_id}"
    return await describe(services, body.customer_id)


@router.get("/customers/{customer_id}", response_model=Customer, responses=problem_responses(401, 403, 404, 422, 503))
async def get_customer(customer_id: CustomerId, services: Services, _: Reader) -> Customer:
    await require_known(services, customer_id)
    return await describe(services, customer_id)


@router.patch("/customers/{customer_id}", response_model=Customer, responses=problem_responses(401, 403, 404, 422, 503))
async def update_customer(
    customer_id: CustomerId, body: CustomerUpdate, services: Services, record: Recorder
) -> Customer:
    """Change the display name, email or billing details; a customer known only by keys or subscription
    gets a record."""
    await require_known(services, customer_id)
    previous = await services.customers.get(customer_id)
    current = previous or CustomerRecord(customer_id, None, None, services.clock.now())
    changes = body.model_dump(include=body.model_fields_set)
    updated = CustomerRecord(
        customer_id,
        changes.get("display_name", current.display_name),
        changes.get("email", current.email),
        current.created_at,
        billing_details(body.billing, current.billing) if "billing" in changes else current.billing,
    )
    if updated != previous:
        await services.customers.put(updated)
        await record(
            "customer.update",
            "customer",
            customer_id,
            customer_id=customer_id,
            before=previous.as_dict() if previous else None,
            after=updated.as_dict(),
        )
    return await describe(services, customer_id)
