"""What the management API's handlers use: the stores, the warehouse, the clock — built once per
process (``open_services``) or by a test from its own clients (``build_services``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from tollway.admin.audit import AuditLog
from tollway.admin.credentials import RedisCredentialStore
from tollway.admin.page_links import PageLinkSigner
from tollway.admin.settings import AdminSettings
from tollway.admin.warehouse_access import Warehouse
from tollway.auth.digest import KeyDigester
from tollway.auth.keyring import Keyring
from tollway.auth.redis_store import RedisKeyStore
from tollway.billing.crediting import CreditNoteIssuer
from tollway.billing.payment_status import PaymentStatusStore
from tollway.billing.seller import seller_timezone
from tollway.clock import Clock, SystemClock
from tollway.credits.store import GrantStore
from tollway.customers.store import RedisCustomerStore
from tollway.notifications.endpoint_store import EndpointStore
from tollway.notifications.endpoint_store import url_policy as webhook_url_policy
from tollway.notifications.endpoints import SecretBox, UrlPolicy
from tollway.notifications.outbox import OutboxWriter
from tollway.notifications.queue import DeliveryQueue
from tollway.notifications.replay import WebhookActions
from tollway.notifications.store_endpoints import StoreEndpoints
from tollway.redis_client import admin_client
from tollway.redis_types import RedisClient
from tollway.settings import Settings
from tollway.subscriptions.redis_store import RedisSubscriptionStore
from tollway.usage.money_report import MoneySources
from tollway.warehouse.settings import WarehouseSettings


@dataclass(frozen=True, slots=True)
class AdminServices:
    keyring: Keyring
    keys: RedisKeyStore
    subscriptions: RedisSubscriptionStore
    customers: RedisCustomerStore
    grants: GrantStore
    credentials: RedisCredentialStore
    audit: AuditLog
    warehouse: Warehouse
    page_links: PageLinkSigner
    clock: Clock
    catalog_path: Path | None
    problem_type_base: str
    page_link_ttl: timedelta
    page_link_max_ttl: timedelta
    webhook_endpoints: EndpointStore
    money: MoneySources | None = None  # balances, spend and customers' own caps (the customer page)
    events: OutboxWriter | None = None  # lifecycle events of the changes made (docs/notifications.md)
    webhooks: WebhookActions | None = None  # replays and test events (webhook_events routes)
    payments: PaymentStatusStore | None = None  # invoices' payment status (the Stripe webhook, docs/payments.md)
    stripe_webhook_secret: SecretStr | None = None  # TOLLWAY_STRIPE_WEBHOOK_SECRET (None: the webhook answers 503)
    credit_notes: CreditNoteIssuer | None = None  # issues credit notes (credit_notes routes)


def build_services(
    redis: RedisClient,
    pepper: bytes,
    warehouse: Warehouse,
    *,
    prefix: str = "tw:",
    clock: Clock | None = None,
    catalog_path: Path | None = None,
    problem_type_base: str = "https://tollway.dev/problems/",
    admin_settings: AdminSettings | None = None,
    url_policy: UrlPolicy | None = None,
    stripe_webhook_secret: SecretStr | None = None,
) -> AdminServices:
    clock = clock or SystemClock()
    digester = KeyDigester(pepper)
    keys = RedisKeyStore(redis, prefix)
    admin = admin_settings or AdminSettings()
    events = OutboxWriter(redis, prefix)
    endpoint_store = EndpointStore(redis, SecretBox(pepper), prefix, clock=clock, policy=url_policy or UrlPolicy())
    subscriptions = RedisSubscriptionStore(redis, prefix)
    return AdminServices(
        keyring=Keyring(keys, digester, clock, events),
        keys=keys,
        subscriptions=subscriptions,
        customers=RedisCustomerStore(redis, prefix),
        grants=GrantStore(redis, prefix),
        credentials=RedisCredentialStore(redis, digester, prefix),
        audit=AuditLog(redis, prefix),
        warehouse=warehouse,
        page_links=PageLinkSigner(pepper),
        clock=clock,
        catalog_path=catalog_path,
        problem_type_base=problem_type_base,
        page_link_ttl=timedelta(seconds=admin.page_link_ttl_s),
        page_link_max_ttl=timedelta(seconds=admin.page_link_max_ttl_s),
        webhook_endpoints=endpoint_store,
        money=MoneySources.on(redis, prefix),
        events=events,
        webhooks=WebhookActions(DeliveryQueue(redis, prefix), StoreEndpoints(endpoint_store), clock.now_ms),
        payments=PaymentStatusStore(redis, subscriptions, prefix),
        stripe_webhook_secret=stripe_webhook_secret,
        credit_notes=CreditNoteIssuer(redis, prefix, timezone=seller_timezone()),
    )


@asynccontextmanager
async def open_services(
    settings: Settings, admin_settings: AdminSettings, warehouse_settings: WarehouseSettings
) -> AsyncIterator[AdminServices]:
    """The services of a ``tollway admin`` process: a patient Redis client, the warehouse opened lazily."""
    pepper = settings.pepper_bytes()
    redis = admin_client(settings)
    warehouse = Warehouse(warehouse_settings.dsn, warehouse_settings.database)
    try:
        yield build_services(
            redis,
            pepper,
            warehouse,
            prefix=settings.redis_prefix,
            catalog_path=settings.catalog,
            problem_type_base=settings.problem_type_base,
            admin_settings=admin_settings,
            url_policy=webhook_url_policy(settings),
            stripe_webhook_secret=settings.stripe_webhook_secret,
        )
    finally:
        await redis.aclose()
        warehouse.close()
