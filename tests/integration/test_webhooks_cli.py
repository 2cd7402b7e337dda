"""``tollway webhooks`` against a real Valkey, as an operator runs it: the secret printed once (and
verifiable with ``standardwebhooks``), list/show without it, update, rotate-secret, delete, the
development settings, and clear messages with exit status 2 for bad input, 1 for an unknown endpoint."""

import asyncio
import time

import pytest
import standardwebhooks
from redis.asyncio import Redis as AsyncRedis

from tests.support.tollway_cli import TEST_PEPPER, run_cli
from tollway.harness.valkey import ValkeyServer
from tollway.notifications.endpoint_store import EndpointStore
from tollway.notifications.endpoints import SecretBox, signature_header

pytestmark = pytest.mark.integration

URL = "https://hooks.example.com/tollway"


def live_secrets(redis_url: str, endpoint_id: str) -> list[str]:
    async def read() -> list[str]:
        redis = AsyncRedis.from_url(redis_url, decode_responses=True)
        try:
            store = EndpointStore(redis, SecretBox(TEST_PEPPER.encode()))
            return (await store.require(endpoint_id)).signing_secrets(store.box, store._clock.now())
        finally:
            await redis.aclose()

    return asyncio.run(read())


def verifies(secret: str, signing: list[str]) -> bool:
    body, stamp = b"{}", int(time.time())
    header = signature_header(signing, "msg_1", stamp, body)
    try:
        standardwebhooks.Webhook(secret).verify(
            body, {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": header}
        )
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


def test_the_endpoint_lifecycle_from_the_command_line(valkey_fresh: ValkeyServer) -> None:
    url = valkey_fresh.url
    created = run_cli(url, "webhooks", "create", URL, "--description", "CRM", "--events", "balance.low, key.created")
    assert created.code == 0, created.stderr
    lines = dict(line.split(None, 1) for line in created.stdout.splitlines() if line and not line.startswith("Store"))
    secret, endpoint_id = lines["secret"], lines["endpoint_id"]
    assert secret.startswith("whsec_")
    assert lines["events"] == "balance.low, key.created"
    assert "shown only once" in created.stdout
    assert verifies(secret, live_secrets(url, endpoint_id))

    listed = run_cli(url, "webhooks", "list")
    assert listed.code == 0
    assert endpoint_id in listed.stdout
    assert secret not in listed.stdout
    shown = run_cli(url, "webhooks", "show", endpoint_id, "--json")
    assert shown.code == 0
    assert secret not in shown.stdout
    assert shown.json()["description"] == "CRM"

    updated = run_cli(url, "webhooks", "update", endpoint_id, "--all-events", "--disable", "--json")
    assert updated.code == 0, updated.stderr
    assert (updated.json()["event_types"], updated.json()["state"]) == ([], "disabled")
    assert run_cli(url, "webhooks", "update", endpoint_id, "--enable", "--json").json()["state"] == "enabled"

    rotated = run_cli(url, "webhooks", "rotate-secret", endpoint_id, "--overlap", "1h", "--json")
    assert rotated.code == 0, rotated.stderr
    new_secret = rotated.json()["secret"]
    assert new_secret != secret
    assert rotated.json()["endpoint"]["previous_secret_expires_at"] is not None
    signing = live_secrets(url, endpoint_id)
    assert verifies(new_secret, signing)
    assert verifies(secret, signing)
    listed_json = run_cli(url, "webhooks", "list", "--json")
    assert new_secret not in listed_json.stdout
    assert [e["endpoint_id"] for e in listed_json.json()] == [endpoint_id]

    deleted = run_cli(url, "webhooks", "delete", endpoint_id)
    assert deleted.code == 0
    assert f"deleted {endpoint_id}" in deleted.stdout
    gone = run_cli(url, "webhooks", "show", endpoint_id)
    assert gone.code == 1
    assert "does not exist" in gone.stderr
    assert run_cli(url, "webhooks", "delete", endpoint_id).code == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("create", "http://hooks.example.com/"), "https"),
        (("create", "https://10.0.0.1/"), "TOLLWAY_WEBHOOKS_ALLOW_PRIVATE"),
        (("create", "https://localhost:8443/"), "loopback"),
        (("create", "https://u:p@hooks.example.com/"), "user name"),
        (("create", URL, "--events", "quota.crossed"), "unknown event type 'quota.crossed'"),
        (("create", URL, "--events", ","), "--events names no event type"),
        (("create", URL, "--description", "x" * 600), "--description"),
        (("show", "ep_123"), "not an endpoint id"),
        (("rotate-secret", "ep_" + "0" * 24, "--overlap", "8d"), "longer than 7 days"),
        (("rotate-secret", "ep_" + "0" * 24, "--overlap", "soon"), "--overlap"),
        (("update", "ep_" + "0" * 24), "nothing to change"),
    ],
)
def test_bad_input_is_refused_with_a_message_and_status_2(
    valkey_fresh: ValkeyServer, args: tuple[str, ...], says: str
) -> None:
    result = run_cli(valkey_fresh.url, "webhooks", *args)
    assert result.code == 2, (result.stdout, result.stderr)
    assert says in result.stderr
    assert result.stderr.startswith("tollway: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_development_settings_allow_http_and_private_urls(valkey_fresh: ValkeyServer) -> None:
    env = {"TOLLWAY_WEBHOOKS_ALLOW_HTTP": "true", "TOLLWAY_WEBHOOKS_ALLOW_PRIVATE": "true"}
    made = run_cli(valkey_fresh.url, "webhooks", "create", "http://127.0.0.1:8080/hook", "--json", env=env)
    assert made.code == 0, made.stderr
    assert made.json()["endpoint"]["url"] == "http://127.0.0.1:8080/hook"
    missing = run_cli(valkey_fresh.url, "webhooks", "update", "ep_" + "0" * 24, "--enable")
    assert missing.code == 1
    assert "does not exist" in missing.stderr
    bad = run_cli(valkey_fresh.url, "webhooks", "list", env={"TOLLWAY_WEBHOOKS_ALLOW_HTTP": "maybe"})
    assert bad.code == 2
    assert "TOLLWAY_WEBHOOKS_ALLOW_HTTP" in bad.stderr
