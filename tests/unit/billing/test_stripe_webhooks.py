"""Stripe webhook signatures and events (``billing.stripe_webhooks``): checked exactly as Stripe signs, and as
the ``stripe`` SDK verifies (``WebhookSignature.verify_header``), with the clock injected."""

import contextlib
import json
import time
from unittest import mock

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.billing.stripe_webhooks import (
    BadSignature,
    InvoiceEvent,
    MalformedEvent,
    OtherEvent,
    parse_event,
    parse_signature_header,
    sign,
    signature,
    verify_signature,
)

SECRET = "whsec_test_0123456789abcdef"
NOW = 1_796_000_000
BODY = json.dumps(
    {
        "id": "evt_1Qabc",
        "object": "event",
        "type": "invoice.payment_failed",
        "created": NOW - 5,
        "livemode": False,
        "data": {
            "object": {
                "id": "in_1Qxyz",
                "object": "invoice",
                "status": "open",
                "metadata": {"tollway_invoice_id": "inv-acme-2026-11", "tollway_customer_id": "acme"},
            }
        },
    }
).encode()


def sdk_accepts(payload: bytes, header: str, secret: str, now: float, tolerance: int = 300) -> bool:
    with mock.patch.object(time, "time", return_value=now):
        try:
            return bool(stripe.WebhookSignature.verify_header(payload, header, secret, tolerance))
        except stripe.SignatureVerificationError:
            return False


def ours_accepts(payload: bytes, header: str, secret: str, now: float, tolerance: int = 300) -> bool:
    try:
        verify_signature(payload, header, secret, now, tolerance)
    except BadSignature:
        return False
    return True


def test_a_header_signed_as_stripe_signs_is_accepted_and_matches_the_sdk() -> None:
    header = sign(BODY, SECRET, NOW)
    sdk_header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, NOW)
    assert header == sdk_header
    assert verify_signature(BODY, header, SECRET, NOW) == NOW
    assert sdk_accepts(BODY, header, SECRET, NOW)


@pytest.mark.parametrize(
    ("header", "secret", "payload", "why"),
    [
        (sign(BODY, SECRET, NOW), "whsec_other", BODY, "no v1 signature"),
        (sign(BODY, SECRET, NOW), SECRET, BODY + b" ", "no v1 signature"),
        (sign(BODY, SECRET, NOW).replace(f"t={NOW}", f"t={NOW + 1}"), SECRET, BODY, "no v1 signature"),
        (f"t={NOW},v0={signature(BODY, SECRET, NOW)}", SECRET, BODY, "no v1 signature"),
        (f"v1={signature(BODY, SECRET, NOW)}", SECRET, BODY, "no timestamp"),
        ("", SECRET, BODY, "no Stripe-Signature header"),
        (sign(BODY, SECRET, NOW), "  ", BODY, "no webhook secret"),
        (f"t=12x,v1={signature(BODY, SECRET, NOW)}", SECRET, BODY, "not a number"),
    ],
)
def test_a_bad_signature_is_refused_like_the_sdk_refuses_it(header: str, secret: str, payload: bytes, why: str) -> None:
    with pytest.raises(BadSignature, match=why):
        verify_signature(payload, header, secret, NOW)
    assert not sdk_accepts(payload, header, secret, NOW)


def test_a_stale_timestamp_is_refused_after_300_seconds() -> None:
    header = sign(BODY, SECRET, NOW - 300)
    assert verify_signature(BODY, header, SECRET, NOW) == NOW - 300
    assert sdk_accepts(BODY, header, SECRET, NOW)
    with pytest.raises(BadSignature, match="more than 300 s old"):
        verify_signature(BODY, header, SECRET, NOW + 1)
    assert not sdk_accepts(BODY, header, SECRET, NOW + 1)


def test_any_of_several_v1_signatures_may_match_while_a_secret_is_rolled() -> None:
    good = signature(BODY, SECRET, NOW)
    old = signature(BODY, "whsec_old", NOW)
    for header in (f"t={NOW},v1={old},v1={good}", f"t={NOW},v1={good},v1={old},v0=abc", f"v1={old},t={NOW},v1={good}"):
        assert verify_signature(BODY, header, SECRET, NOW) == NOW
        assert sdk_accepts(BODY, header, SECRET, NOW)
    with pytest.raises(BadSignature):
        verify_signature(BODY, f"t={NOW},v1={old},v1={old}", SECRET, NOW)


HEX = st.text("0123456789abcdef", min_size=0, max_size=70)


@st.composite
def headers(draw: st.DrawFn) -> tuple[str, int]:
    """Headers as Stripe could send them (and nearly so): t, v1 (good or not), v0, in any order."""
    timestamp = draw(st.integers(NOW - 1000, NOW + 1000))
    items = [f"t={timestamp}"]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["good", "other", "v0", "junk"]))
        if kind == "good":
            items.append(f"v1={signature(BODY, SECRET, timestamp)}")
        elif kind == "other":
            items.append(f"v1={draw(HEX)}")
        elif kind == "v0":
            items.append(f"v0={draw(HEX)}")
        else:
            items.append(draw(st.sampled_from(["x=1", "v2=abc", "", "v1"])))
    order = draw(st.permutations(items))
    return ",".join(order), timestamp


@settings(max_examples=300, deadline=None)
@given(headers(), st.integers(NOW - 1000, NOW + 1000))
def test_the_verdict_is_the_sdks_on_any_well_formed_header(case: tuple[str, int], now: int) -> None:
    header, _ = case
    assert ours_accepts(BODY, header, SECRET, now) == sdk_accepts(BODY, header, SECRET, now)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_any_header_text_is_refused_or_read_never_a_crash(text: str) -> None:
    try:
        parsed = parse_signature_header(text)
    except BadSignature:
        pass
    else:
        assert parsed.signatures
        assert parsed.timestamp >= 0
    with pytest.raises(BadSignature):  # never signed with SECRET by chance
        verify_signature(BODY, text, SECRET, NOW)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_body_is_an_event_or_malformed_never_a_crash(payload: bytes) -> None:
    with contextlib.suppress(MalformedEvent):
        parse_event(payload)


def test_invoice_events_are_read_with_tollways_ids_and_other_types_ignored() -> None:
    event = parse_event(BODY)
    assert event == InvoiceEvent(
        event_id="evt_1Qabc",
        type="invoice.payment_failed",
        status="payment_failed",
        created=NOW - 5,
        livemode=False,
        stripe_invoice_id="in_1Qxyz",
        invoice_id="inv-acme-2026-11",
        customer_id="acme",
    )
    paid = json.loads(BODY)
    paid["type"] = "invoice.paid"
    paid["data"]["object"]["metadata"] = {}
    assert parse_event(json.dumps(paid).encode()).status == "paid"  # type: ignore[union-attr]
    paid["type"] = "invoice.voided"
    assert parse_event(json.dumps(paid).encode()).status == "voided"  # type: ignore[union-attr]
    other = {"id": "evt_2", "type": "customer.created", "data": {"object": {"object": "customer"}}}
    assert parse_event(json.dumps(other).encode()) == OtherEvent("evt_2", "customer.created")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("id"), "no id"),
        (lambda e: e.update(created="yesterday"), "created"),
        (lambda e: e["data"].update(object={"object": "charge", "id": "ch_1"}), "not an invoice"),
        (lambda e: e["data"]["object"].update(metadata={"tollway_invoice_id": 42}), "not a Tollway id"),
        (lambda e: e["data"]["object"].update(metadata=["x"]), "metadata is not an object"),
    ],
)
def test_a_malformed_invoice_event_is_refused(change: object, message: str) -> None:
    event = json.loads(BODY)
    change(event)  # type: ignore[operator]
    with pytest.raises(MalformedEvent, match=message):
        parse_event(json.dumps(event).encode())
    with pytest.raises(MalformedEvent, match="not JSON"):
        parse_event(b"{not json")


def test_the_documented_signature_example_is_what_sign_gives() -> None:
    from pathlib import Path

    docs = (Path(__file__).parents[3] / "docs" / "payments.md").read_text()
    example = docs.split("<!-- signature-example -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    call, shown = (line for line in example.splitlines() if line.startswith(("sign(", "# '")))
    namespace: dict[str, object] = {"sign": sign}
    assert eval(call, namespace) == shown.removeprefix("# ").strip("'")
