"""docs/notifications.md's event catalogue: every event type has a row and an example body, and the
bodies of the events this package builds have exactly the documented members."""

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tollway.auth.records import KeyRecord, KeyStatus
from tollway.notifications import lifecycle
from tollway.notifications.events import EVENT_TYPES, Event
from tollway.subscriptions.model import Subscription

DOC = Path(__file__).parents[3] / "docs" / "notifications.md"
MARKER = re.compile(r"<!-- event: ([a-z_.]+) -->\n```json\n(.*?)```", re.DOTALL)
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def documented() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for match in MARKER.finditer(DOC.read_text()):
        assert match.group(1) not in found, f"{match.group(1)} documented twice"
        found[match.group(1)] = json.loads(match.group(2))
    return found


def test_every_event_type_has_a_catalogue_row_and_an_example_in_order() -> None:
    text = DOC.read_text()
    assert list(documented()) == list(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        assert f"| `{event_type}` |" in text
    for body in documented().values():
        assert isinstance(body["customer_id"], str)


def built() -> dict[str, Event]:
    record = KeyRecord("key_1", "acme", "live", KeyStatus.ACTIVE, NOW, NOW + timedelta(days=3), "abcd")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    basic = Subscription.new("acme", "basic", start)
    invoice = {
        "invoice_id": "in_2",
        "customer_id": "acme",
        "status": "finalized",
        "currency": "USD",
        "total": "1.00",
        "period": {"start": "2026-02-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"},
        "lines": [{"kind": "adjustment", "adjusts": "in_1", "amount": "0.50"}],
        "finalized_at": "2026-03-02T00:00:00Z",
        "number": "INV-2026-000002",
        "due_on": "2026-04-01",
    }
    finalized, adjusted = lifecycle.invoice_events(invoice)
    return {
        "key.created": lifecycle.key_created(record),
        "key.revoked": lifecycle.key_revoked(record.revoked(NOW)),
        "key.expiring": lifecycle.key_expiring(record, NOW),
        "subscription.changed": lifecycle.subscription_changed(basic, basic.changed_to("pro", NOW), NOW),  # type: ignore[dict-item]
        "invoice.finalized": finalized,
        "invoice.adjusted": adjusted,
        "credit_note.issued": lifecycle.credit_note_issued(
            {
                "credit_note_id": "cn_1",
                "number": "CN-2026-000001",
                "invoice_id": "in_2",
                "invoice_number": None,
                "customer_id": "acme",
                "currency": "USD",
                "issued_at": "2026-03-03T00:00:00.000000Z",
                "reason": "wrong",
                "total": "0.50",
            }
        ),
        "grant.expiring": lifecycle.grant_expiring("acme", "g", "USD", Decimal("7.5"), 1, NOW),
    }


@pytest.mark.parametrize("event_type", list(built()))
def test_a_built_event_has_the_documented_members(event_type: str) -> None:
    event = built()[event_type]
    assert event.type == event_type
    assert set(event.body()) == set(documented()[event_type])


def test_an_invoice_finalized_without_a_number_has_no_number_in_its_event() -> None:
    """Invoices finalized before numbers existed (or by Python code given no seller) keep their event as it was."""
    invoice = {
        "invoice_id": "in_1",
        "customer_id": "acme",
        "status": "finalized",
        "currency": "USD",
        "total": "1.00",
        "period": {"start": "2026-02-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"},
        "finalized_at": "2026-03-02T00:00:00Z",
    }
    (finalized,) = lifecycle.invoice_events(invoice)
    assert "number" not in finalized.data
    assert "due_on" not in finalized.data
