"""Usage rows as the spool holds them, for tests that load a fixed dataset into ClickHouse."""

from datetime import UTC, datetime

from tollway.usage.row import UsageRow, encode_row


def ms(text: str) -> int:
    """Epoch milliseconds of a UTC time ``YYYY-MM-DD HH:MM:SS[.fff]``."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def usage_row(
    request_id: str,
    ts: str,
    customer: str,
    meters: dict[str, int],
    *,
    status: int = 200,
    plan: str = "metered",
    feature: str = "api",
    outcome: str = "admitted",
    version: int = 2,
) -> bytes:
    """One JSONEachRow line: ``outcome`` admitted, or refused (reason ``quota-exceeded``); the response
    bytes are the ``egress`` meter's quantity."""
    return encode_row(
        UsageRow(
            request_id=request_id,
            ts_ms=ms(ts),
            customer_id=customer,
            subject="key",
            plan=plan,
            feature=feature,
            route="/v1/things",
            method="GET",
            status=status,
            outcome="refused" if outcome == "refused" else "admitted",
            reason="quota-exceeded" if outcome == "refused" else "",
            limits_checked=True,
            request_bytes=0,
            response_bytes=meters.get("egress", 0),
            upstream_latency_ms=1.0,
            meters=meters,
            version=version,
        )
    )
