"""The management API in-process for tests: real Valkey, the session's chdb engine, a manual clock.

``admin_api(...)`` runs the app's lifespan and yields an httpx client on the ASGI app (no socket) with
the services, so a test can create credentials and look at the stores behind the API.
"""

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis as AsyncRedis

from tests.support.chdb_engine import ChdbDatabase
from tests.support.tollway_cli import TEST_PEPPER
from tests.support.usage_rows import usage_row as shared_usage_row
from tollway.admin.app import create_app
from tollway.admin.scopes import Scope
from tollway.admin.services import AdminServices, build_services
from tollway.admin.warehouse_access import Warehouse
from tollway.clock import ManualClock
from tollway.warehouse.migrations import Migrator

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PROBLEM = "application/problem+json"

CATALOG = """\
apiVersion: tollway.dev/v1
kind: PlanCatalog
metadata: {name: admin-test, version: "1"}
meters:
  requests:
    unit: requests
    billable: {exclude_statuses: ["5xx", "429"]}
  egress:
    unit: response_bytes
features:
  api:
    routes:
      - {methods: [GET], prefix: /v1/}
plans:
  basic:
    features: [api]
    limits:
      - {name: burst, limit: 10, per: second}
    quotas:
      - {name: monthly, limit: 1000}
    pricing:
      currency: EUR
      interval: month
      charges:
        - {id: platform, model: flat, amount: "10.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.50"}
  pro:
    features: [api]
    limits:
      - {name: burst, limit: 100, per: second}
    quotas:
      - {name: monthly, limit: 100000}
    pricing:
      currency: EUR
      interval: month
      charges:
        - {id: platform, model: flat, amount: "31.00"}
        - {id: calls, model: per_unit, meter: requests, unit_amount: "0.25"}
"""


@dataclass
class AdminApi:
    http: httpx.AsyncClient
    services: AdminServices
    clock: ManualClock

    async def token(self, name: str, scope: Scope) -> dict[str, str]:
        """Authorization headers of a new credential."""
        issued = await self.services.credentials.create(name, scope, self.clock.now())
        return {"Authorization": f"Bearer {issued.token}"}


def write_catalog(directory: Path) -> Path:
    path = directory / "catalog.yaml"
    path.write_text(CATALOG, encoding="utf-8")
    return path


def prepare_warehouse(chdb_db: ChdbDatabase) -> Warehouse:
    client, database = chdb_db
    Migrator(client, database).migrate()
    return Warehouse("chdb://", database, client=client)


@asynccontextmanager
async def admin_api(
    redis_url: str,
    chdb_db: ChdbDatabase,
    *,
    catalog: Path | None = None,
    now: datetime = NOW,
    stripe_webhook_secret: str | None = None,
) -> AsyncIterator[AdminApi]:
    from pydantic import SecretStr

    redis = AsyncRedis.from_url(redis_url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
    clock = ManualClock(now)
    services = build_services(
        redis,
        TEST_PEPPER.encode(),
        prepare_warehouse(chdb_db),
        clock=clock,
        catalog_path=catalog,
        stripe_webhook_secret=None if stripe_webhook_secret is None else SecretStr(stripe_webhook_secret),
    )

    @asynccontextmanager
    async def given() -> AsyncIterator[AdminServices]:
        yield services

    app = create_app(given)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as http:
                yield AdminApi(http, services, clock)
    finally:
        await redis.aclose()


def usage_row(request_id: str, ts: str, customer: str, meters: dict[str, int], **fields: Any) -> bytes:
    """A usage row of a customer on plan ``basic`` (``tests.support.usage_rows``)."""
    return shared_usage_row(request_id, ts, customer, meters, **{"plan": "basic", **fields})


def insert_usage(chdb_db: ChdbDatabase, rows: Sequence[bytes]) -> None:
    from tollway.warehouse.connection import insert_json_rows

    client, database = chdb_db
    Migrator(client, database).migrate()
    insert_json_rows(client, database, "usage", b"".join(rows))


@contextmanager
def served_admin_api(
    redis_url: str, warehouse: Warehouse, *, catalog: Path | None = None, now: datetime = NOW
) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port, in a thread; yields its base URL."""
    import threading
    import time

    import uvicorn

    from tollway.harness.ports import free_ports

    @asynccontextmanager
    async def open_services() -> AsyncIterator[AdminServices]:
        redis = AsyncRedis.from_url(redis_url, decode_responses=True, socket_timeout=5)
        try:
            yield build_services(redis, TEST_PEPPER.encode(), warehouse, clock=ManualClock(now), catalog_path=catalog)
        finally:
            await redis.aclose()

    [port] = free_ports(1)
    config = uvicorn.Config(
        create_app(open_services), host="127.0.0.1", port=port, lifespan="on", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="admin-api", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the admin API did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


async def create_token(redis_url: str, name: str, scope: Scope) -> str:
    """A credential's token, written straight to the store (what `tollway admin credentials create` does)."""
    from tollway.admin.credentials import RedisCredentialStore
    from tollway.auth.digest import KeyDigester

    redis = AsyncRedis.from_url(redis_url, decode_responses=True)
    try:
        store = RedisCredentialStore(redis, KeyDigester(TEST_PEPPER.encode()))
        return (await store.create(name, scope, NOW)).token
    finally:
        await redis.aclose()
