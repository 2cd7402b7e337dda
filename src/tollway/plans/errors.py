"""Typed catalog errors: every issue carries its file, 1-based line and column, a message and the offending value."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

Path = tuple[str | int, ...]
"""Where a value sits in the catalog document: mapping keys and list indexes from the root."""

_MAX_SHOWN = 80
_PLAIN_UNSAFE = frozenset("{}[],:#&*!|>'\"%@`")
_YAML_WORDS = frozenset({"", "null", "~", "true", "false", "yes", "no", "on", "off", "y", "n"})


@dataclass(frozen=True, slots=True)
class CatalogIssue:
    """One problem in a catalog file. ``line == 0`` means the problem concerns the whole file."""

    file: str
    line: int
    column: int
    message: str
    value: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        got = f" (got: {self.value})" if self.value is not None else ""
        return f"{where}: {self.message}{got}"


class CatalogError(Exception):
    """A catalog could not be loaded. ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Iterable[CatalogIssue]) -> None:
        self.issues: list[CatalogIssue] = sorted(issues, key=lambda i: (i.file, i.line, i.column))
        super().__init__("\n".join(str(issue) for issue in self.issues) or "invalid catalog")


class UnknownPlan(LookupError):
    """A plan id that the catalog does not define (e.g. a subscription naming a removed plan)."""

    def __init__(self, plan_id: str) -> None:
        super().__init__(f"no plan {plan_id!r} in the catalog")
        self.plan_id = plan_id


class UnknownMeter(LookupError):
    """A meter name that the catalog does not define."""

    def __init__(self, meter: str) -> None:
        super().__init__(f"no meter {meter!r} in the catalog")
        self.meter = meter


@dataclass(frozen=True, slots=True)
class Problem:
    """An issue found in the data before it is given a position in the file."""

    path: Path
    message: str
    value: str | None
    on_key: bool = False  # point at the mapping key rather than its value


def format_path(path: Path) -> str:
    """``("plans", "free", "limits", 0, "per")`` → ``plans.free.limits[0].per``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def render_value(value: object) -> str:
    """A short, YAML-like rendering of an offending value for messages."""
    text = _render(value, depth=0)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _render(value: object, depth: int) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal | float | date):
        return str(value)
    if isinstance(value, str):
        plain = (
            value.lower() not in _YAML_WORDS
            and value == value.strip()
            and not _PLAIN_UNSAFE.intersection(value[:1])
            and ": " not in value
            and " #" not in value
            and not _looks_numeric(value)
        )
        return value if plain else json.dumps(value, ensure_ascii=False)
    if depth >= 2:
        return "{…}" if isinstance(value, Mapping) else "[…]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_render(k, depth + 1)}: {_render(v, depth + 1)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v, depth + 1) for v in value) + "]"
    return repr(value)


def _looks_numeric(text: str) -> bool:
    try:
        Decimal(text.replace("_", ""))
    except ArithmeticError:
        return False
    return True
