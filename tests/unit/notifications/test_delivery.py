"""Signing per Standard Webhooks (verified with the standardwebhooks library), the retry schedule and its
jitter, the address check, the dispatcher's settings."""

from __future__ import annotations

import asyncio
import base64
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tollway.notifications.delivery import JITTER, SCHEDULE_S, RefusedAddress, address_check, next_delay_s, sign
from tollway.notifications.dispatcher import DispatchSettings, Target

secret_keys = st.binary(min_size=1, max_size=64).map(lambda b: "whsec_" + base64.b64encode(b).decode())


@given(secret_keys, secret_keys, st.binary(max_size=2000), st.integers(0, 2**33))
def test_every_live_secret_signs_and_the_library_verifies_each(new: str, old: str, body: bytes, ts: int) -> None:
    header = sign((new, old), "evt_" + "a" * 32, ts, body)
    assert len(header.split(" ")) == 2
    assert all(part.startswith("v1,") for part in header.split(" "))
    for secret in (new, old):
        expected = Webhook(secret).sign("evt_" + "a" * 32, datetime.fromtimestamp(ts, UTC), body)
        assert expected in header.split(" ")


def test_the_library_accepts_a_delivery_and_refuses_a_tampered_one() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    now = int(datetime.now(UTC).timestamp())
    body = b'{"type":"key.created","timestamp":"2026-01-01T00:00:00.000Z","data":{"customer_id":"c"}}'
    headers = {"webhook-id": "evt_" + "b" * 32, "webhook-timestamp": str(now)}
    headers["webhook-signature"] = sign((secret,), headers["webhook-id"], now, body)
    assert Webhook(secret).verify(body, headers)["type"] == "key.created"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b'"c"', b'"d"'), headers)


def test_schedule_lasts_over_24_hours_even_with_all_jitter_against_it() -> None:
    assert SCHEDULE_S[0] == 0
    assert sum(SCHEDULE_S) * (1 - JITTER) >= 24 * 3600
    assert list(SCHEDULE_S[1:]) == sorted(SCHEDULE_S[1:])


@given(st.integers(1, len(SCHEDULE_S) - 1), st.integers(0, 2**32))
def test_each_delay_is_its_step_within_20_percent(attempt: int, seed: int) -> None:
    delay = next_delay_s(attempt, rng=random.Random(seed))
    base = SCHEDULE_S[attempt]
    assert delay is not None
    assert base * 0.8 <= delay <= base * 1.2


def test_the_schedule_ends() -> None:
    assert next_delay_s(len(SCHEDULE_S)) is None
    assert next_delay_s(2, (0, 1)) is None
    assert next_delay_s(1, (0, 1)) is not None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x", "http://[::1]/", "http://169.254.169.254/latest", "http://10.1.2.3/", "http://192.168.0.1/",
     "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/"],
)  # fmt: skip
def test_non_public_addresses_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(RefusedAddress):
        asyncio.run(address_check(False)(url))
    asyncio.run(address_check(True)(url))


def test_a_public_address_passes() -> None:
    asyncio.run(address_check(False)("https://93.184.216.34/hook"))


def test_settings_schedule_and_filters() -> None:
    assert DispatchSettings().schedule() == SCHEDULE_S
    assert DispatchSettings(webhook_retry_schedule_s="0, 1.5,2").schedule() == (0, 1.5, 2)
    with pytest.raises(ValueError):
        DispatchSettings(webhook_retry_schedule_s="0,-1").schedule()
    target = Target("ep", "https://x", ("whsec_a",), frozenset({"key.created"}))
    assert target.admits("key.created")
    assert target.admits("webhook.test")
    assert not target.admits("key.revoked")
    assert not Target("ep", "https://x", (), enabled=False).admits("key.created")
