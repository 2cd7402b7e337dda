"""schemathesis against the management API's own OpenAPI document, in-process (ASGI), with a write
credential: no server error, and every response (status, content type, body, headers) as documented.
Bounded: 25 generated examples per operation (plus the coverage phase), so the run stays well under a minute.

The schema is taken from the app itself (``app.openapi()``) when the module loads; the app's services
are opened on schemathesis' event loop at the first call, from what the module fixture prepared.
(``schemathesis.pytest.from_fixture`` would be the natural form, but it does not run under pytest 9.)
"""

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from redis.asyncio import Redis as AsyncRedis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.admin_api import insert_usage, prepare_warehouse, usage_row
from tests.support.chdb_engine import ChdbDatabase, ChdbEngine
from tests.support.tollway_cli import TEST_PEPPER
from tollway.admin.app import create_app
from tollway.admin.scopes import Scope
from tollway.admin.services import AdminServices, build_services
from tollway.admin.warehouse_access import Warehouse
from tollway.customers.store import CustomerRecord
from tollway.harness.valkey import ValkeyServer
from tollway.subscriptions.model import Subscription

pytestmark = pytest.mark.integration

# Filled by the `prepared` fixture before the first request reaches the app.
CONTEXT: dict[str, Any] = {}


@asynccontextmanager
async def open_services() -> AsyncIterator[AdminServices]:
    redis = AsyncRedis.from_url(CONTEXT["redis_url"], decode_responses=True, socket_timeout=5)
    try:
        # With a Stripe webhook secret, as in production: its route answers what it documents (400 unsigned).
        secret = SecretStr("whsec_schemathesis")
        yield build_services(redis, TEST_PEPPER.encode(), CONTEXT["warehouse"], stripe_webhook_secret=secret)
    finally:
        await redis.aclose()


APP = create_app(open_services)
schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP


async def _seed(redis_url: str, warehouse: Warehouse) -> str:
    """A write credential, and a customer with a key and a subscription for the examples to find."""
    redis = AsyncRedis.from_url(redis_url, decode_responses=True)
    try:
        await redis.flushall()
        services = build_services(redis, TEST_PEPPER.encode(), warehouse)
        now = datetime.now(UTC)
        issued = await services.credentials.create("schemathesis", Scope.WRITE, now)
        await services.customers.put(CustomerRecord("acme-corp", "Acme Corp", None, now))
        await services.keyring.create("acme-corp")
        await services.subscriptions.put(Subscription.new("acme-corp", "basic", datetime(2026, 1, 1, tzinfo=UTC)))
        return issued.token
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def admin_database(chdb_engine: ChdbEngine) -> Iterator[ChdbDatabase]:
    database = chdb_engine.create_database("admin_schemathesis")
    try:
        yield database
    finally:
        chdb_engine.drop_database(database.name)


@pytest.fixture(scope="module")
def write_token(valkey: ValkeyServer, admin_database: ChdbDatabase) -> str:
    if not valkey.is_running():
        valkey.start()
    insert_usage(admin_database, [usage_row("r1", "2026-11-02 09:00:00", "acme-corp", {"requests": 1})])
    warehouse = prepare_warehouse(admin_database)
    CONTEXT.update(redis_url=valkey.url, warehouse=warehouse)
    return asyncio.run(_seed(valkey.url, warehouse))


@schema.parametrize()
# Random locally (new cases each run), the same cases in CI (no flakes); no example database.
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=bool(os.environ.get("CI")),
)
def test_every_operation_conforms(case: Any, write_token: str) -> None:
    # Every check but positive_data_acceptance: a schema-valid request may still break a rule no schema
    # states (a cursor this API never handed out: 400; a key expiry in the past, an unknown plan: 422).
    case.call_and_validate(
        headers={"Authorization": f"Bearer {write_token}"}, excluded_checks=[positive_data_acceptance]
    )
