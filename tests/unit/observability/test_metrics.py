"""The lean registry renders what Prometheus' own parser reads back, with the counts put in."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tollway.observability.metrics import Registry


def parsed(registry: Registry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(registry.render()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_counters_gauges_and_histograms_round_trip_through_the_prometheus_parser() -> None:
    registry = Registry()
    decisions = registry.counter("tollway_decisions_total", "Verdicts.", ("outcome", "reason"))
    depth = registry.gauge("tollway_spool_pending_bytes", "Bytes waiting.", read=lambda: {(): 1234.0})
    info = registry.gauge("tollway_catalog_info", "The live catalog.", ("version", "digest"))
    latency = registry.histogram("tollway_check_duration_seconds", "Check latency.", ("protocol",))
    decisions.inc(("admitted", ""))
    decisions.inc(("admitted", ""))
    decisions.inc(("refused", 'quota "exceeded"\\\n'))
    info.set(1, ("v1", "sha256:ab"))
    for value in (0.00005, 0.0003, 0.0003, 0.2, 7.0):
        latency.observe(value, ("http",))
    got = parsed(registry)
    assert got["tollway_decisions_total"] == {
        (("outcome", "admitted"), ("reason", "")): 2,
        (("outcome", "refused"), ("reason", 'quota "exceeded"\\\n')): 1,
    }
    assert got["tollway_spool_pending_bytes"] == {(): 1234}
    assert got["tollway_catalog_info"] == {(("digest", "sha256:ab"), ("version", "v1")): 1}
    buckets = {dict(labels)["le"]: value for labels, value in got["tollway_check_duration_seconds_bucket"].items()}
    assert buckets["0.0001"] == 1
    assert buckets["0.0005"] == 3
    assert buckets["0.25"] == 4
    assert buckets["2.5"] == 4
    assert buckets["+Inf"] == 5
    assert got["tollway_check_duration_seconds_count"] == {(("protocol", "http"),): 5}
    assert math.isclose(got["tollway_check_duration_seconds_sum"][(("protocol", "http"),)], 7.20065)
    assert depth.name in registry.render()


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_histogram_buckets_are_cumulative_and_end_with_the_count(values: list[float]) -> None:
    registry = Registry()
    histogram = registry.histogram("h_seconds", "h", buckets=(0.001, 0.1, 1.0, 10.0))
    for value in values:
        histogram.observe(value)
    if not values:
        assert histogram.count() == 0
        return
    got = parsed(registry)
    buckets = sorted(
        ((float(dict(labels)["le"]), count) for labels, count in got["h_seconds_bucket"].items()),
    )
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == len(values) == got["h_seconds_count"][()]
    for bound, count in buckets:
        assert count == sum(1 for v in values if v <= bound)


def test_a_name_is_registered_once_and_buckets_must_increase() -> None:
    registry = Registry()
    registry.counter("x_total", "x")
    with pytest.raises(ValueError, match="already registered"):
        registry.counter("x_total", "again")
    with pytest.raises(ValueError, match="increasing"):
        registry.histogram("y_seconds", "y", buckets=(1.0, 0.5))
