"""The event model (notifications.events): ids, round trips through the outbox entry, the delivered
payload, and refusals of what is not an event."""

import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.notifications.events import (
    EVENT_TYPES,
    ID_HEX,
    MAX_DATA_BYTES,
    Event,
    EventError,
    event_id,
    is_event_id,
    threshold_event_id,
)

parts = st.lists(st.one_of(st.text(max_size=20), st.integers()), max_size=5)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
events = st.builds(
    Event,
    id=st.builds(lambda t, p: event_id(t, *p), st.sampled_from(EVENT_TYPES), parts),
    type=st.sampled_from(EVENT_TYPES),
    ts_ms=st.integers(0, 2**42),
    customer_id=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", max_size=20),
    data=st.dictionaries(st.text(max_size=10).filter(lambda k: k != "customer_id"), json_values, max_size=5),
)


def test_the_id_is_evt_and_the_sha1_of_the_parts_joined_by_a_bar() -> None:
    expected = hashlib.sha1(b"quota.threshold_crossed|acme|requests_month|1767225600000|800").hexdigest()[:ID_HEX]
    assert event_id("quota.threshold_crossed", "acme", "requests_month", 1767225600000, 800) == "evt_" + expected
    assert threshold_event_id("quota.threshold_crossed", "acme", "requests_month", 1767225600000, 800) == (
        "evt_" + expected
    )


@given(st.sampled_from(EVENT_TYPES), parts)
def test_ids_are_deterministic_and_well_formed(event_type: str, values: list[str | int]) -> None:
    first = event_id(event_type, *values)
    assert first == event_id(event_type, *values)
    assert is_event_id(first)


def test_ids_differ_with_any_part_type_or_order() -> None:
    ids = {
        event_id("key.revoked", "key_1"),
        event_id("key.created", "key_1"),
        event_id("key.revoked", "key_2"),
        event_id("invoice.adjusted", "a", "b"),
        event_id("invoice.adjusted", "b", "a"),
    }
    assert len(ids) == 5


@given(events)
def test_an_outbox_entry_reads_back_as_the_same_event(event: Event) -> None:
    fields = event.stream_fields()
    assert set(fields) == {"id", "type", "ts", "customer", "data"}
    assert all(isinstance(value, str) for value in fields.values())
    again = Event.from_stream(fields)
    assert again == Event(event.id, event.type, event.ts_ms, event.customer_id, dict(event.data))


@given(events)
def test_the_payload_is_the_standard_webhooks_body_with_the_customer_in_data(event: Event) -> None:
    payload: dict[str, Any] = json.loads(event.payload())
    assert set(payload) == {"type", "timestamp", "data"}
    assert payload["type"] == event.type
    assert payload["timestamp"].endswith("Z")
    assert len(payload["timestamp"]) == len("2026-01-01T00:00:00.000Z")
    assert payload["data"] == {"customer_id": event.customer_id, **event.data}


def test_the_payload_of_a_known_event() -> None:
    event = Event(event_id("key.revoked", "key_1"), "key.revoked", 1767225600123, "acme", {"key_id": "key_1"})
    assert event.payload() == (
        b'{"type":"key.revoked","timestamp":"2026-01-01T00:00:00.123Z","data":{"customer_id":"acme","key_id":"key_1"}}'
    )
    assert event.body() == {"customer_id": "acme", "key_id": "key_1"}


@pytest.mark.parametrize(
    ("event_id_", "event_type", "data"),
    [
        (event_id("key.created", "k"), "key.exploded", {}),
        ("evt_123", "key.created", {}),
        ("evt_" + "G" * ID_HEX, "key.created", {}),
        ("xyz_" + "0" * ID_HEX, "key.created", {}),
        (event_id("key.created", "k"), "key.created", ["not", "an", "object"]),
    ],
)
def test_what_is_not_an_event_is_refused(event_id_: str, event_type: str, data: Any) -> None:
    with pytest.raises(EventError):
        Event(event_id_, event_type, 0, "acme", data)


def test_a_body_too_large_is_refused_before_the_outbox() -> None:
    event = Event(event_id("key.created", "k"), "key.created", 0, "acme", {"blob": "x" * MAX_DATA_BYTES})
    with pytest.raises(EventError):
        event.stream_fields()


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"id": event_id("key.created", "k"), "type": "key.created", "ts": "0", "customer": "a"},
        {"id": event_id("key.created", "k"), "type": "key.created", "ts": "soon", "customer": "a", "data": "{}"},
        {"id": event_id("key.created", "k"), "type": "key.created", "ts": "0", "customer": "a", "data": "{"},
        {"id": event_id("key.created", "k"), "type": "key.created", "ts": "0", "customer": "a", "data": "[1]"},
        {"id": "evt_bad", "type": "key.created", "ts": "0", "customer": "a", "data": "{}"},
    ],
)
def test_a_corrupt_outbox_entry_is_an_event_error(fields: dict[str, str]) -> None:
    with pytest.raises(EventError):
        Event.from_stream(fields)


@given(st.dictionaries(st.sampled_from(["id", "type", "ts", "customer", "data"]), st.text(max_size=40)))
def test_reading_any_entry_gives_an_event_or_an_event_error(fields: dict[str, str]) -> None:
    with contextlib.suppress(EventError):
        Event.from_stream(fields)
