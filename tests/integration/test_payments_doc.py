"""docs/payments.md's worked example, executed: the ``<!-- push-example -->`` document pushed through the
SDK to the fake Stripe server, every row of the table of calls checked (method, path, idempotency key,
the parameters shown), and a second run sends nothing."""

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis as AsyncRedis

from tests.support.fake_stripe import FakeStripe
from tollway.harness.valkey import ValkeyServer
from tollway.payments.push_settings import StripePushSettings
from tollway.payments.push_state import PushState
from tollway.payments.stripe_push import PushResult, StripePusher, stripe_client

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "payments.md"


def example() -> tuple[dict[str, Any], list[list[str]]]:
    text = DOC.read_text()
    section = text.split("<!-- push-example -->", 1)[1]
    document = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    table = [line for line in section.split("## Idempotency keys", 1)[0].splitlines() if line.startswith("| ")]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table[1:]]
    return document, rows


def push(valkey: ValkeyServer, fake: FakeStripe, document: dict[str, Any]) -> PushResult:
    settings = StripePushSettings(api_key=SecretStr(fake.api_key), api_base=fake.url, max_network_retries=0)

    async def go() -> PushResult:
        client = AsyncRedis.from_url(valkey.url, decode_responses=True)
        try:
            return await StripePusher(stripe_client(settings), PushState(client, "tw:"), settings.options()).push(
                document
            )
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_the_worked_example_sends_the_calls_the_table_shows(valkey_fresh: ValkeyServer) -> None:
    document, rows = example()
    with FakeStripe() as fake:
        result = push(valkey_fresh, fake, document)
        assert result.outcome == "pushed"
        (customer,) = fake.of("customer")
        (invoice,) = fake.of("invoice")
        assert len(fake.requests) == len(rows)
        checked = 0
        for row, request in zip(rows, fake.requests, strict=True):
            number, call, key, sends = row
            method, path = call.strip("`").split(" ", 1)
            path = path.replace("{invoice}", invoice["id"])
            assert (method, path, request.idempotency_key or "") == (request.method, request.path, key.strip("`")), (
                number
            )
            for pair in re.findall(r"`([^`=]+)=([^`]*)`", sends):
                name, value = pair
                value = value.replace("{customer}", customer["id"]).replace("{invoice}", invoice["id"])
                assert request.params.get(name) == value, (number, name, request.params)
                checked += 1
        assert checked == 16  # every parameter the table shows
        assert (invoice["status"], invoice["number"], invoice["total"]) == ("open", "INV-2026-000042", 954)

        sent = len(fake.requests)
        assert push(valkey_fresh, fake, document).outcome == "already pushed"
        assert len(fake.requests) == sent
