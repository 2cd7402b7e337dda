"""The whole stack on a real 3-master Valkey Cluster: `tollway serve` and the CLI with
TOLLWAY_REDIS_CLUSTER=true, behind real Envoy. Keys, subscriptions, limits and change announcements
all work across the cluster's slots, and a limit stays exact."""

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import EnvoyFactory, TollwayFactory
from tests.support.tollway_cli import create_key, run_cli
from tollway.harness.valkey_cluster import ValkeyCluster

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).parents[1] / "fixtures" / "cluster-catalog.yaml"


def test_stack_on_a_redis_cluster(
    valkey_cluster: ValkeyCluster, tollway_factory: TollwayFactory, envoy_factory: EnvoyFactory
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"  # the cluster is shared by the session: keep apart by prefix
    cluster_env = {"TOLLWAY_REDIS_CLUSTER": "true", "TOLLWAY_REDIS_PREFIX": prefix}
    first = tollway_factory({**cluster_env, "TOLLWAY_CATALOG": str(CATALOG)}, redis_url=valkey_cluster.url)
    second = tollway_factory({**cluster_env, "TOLLWAY_CATALOG": str(CATALOG)}, redis_url=valkey_cluster.url)
    envoy = envoy_factory("http", endpoints={"tollway_http": [first.http_endpoint, second.http_endpoint]})

    keys = [create_key(valkey_cluster.url, f"cust-{i}", env=cluster_env) for i in range(3)]
    for i in range(3):
        done = run_cli(
            valkey_cluster.url,
            "subscriptions", "set", "--customer", f"cust-{i}", "--plan", "small", "--catalog", str(CATALOG),
            env=cluster_env,
        )  # fmt: skip
        assert done.code == 0, done.stderr

    async def burst(key: str, count: int) -> list[int]:
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(base_url=envoy.base_url, timeout=10, limits=limits) as client:
            replies = await asyncio.gather(*(client.get("/v1/items", headers={"x-api-key": key}) for _ in range(count)))
        return [r.status_code for r in replies]

    for key in keys:  # three customers, whose counters live on different slots
        statuses = asyncio.run(burst(key["api_key"], 40))
        assert statuses.count(200) == 10, statuses
        assert statuses.count(429) == 30

    # A revocation through the CLI reaches both processes over the cluster's pub/sub.
    assert run_cli(valkey_cluster.url, "keys", "revoke", keys[0]["key_id"], env=cluster_env).code == 0
    for server in (first, second):
        deadline = 50
        while (
            httpx.get(
                f"http://127.0.0.1:{server.http_port}/v1/x", headers={"x-api-key": keys[0]["api_key"]}
            ).status_code
            != 401
        ):
            deadline -= 1
            assert deadline, "revocation did not arrive"
            asyncio.run(asyncio.sleep(0.02))
