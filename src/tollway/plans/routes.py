"""Request (method, path) → feature, on the hot path of every request. Pure.

Precedence: an exact path beats a template, which beats a prefix. Among templates the one with more
literal segments wins, then the longer one, then the one whose literals come first (``/v1/x/{b}``
before ``/v1/{a}/x``), then the one declared first. Among prefixes the longest wins. Only routes
listing the request's method (or ``*``) take part: ``HEAD`` does not match a ``GET`` route unless
listed. The query string and fragment are ignored; the path is compared as sent (Envoy normalises it).

Exact paths are one dict look-up. Templates and prefixes are compiled once into a single regular
expression of ordered alternatives, one capture group per route, so one ``match`` call finds the
route with the highest precedence (``lastindex`` names it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from tollway.plans.paths import ANY_SEGMENT, PatternKind, parse_path
from tollway.plans.schema import Catalog

_ANY_METHOD = "*"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The feature a request belongs to; ``route`` is the pattern as written (a low-cardinality metering label)."""

    feature: str
    route: str
    cost: int


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One route of the table, for listings (``tollway plans routes``)."""

    methods: tuple[str, ...]
    kind: PatternKind
    match: RouteMatch


class RouteTable:
    __slots__ = ("_entries", "_exact", "_pattern", "_patterned")

    def __init__(self, entries: list[RouteEntry]) -> None:
        self._exact: dict[str, dict[str, RouteMatch]] = {}
        for entry in entries:
            if entry.kind == "exact":
                by_method = self._exact.setdefault(entry.match.route, {})
                for method in entry.methods:
                    by_method.setdefault(method, entry.match)
        ranked: list[tuple[tuple[object, ...], RouteEntry]] = []
        for order, entry in enumerate(entries):
            if entry.kind != "exact":
                ranked.append((_rank(entry, order), entry))
        ranked.sort(key=lambda item: item[0])
        self._patterned: tuple[RouteMatch, ...] = tuple(entry.match for _, entry in ranked)
        alternatives = "|".join(f"({_regex(entry)})" for _, entry in ranked)
        self._pattern = re.compile(alternatives, re.DOTALL) if alternatives else None
        self._entries = tuple([e for e in entries if e.kind == "exact"] + [entry for _, entry in ranked])

    @classmethod
    def build(cls, catalog: Catalog) -> RouteTable:
        entries: list[RouteEntry] = []
        for feature_id, feature in catalog.features.items():
            for route in feature.routes:
                pattern = route.pattern
                cost = route.cost if route.cost is not None else feature.cost
                entries.append(
                    RouteEntry(tuple(route.methods), pattern.kind, RouteMatch(feature_id, pattern.text, cost))
                )
        return cls(entries)

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The route with the highest precedence for this request, or ``None`` (no feature covers it)."""
        if "?" in path or "#" in path:
            path = path.split("?", 1)[0].split("#", 1)[0]
        by_method = self._exact.get(path)
        if by_method is not None:
            found = by_method.get(method) or by_method.get(_ANY_METHOD)
            if found is not None:
                return found
        if self._pattern is None:
            return None
        matched = self._pattern.match(f"{method} {path}")
        if matched is None:
            return None
        index = matched.lastindex  # one capture group per alternative, numbered in precedence order
        return self._patterned[index - 1] if index else None

    def __iter__(self) -> Iterator[RouteEntry]:
        """Every route, in precedence order: exact paths first (declaration order), then templates, then prefixes."""
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _rank(entry: RouteEntry, order: int) -> tuple[object, ...]:
    """Sort key: templates before prefixes; specific before general; declaration order breaks ties."""
    text = entry.match.route
    if entry.kind == "prefix":
        return (1, -len(text), (), order)
    segments = _segments(text)
    literal_first = tuple(segment == ANY_SEGMENT for segment in segments)  # False (literal) sorts first
    literals = sum(1 for s in segments if s != ANY_SEGMENT)
    return (0, -literals, -len(segments), literal_first, order)


def _segments(text: str) -> tuple[str, ...]:
    return parse_path(text).segments


def _regex(entry: RouteEntry) -> str:
    methods = "[^ ]+" if _ANY_METHOD in entry.methods else "(?:" + "|".join(map(re.escape, entry.methods)) + ")"
    if entry.kind == "prefix":
        return f"{methods} {re.escape(entry.match.route)}"
    body = "/".join("[^/]+" if s == ANY_SEGMENT else re.escape(s) for s in _segments(entry.match.route))
    return f"{methods} /{body}\\Z"
