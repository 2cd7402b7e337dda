"""Key management and revocation across processes, on real Valkey."""

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from tests.conftest import TollwayFactory
from tests.support.tollway_cli import TEST_PEPPER, create_key, run_cli
from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.digest import KeyDigester
from tollway.auth.errors import ExpiredKey
from tollway.auth.keyring import Keyring
from tollway.auth.redis_store import RedisKeyStore
from tollway.clock import ManualClock
from tollway.harness.valkey import ValkeyServer

pytestmark = pytest.mark.integration


def check(port: int, key: str) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/v1/x", headers={"x-api-key": key}, timeout=2).status_code


def test_revocation_through_one_process_reaches_another_within_a_second(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory
) -> None:
    first, second = tollway_factory(), tollway_factory()
    key = create_key(valkey_fresh.url, "acme")
    # Both processes have the key cached.
    assert check(first.http_port, key["api_key"]) == 200
    assert check(second.http_port, key["api_key"]) == 200
    revoked_at = time.monotonic()
    assert run_cli(valkey_fresh.url, "keys", "revoke", key["key_id"]).code == 0
    while check(second.http_port, key["api_key"]) != 401:
        assert time.monotonic() - revoked_at < 1.0, "revocation did not reach the second process within 1 s"
        time.sleep(0.01)
    assert check(first.http_port, key["api_key"]) == 401
    print(f"revocation seen by the second process after {(time.monotonic() - revoked_at) * 1000:.0f} ms")


def test_revocation_is_bounded_by_the_cache_ttl_even_without_pub_sub(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory
) -> None:
    """The announcement is lost (a replica whose subscription is broken): the 1 s TTL still bounds it."""
    server = tollway_factory({"TOLLWAY_REDIS_PREFIX": "tw:"})
    key = create_key(valkey_fresh.url, "acme")
    assert check(server.http_port, key["api_key"]) == 200
    client = redis.Redis.from_url(valkey_fresh.url, decode_responses=True)
    digest = client.get(f"tw:apikey-id:{key['key_id']}")
    client.hset(f"tw:apikey:{digest}", "status", "revoked")  # changed behind Tollway's back, no announcement
    client.close()
    changed_at = time.monotonic()
    while check(server.http_port, key["api_key"]) != 401:
        assert time.monotonic() - changed_at < 1.5  # TTL 1 s from the last fetch, plus slack for a busy machine
        time.sleep(0.02)


def test_rotation_overlap_with_an_injected_clock(valkey_fresh: ValkeyServer) -> None:
    async def scenario() -> None:
        client = AsyncRedis.from_url(valkey_fresh.url, decode_responses=True)
        clock = ManualClock()
        store = RedisKeyStore(client)
        digester = KeyDigester(TEST_PEPPER.encode())
        keyring = Keyring(store, digester, clock)
        auth = Authenticator(store, digester, KeyCache(clock.monotonic), clock)
        old = await keyring.create("acme")
        rotation = await keyring.rotate(old.record.key_id, timedelta(hours=24))
        headers = {"x-api-key": old.secret}
        assert (await auth.authenticate(headers)).key_id == old.record.key_id
        clock.advance(timedelta(hours=24) - timedelta(seconds=1))
        assert (await auth.authenticate(headers)).key_id == old.record.key_id
        clock.advance(timedelta(seconds=1))
        with pytest.raises(ExpiredKey):
            await auth.authenticate(headers)
        assert (await auth.authenticate({"x-api-key": rotation.new.secret})).customer_id == "acme"
        listed = {r.key_id: r for r in await keyring.list("acme")}
        assert listed[old.record.key_id].rotated_to == rotation.new.record.key_id
        await client.aclose()

    asyncio.run(scenario())


def test_no_plaintext_key_in_redis_or_in_any_log(
    valkey_fresh: ValkeyServer, tollway_factory: TollwayFactory, tmp_path: Path
) -> None:
    server = tollway_factory({"TOLLWAY_LOG_LEVEL": "DEBUG"})
    key = create_key(valkey_fresh.url, "acme")
    secret = key["api_key"]
    assert check(server.http_port, secret) == 200
    assert check(server.http_port, secret[:-1] + ("1" if secret.endswith("0") else "0")) in (401,)
    assert run_cli(valkey_fresh.url, "keys", "rotate", key["key_id"], "--overlap", "1h").code == 0
    listing = run_cli(valkey_fresh.url, "keys", "list")
    assert secret not in listing.stdout + listing.stderr
    server.stop()

    client = redis.Redis.from_url(valkey_fresh.url)
    dump = []
    for name in client.scan_iter(count=1000):
        dump.append(name)
        kind = client.type(name)
        if kind == b"hash":
            dump.extend(v for kv in client.hgetall(name).items() for v in kv)
        elif kind == b"set":
            dump.extend(client.smembers(name))
        elif kind == b"string":
            dump.append(client.get(name) or b"")
    client.close()
    everything = b"\n".join(dump)
    secret_part = secret.split("_")[2][:27].encode()
    assert everything, "the store holds records"
    assert secret.encode() not in everything
    assert secret_part not in everything

    logs = b"".join(p.read_bytes() for p in tmp_path.rglob("*.log"))
    assert logs, "the server wrote logs"
    assert secret_part not in logs


def test_cli_errors_are_clear(valkey_fresh: ValkeyServer) -> None:
    url = valkey_fresh.url
    missing = run_cli(url, "keys", "revoke", "key_doesnotexist")
    assert missing.code == 1
    assert "no API key with id 'key_doesnotexist'" in missing.stderr
    bad_expiry = run_cli(url, "keys", "create", "--customer", "acme", "--expires", "next tuesday")
    assert bad_expiry.code == 2
    assert "ISO 8601" in bad_expiry.stderr
    bad_customer = run_cli(url, "keys", "create", "--customer", "a b")
    assert bad_customer.code == 2
    assert "customer id" in bad_customer.stderr
    bad_overlap = run_cli(url, "keys", "rotate", create_key(url)["key_id"], "--overlap", "forever")
    assert bad_overlap.code == 2
    no_pepper = run_cli(url, "keys", "list", env={"TOLLWAY_PEPPER": ""})
    assert no_pepper.code == 2
    assert "TOLLWAY_PEPPER" in no_pepper.stderr
    unreachable = run_cli("redis://127.0.0.1:1/0", "keys", "list")
    assert unreachable.code == 1
    assert "cannot reach Redis" in unreachable.stderr
    for result in (missing, bad_expiry, bad_customer, bad_overlap, no_pepper, unreachable):
        assert "Traceback" not in result.stderr


def test_listing_by_customer(valkey_fresh: ValkeyServer) -> None:
    url = valkey_fresh.url
    a = create_key(url, "acme")
    create_key(url, "globex")
    listed = run_cli(url, "keys", "list", "--customer", "acme", "--json").json()
    assert [k["key_id"] for k in listed] == [a["key_id"]]
    assert all("api_key" not in k for k in listed)
    table = run_cli(url, "keys", "list")
    assert "globex" in table.stdout
    assert "acme" in table.stdout
