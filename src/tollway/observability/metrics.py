"""Prometheus metrics, kept lean for the hot path: a counter increment is one dict update, an
observation one ``bisect`` and two additions, with no locks (one event loop per process).

Rendered in the Prometheus text exposition format (version 0.0.4) by :meth:`Registry.render`, which
``GET /metrics`` on the admin port serves. Label values are escaped as the format requires; label
names and metric names are fixed in code.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Final

LATENCY_BUCKETS_S: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""Seconds: a check takes from ~50 µs (cached, no Redis) to the Redis timeout."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


Reading = Callable[[], dict[tuple[str, ...], float]]


class _Scalar:
    """One number per combination of label values: kept here, or (``read``) kept elsewhere and read
    when scraped. An unlabelled one exists from the start (0)."""

    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = (), read: Reading | None = None) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._read = read
        self._values: dict[tuple[str, ...], float] = {}

    def samples(self) -> Iterable[str]:
        values = self._read() if self._read is not None else self._values
        if not values and not self.label_names:
            values = {(): 0}
        for labels, value in sorted(values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(value)}"


class Counter(_Scalar):
    """A monotonically increasing count per combination of label values; or, with ``read``, a count kept
    elsewhere (e.g. the loader's rows loaded) read when scraped."""

    kind = "counter"

    def inc(self, labels: tuple[str, ...] = (), amount: float = 1) -> None:
        values = self._values
        values[labels] = values.get(labels, 0) + amount

    def value(self, labels: tuple[str, ...] = ()) -> float:
        return self._values.get(labels, 0)


class Gauge(_Scalar):
    """A value read when scraped (``read`` returns it per label values), or set by :meth:`set`."""

    kind = "gauge"

    def set(self, value: float, labels: tuple[str, ...] = ()) -> None:
        self._values[labels] = value


class Histogram:
    """Observations counted in cumulative buckets (``le``), with their sum and count, per label values."""

    kind: Final = "histogram"

    def __init__(
        self, name: str, help_text: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS_S
    ) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("histogram buckets must be distinct and increasing")
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self.buckets = tuple(buckets)
        # Per label values: [count per bucket (non-cumulative, last = +Inf), sum]
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, labels: tuple[str, ...] = ()) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        series[0][bisect_left(self.buckets, value)] += 1
        series[1][0] += value

    def count(self, labels: tuple[str, ...] = ()) -> int:
        series = self._series.get(labels)
        return sum(series[0]) if series is not None else 0

    def samples(self) -> Iterable[str]:
        series = self._series
        if not series and not self.label_names:  # an unlabelled histogram exists from the start
            series = {(): ([0] * (len(self.buckets) + 1), [0.0])}
        for labels, (counts, total) in sorted(series.items()):
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                le = f'le="{_number(bound)}"'
                yield f"{self.name}_bucket{_labels(self.label_names, labels, le)} {cumulative}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total[0])}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {cumulative}"


Metric = Counter | Gauge | Histogram


class Registry:
    """The metrics of one process, in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def add(self, metric: Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} is already registered")
        self._metrics[metric.name] = metric

    def counter(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        read: Reading | None = None,
    ) -> Counter:
        metric = Counter(name, help_text, labels, read)
        self.add(metric)
        return metric

    def gauge(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        read: Reading | None = None,
    ) -> Gauge:
        metric = Gauge(name, help_text, labels, read)
        self.add(metric)
        return metric

    def histogram(
        self, name: str, help_text: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS_S
    ) -> Histogram:
        metric = Histogram(name, help_text, labels, buckets)
        self.add(metric)
        return metric

    def render(self) -> str:
        """Every metric in the text exposition format, ``# HELP`` and ``# TYPE`` first."""
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.append(f"# HELP {metric.name} {metric.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"
