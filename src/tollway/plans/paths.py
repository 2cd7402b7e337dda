"""Route path patterns: exact paths, templates with ``{name}`` segments, and prefixes. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

PatternKind = Literal["exact", "template", "prefix"]

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FORBIDDEN: Final = re.compile(r"[\s?#]")
ANY_SEGMENT: Final = "{}"
"""How a placeholder appears in ``PathPattern.segments`` (its name does not matter for matching)."""


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A parsed ``path`` or ``prefix``. ``segments`` is set for exact paths and templates."""

    kind: PatternKind
    text: str
    segments: tuple[str, ...] = ()

    @property
    def shape(self) -> str:
        """What the pattern matches, independent of placeholder names: equal shapes match the same paths."""
        if self.kind == "template":
            return "/" + "/".join(self.segments)
        return self.text

    @property
    def literal_count(self) -> int:
        return sum(1 for s in self.segments if s != ANY_SEGMENT)


def parse_path(text: str) -> PathPattern:
    """Parse a route ``path``: exact (``/v1/items``) or a template (``/v1/items/{id}``). Raises ValueError."""
    _check_common(text)
    parts = text[1:].split("/")
    segments: list[str] = []
    names: set[str] = set()
    for index, part in enumerate(parts):
        if part == "" and index != len(parts) - 1:
            raise ValueError("empty path segment (//)")
        whole = _PLACEHOLDER.fullmatch(part)
        if whole:
            if whole.group(1) in names:
                raise ValueError(f"placeholder {{{whole.group(1)}}} appears twice")
            names.add(whole.group(1))
            segments.append(ANY_SEGMENT)
        elif "{" in part or "}" in part:
            raise ValueError("a placeholder must be a whole segment named like {id}")
        else:
            segments.append(part)
    return PathPattern("template" if names else "exact", text, tuple(segments))


def parse_prefix(text: str) -> PathPattern:
    """Parse a route ``prefix``: a plain string prefix of the path, as Envoy's route ``prefix``."""
    _check_common(text)
    if "{" in text or "}" in text:
        raise ValueError("a prefix cannot hold placeholders; use `path` for a template")
    return PathPattern("prefix", text)


def _check_common(text: str) -> None:
    if not text.startswith("/"):
        raise ValueError("must start with /")
    if _FORBIDDEN.search(text):
        raise ValueError("must not contain spaces, ? or # (the query string is never matched)")
