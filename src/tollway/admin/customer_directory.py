"""Which customers exist: a customer is known by its record, its subscription or its API keys (keys
and subscriptions made with the CLI need no record)."""

from __future__ import annotations

from tollway.admin.problems import not_found
from tollway.admin.services import AdminServices
from tollway.subscriptions.errors import UnreadableSubscription


async def is_known(services: AdminServices, customer_id: str) -> bool:
    if await services.customers.get(customer_id) is not None:
        return True
    try:
        if await services.subscriptions.get(customer_id) is not None:
            return True
    except UnreadableSubscription:
        return True
    return bool(await services.keyring.list(customer_id))


async def require_known(services: AdminServices, customer_id: str) -> None:
    """A 404 problem unless the customer is known."""
    if not await is_known(services, customer_id):
        raise not_found(f"Customer {customer_id!r}")


async def all_customer_ids(services: AdminServices) -> set[str]:
    """Customers with a record or a subscription (keys alone do not list a customer: give it a record)."""
    subscribed = {s.customer_id for s in await services.subscriptions.list()}
    return await services.customers.ids() | subscribed
