"""A finalized Tollway invoice document → the Stripe parameters that push it (pure: no I/O).

What is pushed and how it maps (docs/payments.md, "What is pushed"):

* the customer: ``metadata.tollway_customer_id``, and the buyer's name, email and address when the
  document has them (``document["buyer"]``, set at finalization);
* one Stripe invoice per Tollway invoice: ``metadata.tollway_invoice_id`` / ``tollway_customer_id``,
  the currency, the collection method, Tollway's number (``number``) and due date (``due_date``) when
  the document has them, created with ``auto_advance=False`` so Stripe never finalizes it half-built;
* one invoice item per line, attached to that invoice: the line's amount in integer minor units
  (negative for discounts, coupons and interim credits), ``discountable=False`` (Tollway's discounts are
  lines of their own: a Stripe coupon must not discount them again), metadata naming the line;
* finalization, with the configured ``auto_advance``.

Every call that creates something carries an idempotency key derived from Tollway's ids alone
(``idempotency_key``), so a retry of the same step (after a timeout, a crash, ``kill -9``) is the same
request and Stripe answers it with the object the first attempt created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final, Literal

from stripe.params import (
    CustomerCreateParams,
    CustomerCreateParamsAddress,
    InvoiceCreateParams,
    InvoiceFinalizeInvoiceParams,
    InvoiceItemCreateParams,
    InvoiceItemCreateParamsPeriod,
)

from tollway.billing.errors import BillingError, UnknownCurrency
from tollway.payments.minor_units import AmountNotInMinorUnits, to_minor_units

CollectionMethod = Literal["send_invoice", "charge_automatically"]

KEY_VERSION: Final = "v1"
"""The last part of every idempotency key: bump it only if the parameters of a step change meaning (a
new version is a new request to Stripe: never do it while pushes are half-done)."""

CUSTOMER_ID_KEY: Final = "tollway_customer_id"
INVOICE_ID_KEY: Final = "tollway_invoice_id"
LINE_KEY: Final = "tollway_line"
"""The 1-based number of the line in the document's ``lines``: how a resumed push recognizes the
invoice items an earlier attempt created."""

MAX_ITEMS: Final = 250
"""Stripe takes at most this many invoice items on one invoice."""
_DESCRIPTION_MAX: Final = 500
_METADATA_VALUE_MAX: Final = 500


class NotPushable(BillingError):
    """A document Tollway refuses to push (not finalized, malformed, amounts not in minor units, lines
    that do not add up to the total): the message says which invoice and why."""


@dataclass(frozen=True, slots=True)
class PushOptions:
    """How invoices are collected in Stripe (``payments.push_settings``)."""

    collection_method: CollectionMethod = "send_invoice"
    auto_advance: bool = True
    days_until_due: int = 30


@dataclass(frozen=True, slots=True)
class ItemPlan:
    """One invoice item: the line's number (1-based), its amount in minor units and its parameters
    (without ``customer`` and ``invoice``: known only once those exist)."""

    line: int
    amount: int
    params: InvoiceItemCreateParams
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class InvoicePlan:
    """Everything needed to push one finalized invoice, computed before any call."""

    invoice_id: str
    customer_id: str
    currency: str
    total: int
    customer: CustomerCreateParams
    customer_key: str
    invoice: InvoiceCreateParams  # without ``customer``
    invoice_key: str
    items: tuple[ItemPlan, ...]
    finalize: InvoiceFinalizeInvoiceParams
    finalize_key: str


def idempotency_key(*parts: str) -> str:
    """``tollway:<part>:…:v1``: the same Tollway ids always give the same key."""
    return ":".join(("tollway", *parts, KEY_VERSION))


def customer_metadata(customer_id: str) -> dict[str, str]:
    return {CUSTOMER_ID_KEY: customer_id}


def invoice_metadata(invoice_id: str, customer_id: str) -> dict[str, str]:
    """The contract with the webhooks (docs/payments.md): a Stripe invoice names its Tollway invoice."""
    return {INVOICE_ID_KEY: invoice_id, CUSTOMER_ID_KEY: customer_id}


def plan_invoice(document: Mapping[str, Any], options: PushOptions) -> InvoicePlan:
    """The push of a finalized invoice document (``Invoice.as_dict()`` as stored). Raises ``NotPushable``."""
    invoice_id = _text(document, "invoice_id", "?")
    if document.get("status") != "finalized":
        status = document.get("status")
        raise NotPushable(f"invoice {invoice_id}: only finalized invoices are pushed (status {status!r})")
    customer_id = _text(document, "customer_id", invoice_id)
    currency = _text(document, "currency", invoice_id)
    lines = document.get("lines")
    if not isinstance(lines, list):
        raise NotPushable(f"invoice {invoice_id}: the document has no list of lines")
    if len(lines) > MAX_ITEMS:
        raise NotPushable(
            f"invoice {invoice_id}: {len(lines)} lines, Stripe takes at most {MAX_ITEMS} items per invoice"
        )
    try:
        total = to_minor_units(_text(document, "total", invoice_id), currency)
        amounts = [to_minor_units(_text(line, "amount", invoice_id), currency) for line in lines]
    except (AmountNotInMinorUnits, UnknownCurrency) as exc:
        raise NotPushable(f"invoice {invoice_id}: {exc}") from None
    if sum(amounts) != total:
        raise NotPushable(
            f"invoice {invoice_id}: its lines add up to {sum(amounts)} minor units of {currency}, its total is {total}"
        )
    period = _period(document)
    items = tuple(
        _item(invoice_id, customer_id, currency, number, line, amount, period)
        for number, (line, amount) in enumerate(zip(lines, amounts, strict=True), start=1)
    )
    return InvoicePlan(
        invoice_id=invoice_id,
        customer_id=customer_id,
        currency=currency,
        total=total,
        customer=customer_params(customer_id, document.get("buyer")),
        customer_key=idempotency_key("customer", customer_id),
        invoice=_invoice_params(document, invoice_id, customer_id, currency, options),
        invoice_key=idempotency_key(invoice_id, "invoice"),
        items=items,
        finalize={"auto_advance": options.auto_advance},
        finalize_key=idempotency_key(invoice_id, "finalize"),
    )


def customer_params(customer_id: str, buyer: object) -> CustomerCreateParams:
    """The Stripe customer of a Tollway customer: its metadata, and the buyer's details when known."""
    params: CustomerCreateParams = {"metadata": customer_metadata(customer_id)}
    if not isinstance(buyer, Mapping):
        return params
    name, email = buyer.get("name"), buyer.get("email")
    if isinstance(name, str) and name:
        params["name"] = name
    if isinstance(email, str) and email:
        params["email"] = email
    address = _address(buyer)
    if address is not None:
        params["address"] = address
    return params


def _address(buyer: Mapping[str, Any]) -> CustomerCreateParamsAddress | None:
    lines = buyer.get("address")
    country = buyer.get("country")
    found: CustomerCreateParamsAddress = {}
    if isinstance(lines, list) and lines and all(isinstance(line, str) for line in lines):
        found["line1"] = lines[0]
        if len(lines) > 1:
            found["line2"] = ", ".join(lines[1:])
    if isinstance(country, str) and len(country) == 2 and country.isalpha():  # Stripe takes ISO 3166-1 alpha-2
        found["country"] = country.upper()
    return found or None


def _invoice_params(
    document: Mapping[str, Any], invoice_id: str, customer_id: str, currency: str, options: PushOptions
) -> InvoiceCreateParams:
    params: InvoiceCreateParams = {
        "currency": currency.lower(),
        "collection_method": options.collection_method,
        "auto_advance": False,  # finalized by the push itself, once every item is on it
        "pending_invoice_items_behavior": "exclude",
        "metadata": invoice_metadata(invoice_id, customer_id),
        "description": _description(document, invoice_id),
    }
    number = document.get("number")
    if isinstance(number, str) and number:
        params["number"] = number
    if options.collection_method == "send_invoice":
        due = _due_date(document.get("due_on"), invoice_id)
        if due is not None:
            params["due_date"] = due
        else:
            params["days_until_due"] = options.days_until_due
    return params


def _description(document: Mapping[str, Any], invoice_id: str) -> str:
    period = document.get("period")
    month = period.get("month") if isinstance(period, Mapping) else None
    number = document.get("number")
    name = number if isinstance(number, str) and number else invoice_id
    text = f"Tollway invoice {name}" + (f" for {month}" if isinstance(month, str) else "")
    return text[:_DESCRIPTION_MAX]


def _due_date(value: object, invoice_id: str) -> int | None:
    """An ISO due date as the Unix time of noon UTC that day: the same calendar day wherever the
    Stripe account's timezone lies between UTC−11 and UTC+11 (Stripe's ``due_date`` is an instant)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise NotPushable(f"invoice {invoice_id}: due_on {value!r} is not an ISO date")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise NotPushable(f"invoice {invoice_id}: due_on {value!r} is not an ISO date") from None
    return int(datetime.combine(day, time(12), tzinfo=UTC).timestamp())


def _period(document: Mapping[str, Any]) -> InvoiceItemCreateParamsPeriod | None:
    """The billed period as Stripe's inclusive ``period`` of an item (Unix seconds), when readable."""
    period = document.get("period")
    if not isinstance(period, Mapping):
        return None
    try:
        start = datetime.fromisoformat(str(period["start"]))
        end = datetime.fromisoformat(str(period["end"]))
    except (KeyError, ValueError):
        return None
    first, last = int(start.timestamp()), int(end.timestamp()) - 1  # Tollway's end is exclusive
    return {"start": first, "end": max(first, last)}


def _item(
    invoice_id: str,
    customer_id: str,
    currency: str,
    number: int,
    line: Mapping[str, Any],
    amount: int,
    period: InvoiceItemCreateParamsPeriod | None,
) -> ItemPlan:
    description = _text(line, "description", invoice_id)
    quantity = line.get("quantity")
    if isinstance(quantity, str) and line.get("meter"):
        description = f"{description} ({quantity})"
    metadata = {
        **invoice_metadata(invoice_id, customer_id),
        LINE_KEY: str(number),
        "tollway_kind": str(line.get("kind") or ""),
        "tollway_charge_id": str(line.get("charge_id") or "")[:_METADATA_VALUE_MAX],
    }
    params: InvoiceItemCreateParams = {
        "amount": amount,
        "currency": currency.lower(),
        "description": description[:_DESCRIPTION_MAX],
        "discountable": False,
        "metadata": metadata,
    }
    if period is not None:
        params["period"] = period
    return ItemPlan(number, amount, params, idempotency_key(invoice_id, "line", str(number)))


def _text(found: Mapping[str, Any], key: str, invoice_id: str) -> str:
    value = found.get(key) if isinstance(found, Mapping) else None
    if not isinstance(value, str) or not value:
        raise NotPushable(f"invoice {invoice_id}: {key!r} is missing or not a string")
    return value
