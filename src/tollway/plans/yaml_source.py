"""Catalog YAML to plain data, remembering where every node starts so errors can point at it.

PyYAML's constructors forget positions and let a duplicate key silently win; here the document is
composed into nodes and converted by hand: duplicate keys and merge keys (``<<``) are issues, a YAML
float becomes a ``Decimal`` built from its exact source text (never a binary float), and a
Kubernetes ConfigMap is unwrapped to the catalog in its ``data`` with positions kept in the
ConfigMap file. Pure: takes text (or bytes, ``decode_yaml``), does no I/O.

Hostile or broken input is bounded before it can cost much: a document is at most ``MAX_YAML_BYTES``
(checked before decoding), nested at most ``MAX_DEPTH`` deep and made of at most ``MAX_NODES`` nodes
(both checked while composing, so parsing stops at the first node past a limit), and its aliases may
repeat at most ``MAX_ALIAS_NODES`` nodes (checked while converting). Each limit has its own message
naming the place where it was crossed; nothing here raises anything but ``CatalogError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tollway.plans.errors import CatalogError, CatalogIssue, Path, Problem, format_path, render_value

_TAG: Final = "tag:yaml.org,2002:"
_SIMPLE_TAGS: Final = frozenset(_TAG + t for t in ("str", "int", "bool", "null", "timestamp"))
_FLOAT_SPECIALS: Final = {".inf": "Infinity", "+.inf": "Infinity", "-.inf": "-Infinity", ".nan": "NaN"}
_BLOCK_INDENT: Final = re.compile(r"[|>]([1-9])")
_SHOWN_SOURCE: Final = 80

MAX_YAML_BYTES: Final = 1024 * 1024
"""The largest YAML input (catalog, ConfigMap, issuers file): 1 MiB, the most a Kubernetes ConfigMap holds."""
MAX_DEPTH: Final = 64
"""The deepest nesting of lists and mappings (a catalog needs fewer than ten levels)."""
MAX_NODES: Final = 50_000
"""The most nodes (values, lists, mappings, aliases) written in one document: ``plans/catalog.yaml`` has
about 500; a 1 MiB catalog like it, about 10,000."""
MAX_ALIAS_NODES: Final = 50_000
"""The most nodes aliases may add by repeating the node they name (the defence against alias bombs)."""


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column in the file the user edits."""

    line: int
    column: int
    detail: str = ""  # appended to messages: where inside an embedded catalog that is not a `|` block


Place = Callable[[yaml.Mark], Position]


@dataclass
class YamlDocument:
    """The catalog as plain data (dicts, lists, scalars) plus the position of each node."""

    filename: str
    data: object
    value_positions: dict[Path, Position] = field(default_factory=dict)
    key_positions: dict[Path, Position] = field(default_factory=dict)
    issues: list[CatalogIssue] = field(default_factory=list)
    broken: set[Path] = field(default_factory=set)  # replaced by null after an issue: skip problems there

    def reported(self, path: Path) -> bool:
        """Whether ``path`` lies in a part already reported as broken."""
        return any(path[: len(b)] == b for b in self.broken)

    def position(self, path: Path, *, on_key: bool = False) -> Position:
        """The node at ``path``, or the nearest enclosing node that exists (e.g. for a missing field)."""
        if on_key and path in self.key_positions:
            return self.key_positions[path]
        for end in range(len(path), -1, -1):
            found = self.value_positions.get(path[:end])
            if found is not None:
                return found
        return Position(1, 1)

    def issue(self, problem: Problem) -> CatalogIssue:
        where = self.position(problem.path, on_key=problem.on_key)
        return CatalogIssue(self.filename, where.line, where.column, problem.message + where.detail, problem.value)


def decode_yaml(data: bytes, filename: str, size: int | None = None) -> str:
    """The text of a YAML file from its bytes (``size``: the file's size when only its start was read).

    Raises ``CatalogError`` if it is larger than ``MAX_YAML_BYTES`` or not UTF-8, at the line where the
    limit is crossed or the first byte that is not UTF-8."""
    _check_size(data, filename, max(size or 0, len(data)))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        bad = data[exc.start : exc.end].hex(" ")
        message = f"not UTF-8 text ({exc.reason}): save the file as UTF-8"
        raise CatalogError([CatalogIssue(filename, line, column, message, f"byte(s) {bad}")]) from None


def _check_size(data: bytes, filename: str, size: int) -> None:
    if size <= MAX_YAML_BYTES:
        return
    head = data[:MAX_YAML_BYTES]
    line_start = head.rfind(b"\n") + 1
    column = len(head[line_start:].decode("utf-8", errors="replace")) + 1
    message = (
        f"the file is larger than the {MAX_YAML_BYTES:,}-byte limit of a YAML input (1 MiB, as a Kubernetes "
        "ConfigMap); the limit is crossed here"
    )
    raise CatalogError([CatalogIssue(filename, head.count(b"\n") + 1, column, message, f"{size:,} bytes")])


def read_document(text: str, filename: str) -> YamlDocument:
    """Parse ``text``; a YAML syntax error or a crossed limit raises ``CatalogError`` at once (nothing else
    can be checked)."""
    if len(text) * 4 > MAX_YAML_BYTES:  # could be over the limit: measure it in bytes
        encoded = text.encode("utf-8", errors="surrogatepass")
        _check_size(encoded, filename, len(encoded))
    lines = text.splitlines()
    root, aliases = _compose(text, filename, lines, _identity)
    if root is None:
        return YamlDocument(filename, None, {(): Position(1, 1)})
    outer = _Converter(filename, _identity, aliases)
    outer_data = outer.convert(root, ())
    if not _is_configmap(outer_data):
        return YamlDocument(filename, outer_data, outer.values, outer.keys, outer.issues, outer.broken)
    return _unwrap_configmap(root, outer, filename, lines)


def _identity(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


_AliasMarks = dict[tuple[int, object], yaml.Mark]
"""Where each alias is written: (id of the node holding it, its index or the id of its key node)."""


class _LimitCrossed(Exception):
    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader's composer, stopped at the first node nested deeper than ``MAX_DEPTH`` or past
    ``MAX_NODES`` (the composer recurses per level: unbounded, it ends in ``RecursionError``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.nodes = 0
        self.alias_marks: _AliasMarks = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # index: int, a key Node or None
        event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _LimitCrossed(
                mark, f"the document has more than {MAX_NODES:,} nodes (values, lists, mappings, aliases)"
            )
        if isinstance(event, AliasEvent):
            if parent is not None:
                self.alias_marks[(id(parent), id(index) if isinstance(index, Node) else index)] = mark
            return super().compose_node(parent, index)
        if self.depth >= MAX_DEPTH:
            raise _LimitCrossed(mark, f"lists and mappings are nested more than {MAX_DEPTH} deep")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _compose(text: str, filename: str, lines: list[str], place: Place) -> tuple[Node | None, _AliasMarks]:
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # its reader refuses characters YAML does not allow right here
        root: Node | None = loader.get_single_node()
    except _LimitCrossed as exc:
        where = place(exc.mark)
        raise CatalogError(
            [CatalogIssue(filename, where.line, where.column, exc.message + where.detail, _source(lines, where))]
        ) from None
    except yaml.MarkedYAMLError as exc:
        raise CatalogError([_syntax_issue(exc, filename, lines, place)]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a control character)
        where = place(_mark_at(text, exc.position))
        shown = f"U+{exc.character:04X}"
        message = f"YAML does not allow the character {shown} ({exc.reason}){where.detail}"
        raise CatalogError([CatalogIssue(filename, where.line, where.column, message, shown)]) from None
    except yaml.YAMLError as exc:
        raise CatalogError([CatalogIssue(filename, 1, 1, f"not readable as YAML: {exc}")]) from None
    except RecursionError:  # the limits above keep the composer shallow; this is only a last guard
        raise CatalogError([CatalogIssue(filename, 1, 1, "the document is nested too deeply")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return root, loader.alias_marks


def _mark_at(text: str, index: int) -> yaml.Mark:
    line = text.count("\n", 0, index)
    column = index - (text.rfind("\n", 0, index) + 1)
    return yaml.Mark("<text>", index, line, column, None, None)  # type: ignore[arg-type]


def _source(lines: list[str], where: Position) -> str:
    """The source line at ``where``, quoted (its first 80 characters)."""
    source = lines[where.line - 1].strip() if 0 < where.line <= len(lines) else ""
    if not source:
        return "end of file"
    return json.dumps(source[:_SHOWN_SOURCE]) + (" …" if len(source) > _SHOWN_SOURCE else "")


def _syntax_issue(exc: yaml.MarkedYAMLError, filename: str, lines: list[str], place: Place) -> CatalogIssue:
    mark = exc.problem_mark or exc.context_mark
    where = place(mark) if mark is not None else Position(1, 1)
    message = f"YAML syntax error: {exc.problem or exc.context}"
    if exc.problem == "but found another document":
        message = "YAML syntax error: a catalog is one YAML document; found the start of another"
    elif exc.context and exc.problem and exc.context_mark is not None:
        message += f" ({exc.context} at line {place(exc.context_mark).line})"
    message += where.detail
    return CatalogIssue(filename, where.line, where.column, message, _source(lines, where))


class _Converter:
    """Node tree → plain data, recording positions and structural issues."""

    def __init__(self, filename: str, place: Place, aliases: _AliasMarks) -> None:
        self.filename = filename
        self.place = place
        self.values: dict[Path, Position] = {}
        self.keys: dict[Path, Position] = {}
        self.issues: list[CatalogIssue] = []
        self.broken: set[Path] = set()  # already reported: validation problems here would only repeat them
        self._constructor = yaml.SafeLoader("")
        self._open: set[int] = set()  # nodes being converted: an alias to one of them is a cycle
        self._aliases = aliases
        self._via: yaml.Mark | None = None  # the alias being expanded (innermost), if any
        self._converted: set[int] = set()  # nodes converted once: converting one again repeats it
        self._repeated = 0  # aliases can multiply a small file into a huge tree
        self._depth = 0  # through aliases, nesting can exceed what the composer allowed
        self._stopped = False

    def _issue(self, node: Node, path: Path, message: str, value: object, mark: yaml.Mark | None = None) -> None:
        where = self.place(mark or node.start_mark)
        self.issues.append(
            CatalogIssue(
                self.filename,
                where.line,
                where.column,
                f"{format_path(path)}: {message}{where.detail}",
                render_value(value),
            )
        )

    def convert(self, node: Node, path: Path) -> object:
        if self._stopped:
            return None
        self.values.setdefault(path, self.place(node.start_mark))
        if id(node) in self._converted:
            self._repeated += 1
            if self._repeated > MAX_ALIAS_NODES:  # an alias bomb: report once, validate nothing
                self._stop(node, path, f"aliases repeat more than {MAX_ALIAS_NODES:,} nodes (each repeats its node)")
                return None
        else:
            self._converted.add(id(node))
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._open:
            self._issue(node, path, "an alias refers to a node that contains it", "*alias", self._via)
            self.broken.add(path)
            return None
        if self._depth >= MAX_DEPTH:
            self._stop(node, path, f"through aliases, lists and mappings are nested more than {MAX_DEPTH} deep")
            return None
        self._open.add(id(node))
        self._depth += 1
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            assert isinstance(node, SequenceNode)
            return [self._convert_child(node, index, item, (*path, index)) for index, item in enumerate(node.value)]
        finally:
            self._depth -= 1
            self._open.discard(id(node))

    def _convert_child(self, parent: Node, index: object, node: Node, path: Path) -> object:
        """Convert ``node``, held by ``parent`` at ``index`` (a list index, or the key node of a value)."""
        alias = self._aliases.get((id(parent), id(index) if isinstance(index, Node) else index))
        if alias is None:
            return self.convert(node, path)
        outer, self._via = self._via, alias
        try:
            return self.convert(node, path)
        finally:
            self._via = outer

    def _stop(self, node: Node, path: Path, message: str) -> None:
        """A limit crossed: report it once (at the alias being expanded), then convert nothing more."""
        self._issue(node, path, message, "*alias", self._via)
        self._stopped = True
        self.broken.add(())

    def _mapping(self, node: MappingNode, path: Path) -> dict[object, object]:
        result: dict[object, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                self._issue(key_node, path, "merge keys (<<) are not supported: write the entries out", "<<")
                continue
            if not isinstance(key_node, ScalarNode):
                self._issue(key_node, path, "a mapping key must be a plain value", "a nested key")
                continue
            key = self._scalar(key_node, path)
            if not isinstance(key, str | int | bool | Decimal) and key is not None:
                key = key_node.value
            if key in result:
                first = self.keys.get((*path, key)) if isinstance(key, str | int) else None
                seen = f" (first at line {first.line})" if first else ""
                self._issue(key_node, (*path, key) if isinstance(key, str | int) else path, f"duplicate key{seen}", key)
                continue
            if isinstance(key, str | int):
                self.keys[(*path, key)] = self.place(key_node.start_mark)
                result[key] = self._convert_child(node, key_node, value_node, (*path, key))
            else:
                result[key] = self._convert_child(node, key_node, value_node, path)
        return result

    def _scalar(self, node: ScalarNode, path: Path) -> object:
        if node.tag == _TAG + "float":
            text = node.value.replace("_", "")
            try:
                return Decimal(_FLOAT_SPECIALS.get(text.lower(), text))
            except InvalidOperation:
                return node.value  # e.g. YAML 1.1 sexagesimal 1:30.5; validation reports it where it matters
        if node.tag in _SIMPLE_TAGS:
            try:
                return self._constructor.construct_object(node)
            except (yaml.YAMLError, ValueError):
                return node.value
        self._issue(node, path, f"unsupported YAML tag {node.tag}", node.value)
        return node.value


def _is_configmap(data: object) -> bool:
    return isinstance(data, dict) and data.get("apiVersion") == "v1" and data.get("kind") == "ConfigMap"


def _unwrap_configmap(root: Node, outer: _Converter, filename: str, lines: list[str]) -> YamlDocument:
    def fail(message: str, path: Path, value: str) -> YamlDocument:
        at = outer.values.get(path, Position(1, 1))
        issue = CatalogIssue(filename, at.line, at.column, message, value)
        return YamlDocument(filename, None, {(): at}, issues=[*outer.issues, issue])

    data_node = _child(root, "data")
    if not isinstance(data_node, MappingNode):
        return fail("ConfigMap: expected a `data` mapping holding catalog.yaml", ("data",), "no data")
    entries = {k.value: (k, v) for k, v in data_node.value if isinstance(k, ScalarNode)}
    yaml_keys = sorted(k for k in entries if k.endswith((".yaml", ".yml")))
    if "catalog.yaml" in entries:
        key = "catalog.yaml"
    elif len(yaml_keys) == 1:
        key = yaml_keys[0]
    else:
        shown = ", ".join(yaml_keys or sorted(entries)) or "none"
        return fail("ConfigMap: data must hold catalog.yaml or exactly one *.yaml/*.yml key", ("data",), shown)
    key_node, value_node = entries[key]
    if not isinstance(value_node, ScalarNode) or value_node.tag != _TAG + "str":
        return fail(f"ConfigMap: data.{key} must be a string (use `{key}: |`)", ("data", key), "not a string")
    place = _inner_place(key_node, value_node, lines, key)
    inner_root, aliases = _compose(value_node.value, filename, lines, place)
    if inner_root is None:
        return fail(f"ConfigMap: data.{key} is empty", ("data", key), '""')
    inner = _Converter(filename, place, aliases)
    data = inner.convert(inner_root, ())
    return YamlDocument(filename, data, inner.values, inner.keys, [*outer.issues, *inner.issues], inner.broken)


def _child(node: Node, key: str) -> Node | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == key and isinstance(value_node, Node):
                return value_node
    return None


def _inner_place(key_node: Node, value_node: ScalarNode, lines: list[str], key: str) -> Place:
    """Map positions inside the embedded catalog to the ConfigMap file.

    A literal block (``|``) keeps lines one to one: content starts on the line after the indicator,
    shifted right by the block's indentation. Other styles fold or escape lines, so every issue points
    at the data key and the message says where it is inside the embedded text.
    """
    if value_node.style == "|":
        header_line = value_node.start_mark.line
        explicit = _BLOCK_INDENT.match(lines[header_line][value_node.start_mark.column :])
        if explicit:
            parent_indent = len(lines[header_line]) - len(lines[header_line].lstrip(" "))
            indent = parent_indent + int(explicit.group(1))
        else:
            content = (line for line in lines[header_line + 1 :] if line.strip())
            first = next(content, "")
            indent = len(first) - len(first.lstrip(" "))

        def in_block(mark: yaml.Mark) -> Position:
            return Position(header_line + 2 + mark.line, indent + mark.column + 1)

        return in_block
    at = _identity(key_node.start_mark)

    def at_key(mark: yaml.Mark) -> Position:
        return Position(at.line, at.column, f" [at line {mark.line + 1}, column {mark.column + 1} of data.{key}]")

    return at_key
