"""Usage rows encode to JSONEachRow lines that read back exactly (the spool's format is ClickHouse's input)."""

import json
import os
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from tollway.usage.row import COLUMNS, UsageRow, encode_row, format_ts, new_row_id, without_superseded

texts = st.text(max_size=40)


@given(
    request_id=texts,
    envoy_request_id=texts,
    ts_ms=st.integers(min_value=0, max_value=253402300799999),
    customer=texts,
    route=texts,
    status=st.integers(min_value=0, max_value=599),
    meters=st.dictionaries(
        texts, st.integers(min_value=0, max_value=10**18) | st.decimals(min_value=0, max_value=10**9, places=9)
    ),
    latency=st.floats(min_value=0, max_value=1e7, allow_nan=False),
)
def test_row_round_trips_through_json(
    request_id: str,
    envoy_request_id: str,
    ts_ms: int,
    customer: str,
    route: str,
    status: int,
    meters: dict[str, int | Decimal],
    latency: float,
) -> None:
    row = UsageRow(
        request_id,
        ts_ms,
        customer,
        "key_1",
        "pro",
        "search",
        route,
        "GET",
        status,
        "admitted",
        "",
        True,
        5,
        7,
        latency,
        meters,
        2,
        envoy_request_id,
    )
    line = encode_row(row)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1, "one row, one line, whatever the strings hold"
    decoded = json.loads(line)
    assert set(decoded) == set(COLUMNS) - {"price_micros", "balance_unit"}, "no price: ClickHouse's defaults"
    assert decoded["request_id"] == request_id
    assert decoded["envoy_request_id"] == envoy_request_id
    assert decoded["customer_id"] == customer
    assert decoded["route"] == route
    assert decoded["status"] == status
    assert {k: Decimal(v) for k, v in decoded["meters"].items()} == {k: Decimal(v) for k, v in meters.items()}
    assert abs(decoded["upstream_latency_ms"] - latency) <= 0.0005 + 1e-9 * latency
    assert decoded["ts"] == format_ts(ts_ms)


def test_timestamps_are_utc_text_with_milliseconds() -> None:
    assert format_ts(0) == "1970-01-01 00:00:00.000"
    assert format_ts(1_795_607_253_580) == "2026-11-25 11:47:33.580"
    assert format_ts(1_795_607_253_005) == "2026-11-25 11:47:33.005"


def _row(request_id: str, version: int) -> bytes:
    status = 200 if version == 2 else 0
    return encode_row(
        UsageRow(request_id, 1, "c", "k", "p", "f", "/r", "GET", status, "admitted", "", True, 0, 0, 0.0, {}, version)
    )


def test_a_decision_row_is_dropped_only_when_its_response_row_is_in_the_batch() -> None:
    data = _row("a", 1) + _row("b", 1) + _row("a", 2) + _row('c"q', 1) + _row('c"q', 2) + _row("d", 2)
    kept = without_superseded(data).splitlines()
    assert [json.loads(line)["request_id"] for line in kept] == ["b", "a", 'c"q', "d"]
    assert all(json.loads(line)["version"] == 2 for line in kept if json.loads(line)["request_id"] != "b")
    assert without_superseded(_row("x", 1)) == _row("x", 1)


def test_row_ids_are_unique_and_never_empty() -> None:
    ids = [new_row_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    prefix = ids[0].split("-")[0]
    assert len(prefix) == 16
    assert all(i.startswith(prefix + "-") for i in ids), "one random prefix per process"
    assert all(c in "0123456789abcdef-" for c in ids[-1])


def test_a_forked_child_draws_its_own_row_ids() -> None:
    """A child sharing the parent's prefix and serial would repeat the parent's next ids."""
    parent = new_row_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave at once
        os.write(write, new_row_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child
    assert child.split("-")[0] != parent.split("-")[0]


def test_a_priced_row_carries_its_price_and_unit() -> None:
    row = UsageRow("r1", 1_700_000_000_000, "c", "k", "p", "f", "r", "GET", 0, "admitted", "", True, 0, 0, 0.0)
    decoded = json.loads(encode_row(row._replace(price_micros=400, balance_unit="credits")))
    assert set(decoded) == set(COLUMNS)
    assert (decoded["price_micros"], decoded["balance_unit"]) == (400, "credits")
