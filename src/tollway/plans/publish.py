"""``tollway plans publish``: stamp each plan version not yet published with its digest, in the catalog's own
text (comments, order and formatting kept). Pure: text in, text out.

A body written as a block mapping gets a ``published: sha256:…`` line as its first key, at its indentation
(also inside a ConfigMap's ``catalog.yaml: |`` block). One written in flow style (``{…}``) cannot be stamped
without rewriting it: it is reported with the line to add.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from tollway.plans.errors import format_path
from tollway.plans.loader import load_catalog_text
from tollway.plans.schema import Catalog, Plan
from tollway.plans.versions import bodies, unpublished
from tollway.plans.yaml_source import read_document


@dataclass(frozen=True, slots=True)
class Stamp:
    plan_id: str  # the compiled id: pro, pro@2
    where: str  # plans.pro.versions[2]
    digest: str
    line: int  # 1-based line of the body's first key (0: not stamped, see ``reason``)
    reason: str = ""


def publish(text: str, filename: str) -> tuple[str, list[Stamp]]:
    """``text`` with every unpublished version stamped, and the stamps (those that could not be written
    have ``line == 0``). Raises ``CatalogError`` when the catalog is not valid (an edited published
    version included): nothing is published then. A corrected version keeps the digest it was published
    with (its ``correction`` says why it differs)."""
    load_catalog_text(text, filename)  # every check, with file:line
    document = read_document(text, filename)
    written = Catalog.model_validate(document.data).plans  # as written: versions not compiled into plans
    stamps: list[Stamp] = []
    lines = text.splitlines(keepends=True)
    for plan_id, base, digest in unpublished(written):
        where = format_path(base)
        if plan_id in _corrected(written):
            continue
        at = document.value_positions.get(base)
        line = lines[at.line - 1] if at is not None and 0 < at.line <= len(lines) else ""
        indent = line[: at.column - 1] if at is not None else "x"
        if at is None or at.detail or indent.strip() or line[at.column - 1 : at.column] in ("{", ""):
            reason = f"not a block mapping: add `published: {digest}` to {where} by hand"
            stamps.append(Stamp(plan_id, where, digest, 0, reason))
            continue
        stamps.append(Stamp(plan_id, where, digest, at.line))
    for stamp in sorted((s for s in stamps if s.line), key=lambda s: s.line, reverse=True):
        first = lines[stamp.line - 1]
        indent = first[: len(first) - len(first.lstrip(" "))]
        newline = "\r\n" if first.endswith("\r\n") else "\n"
        lines.insert(stamp.line - 1, f"{indent}published: {stamp.digest}{newline}")
    placed = sorted((s for s in stamps if s.line), key=lambda s: s.line)
    moved = {id(stamp): stamp.line + index for index, stamp in enumerate(placed)}  # the stamp's own line
    stamps = [replace(s, line=moved[id(s)]) if s.line else s for s in stamps]
    result = "".join(lines)
    if result != text:
        load_catalog_text(result, filename)  # never hand back a catalog that does not load
    return result, stamps


def _corrected(plans: Mapping[str, Plan]) -> set[str]:
    return {plan_id for plan_id, _, body in bodies(plans) if body.published is not None and body.correction}
