"""Any YAML input — the plan catalog (plain or as a ConfigMap) and the JWT issuers file — gets clear
``file:line:column`` errors, never a traceback, within a bounded time, however hostile it is: deep
nesting of every style, alias bombs and alias chains, files past the size limit, too many nodes,
bytes that are not UTF-8, characters YAML forbids, tabs, duplicate keys, unterminated strings."""

import io
import os
import re
import subprocess
import sys
from collections.abc import Callable
from contextlib import redirect_stderr
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollway.auth.jwt.errors import IssuerConfigError
from tollway.auth.jwt.issuers import load_issuers, load_issuers_text
from tollway.cli.main import main
from tollway.plans.errors import CatalogError, CatalogIssue
from tollway.plans.loader import load_catalog, load_catalog_text
from tollway.plans.yaml_source import MAX_ALIAS_NODES, MAX_DEPTH, MAX_NODES, MAX_YAML_BYTES, decode_yaml

ROOT = Path(__file__).parents[3]
CATALOG_HEAD = "apiVersion: tollway.dev/v1\nkind: PlanCatalog\nmetadata: {name: t, version: '1'}\n"
ISSUERS_HEAD = "apiVersion: tollway.dev/v1\nkind: TokenIssuers\n"


def nested(style: str, depth: int) -> str:
    """A value nested ``depth`` deep, in one YAML style (it starts after ``key: `` on its own line)."""
    if style == "flow-list":
        return "[" * depth + "]" * depth
    if style == "flow-map":
        return "{a: " * depth + "1" + "}" * depth
    if style == "flow-mixed":
        return "[{a: " * (depth // 2) + "1" + "}]" * (depth // 2)
    if style == "block-list":
        return "\n" + "  " + "- " * depth + "1"
    if style == "block-map":
        return "\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth)) + "  " * (depth + 1) + "v"
    raise AssertionError(style)


STYLES = ("flow-list", "flow-map", "flow-mixed", "block-list", "block-map")


def bomb(levels: int, fan_out: int) -> str:
    """Billion laughs: each level's list repeats the one before ``fan_out`` times."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fan_out) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan_out) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def alias_chain(links: int, depth: int = 40) -> str:
    """Each anchored node nests the one before ``depth`` deep: shallow as written, deep through aliases."""
    lines = [f"a0: &a0 {'[' * depth}x{']' * depth}"]
    lines += [f"a{i}: &a{i} {'[' * depth}*a{i - 1}{']' * depth}" for i in range(1, links + 1)]
    return "\n".join(lines) + "\n"


# Each case: a whole file, as bytes. `head` is the document's start (catalog or issuers), so that
# everything but the pathology is well-formed.
CASES: dict[str, Callable[[str], bytes]] = {
    **{f"deep-{style}": (lambda head, s=style: (head + "x: " + nested(s, 500) + "\n").encode()) for style in STYLES},
    "billion-laughs": lambda head: (head + bomb(9, 9)).encode(),
    "alias-chain-depth": lambda head: (head + alias_chain(200)).encode(),
    "alias-cycle": lambda head: (head + "x: &a [1, *a]\n").encode(),
    "over-size-limit": lambda head: (head + "plans:\n" + "  p: {name: n}\n" * 150_000).encode(),
    "over-size-one-line": lambda head: (head + "x: " + "a" * (MAX_YAML_BYTES + 10) + "\n").encode(),
    "too-many-nodes": lambda head: (head + "x: [" + ",".join(["1"] * (MAX_NODES + 10)) + "]\n").encode(),
    "not-utf8": lambda head: (head + "x: caf").encode() + b"\xe9\n",
    "utf16": lambda head: b"\xff\xfe" + head.encode("utf-16-le"),
    "surrogate-bytes": lambda head: head.encode() + b"x: \xed\xa0\x80\n",
    "nul-byte": lambda head: (head + "x: a\x00b\n").encode(),
    "control-char": lambda head: (head + "x: a\x07b\n").encode(),
    "tab-indent": lambda head: (head + "x:\n\ty: 1\n").encode(),
    "duplicate-keys": lambda head: (head + "x: 1\nx: 2\n").encode(),
    "unterminated-double": lambda head: (head + 'x: "abc\ny: 2\n').encode(),
    "unterminated-single": lambda head: (head + "x: 'abc\n").encode(),
    "unterminated-flow": lambda head: (head + "x: [1, 2\n").encode(),
    "unterminated-long-line": lambda head: (head + "x: [" + "a" * 300_000 + "\n").encode(),
    "undefined-alias": lambda head: (head + "x: *nope\n").encode(),
    "two-documents": lambda head: (head + "---\nx: 1\n").encode(),
    "huge-integer": lambda head: (head + "x: " + "9" * 20_000 + "\n").encode(),
    "unsupported-tag": lambda head: (head + "x: !!python/object:os.system ls\n").encode(),
}
# In a ConfigMap, too (byte-level cases only make sense as whole files).
CONFIGMAP_CASES = [name for name in CASES if name not in ("not-utf8", "utf16", "surrogate-bytes", "over-size-limit")]


def configmap(catalog_text: str) -> bytes:
    body = "".join(f"    {line}\n" for line in catalog_text.splitlines())
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: plans}}\ndata:\n  catalog.yaml: |\n{body}".encode()


POSITIONED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): (?P<message>.+)$")


def assert_positioned(issues: list[CatalogIssue], filename: str) -> None:
    assert issues
    for issue in issues:
        assert issue.file == filename
        assert issue.line >= 1, issue
        assert issue.column >= 1, issue
        assert len(str(issue)) < 1000, "a message quotes a bounded part of the file"


def write_cases(directory: Path, head: str) -> dict[str, Path]:
    paths = {}
    for name, make in CASES.items():
        paths[name] = directory / f"{name}.yaml"
        paths[name].write_bytes(make(head))
    for name in CONFIGMAP_CASES:
        text = CASES[name](CATALOG_HEAD).decode()
        paths[f"configmap-{name}"] = directory / f"configmap-{name}.yaml"
        paths[f"configmap-{name}"].write_bytes(configmap(text))
    return paths


def expected_message(name: str) -> str:
    name = name.removeprefix("configmap-")
    return {
        "billion-laughs": f"aliases repeat more than {MAX_ALIAS_NODES:,} nodes",
        "alias-chain-depth": f"through aliases, lists and mappings are nested more than {MAX_DEPTH} deep",
        "alias-cycle": "an alias refers to a node that contains it",
        "over-size-limit": f"larger than the {MAX_YAML_BYTES:,}-byte limit",
        "over-size-one-line": f"larger than the {MAX_YAML_BYTES:,}-byte limit",
        "too-many-nodes": f"more than {MAX_NODES:,} nodes",
        "not-utf8": "not UTF-8",
        "utf16": "not UTF-8",
        "surrogate-bytes": "not UTF-8",
        "nul-byte": "does not allow the character U+0000",
        "control-char": "does not allow the character U+0007",
        "tab-indent": "YAML syntax error",
        "duplicate-keys": "duplicate key",
        "unterminated-double": "YAML syntax error",
        "unterminated-single": "YAML syntax error",
        "unterminated-flow": "YAML syntax error",
        "unterminated-long-line": "YAML syntax error",
        "undefined-alias": "undefined alias",
        "two-documents": "found the start of another",
        "huge-integer": "x",
        "unsupported-tag": "unsupported YAML tag",
    }.get(name, f"nested more than {MAX_DEPTH} deep")


def test_plans_validate_reports_every_pathological_catalog_at_a_line(tmp_path: Path) -> None:
    """One ``tollway plans validate`` run over every case: exit 1, a positioned error per file, no
    traceback, and done in bounded time (the timeout, far above what the limits allow)."""
    paths = write_cases(tmp_path, CATALOG_HEAD)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "tollway", "plans", "validate", *map(str, paths.values())],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stdout == ""
    for name, path in paths.items():
        lines = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
        assert lines, f"{name}: no error reported"
        for line in lines:
            match = POSITIONED.match(line)
            assert match, f"{name}: {line[:300]}"
            assert int(match["line"]) >= 1, f"{name}: {line[:300]}"
            assert len(line) < 1000, f"{name}: {line[:300]}"
        assert expected_message(name) in "\n".join(lines), f"{name}: {lines}"


@pytest.mark.parametrize("name", list(CASES))
def test_serve_refuses_a_pathological_issuers_file_at_a_line(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tollway serve`` with such a ``TOLLWAY_JWT_ISSUERS`` exits 2 before opening a port, each problem
    at file:line, no traceback."""
    path = tmp_path / "issuers.yaml"
    path.write_bytes(CASES[name](ISSUERS_HEAD))
    monkeypatch.setenv("TOLLWAY_JWT_ISSUERS", str(path))
    monkeypatch.setenv("TOLLWAY_PEPPER", "p" * 32)
    monkeypatch.setenv("TOLLWAY_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delenv("TOLLWAY_CATALOG", raising=False)
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        code = main(["serve"])
    output = stderr.getvalue()
    assert code == 2, output[-3000:]
    assert "Traceback" not in output
    assert output.startswith("tollway: invalid issuers file"), output[:300]
    issue_lines = output.splitlines()[1:]
    assert issue_lines
    for line in issue_lines:
        match = POSITIONED.match(line)
        assert match, line[:300]
        assert match["file"] == str(path)
        assert int(match["line"]) >= 1
        assert len(line) < 1000
    assert expected_message(name) in output, output[:1000]


def test_serve_with_a_deep_issuers_file_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "issuers.yaml"
    path.write_bytes(CASES["deep-flow-list"](ISSUERS_HEAD))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "TOLLWAY_JWT_ISSUERS": str(path),
        "TOLLWAY_PEPPER": "p" * 32,
        "TOLLWAY_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "tollway", "serve"], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"{path}:3:" in result.stderr
    assert f"nested more than {MAX_DEPTH} deep" in result.stderr


# --- properties, in process ---------------------------------------------------------------------


def catalog_outcome(data: bytes, filename: str = "c.yaml") -> list[CatalogIssue]:
    """The issues of catalog ``data``; any other exception fails the test."""
    try:
        load_catalog_text(decode_yaml(data, filename), filename)
    except CatalogError as exc:
        return exc.issues
    return []


def issuers_outcome(data: bytes, filename: str = "i.yaml") -> list[CatalogIssue]:
    try:
        load_issuers_text(decode_yaml(data, filename), filename, {})
    except CatalogError as exc:
        return exc.issues
    except IssuerConfigError as exc:
        return exc.issues
    return []


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def deepest(style: str, depth: int) -> int:
    """How deep the deepest node of ``x: nested(style, depth)`` lies (the top-level mapping is 1)."""
    collections = 2 * (depth // 2) if style == "flow-mixed" else depth
    scalar_inside = style != "flow-list" or depth == 0  # every style but the empty flow list ends in a value
    return 1 + collections + scalar_inside


@FAST
@given(
    style=st.sampled_from(STYLES),
    depth=st.integers(0, 800),
    head=st.sampled_from([CATALOG_HEAD, ISSUERS_HEAD]),
    configmap_form=st.booleans(),
)
def test_any_nesting_depth_is_refused_cleanly(style: str, depth: int, head: str, configmap_form: bool) -> None:
    text = head + "x: " + nested(style, depth) + "\n"
    data = configmap(text) if configmap_form else text.encode()
    for issues in (catalog_outcome(data), issuers_outcome(data)):
        assert_positioned(issues, issues[0].file)
        too_deep = [issue for issue in issues if f"nested more than {MAX_DEPTH} deep" in issue.message]
        assert bool(too_deep) == (deepest(style, depth) > MAX_DEPTH)
        assert len(too_deep) <= 1


def repeated_by_aliases(levels: int, fan_out: int) -> int:
    """Nodes converted again because an alias names them: level i repeats level i-1 ``fan_out`` times."""
    size, repeated = 1 + fan_out, 0  # l0: the list and its scalars
    for _ in range(levels):
        repeated += fan_out * size
        size = 1 + fan_out * size
    return repeated


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a bomb costs ~1 s
@given(levels=st.integers(1, 9), fan_out=st.integers(1, 12), head=st.sampled_from([CATALOG_HEAD, ISSUERS_HEAD]))
def test_alias_expansion_is_bounded_and_named(levels: int, fan_out: int, head: str) -> None:
    data = (head + bomb(levels, fan_out)).encode()
    for issues in (catalog_outcome(data), issuers_outcome(data)):
        assert_positioned(issues, issues[0].file)
        bombed = [issue for issue in issues if "aliases repeat more than" in issue.message]
        assert bool(bombed) == (repeated_by_aliases(levels, fan_out) > MAX_ALIAS_NODES)
        if bombed:
            assert bombed == issues  # reported alone: nothing else is checked
            assert "*l" in (data.decode().splitlines()[bombed[0].line - 1])  # at an alias
        assert not any("nodes (values" in issue.message for issue in issues)  # never blamed on real nodes


YAML_CHARACTERS = "[]{}:,-&*!|>'\"#%@`?\n\t\r abx01.\\\x00\x07\x85\u2028\ufeffé"
YAMLISH = st.text(alphabet=st.sampled_from(list(YAML_CHARACTERS)), max_size=400)


@FAST
@given(body=YAMLISH, head=st.sampled_from(["", CATALOG_HEAD, ISSUERS_HEAD]))
def test_any_text_gets_positioned_issues_only(body: str, head: str) -> None:
    text = head + body
    forbidden = re.search(r"[\x00\x07]", text)
    for issues in (catalog_outcome(text.encode()), issuers_outcome(text.encode())):
        if issues:
            assert_positioned(issues, issues[0].file)
        if forbidden:  # YAML forbids it anywhere: reported alone, where it is
            [issue] = issues
            line_start = text.rfind("\n", 0, forbidden.start()) + 1
            assert (issue.line, issue.column) == (
                text.count("\n", 0, forbidden.start()) + 1,
                forbidden.start() - line_start + 1,
            )
            assert f"does not allow the character U+{ord(forbidden[0]):04X}" in issue.message


@FAST
@given(data=st.binary(max_size=600), head=st.sampled_from([b"", CATALOG_HEAD.encode()]))
def test_any_bytes_get_positioned_issues_only(data: bytes, head: bytes) -> None:
    for issues in (catalog_outcome(head + data), issuers_outcome(head + data)):
        if issues:
            assert_positioned(issues, issues[0].file)


def test_file_readers_stop_at_the_limit_and_report_the_real_size(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:
        handle.write(CATALOG_HEAD.encode())
        handle.truncate(50 * 1024 * 1024)  # 50 MB, sparse: only the first MiB and a byte may be read
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    [issue] = caught.value.issues
    assert issue.line == 4
    assert issue.value == "52,428,800 bytes"
    with pytest.raises(IssuerConfigError) as refused:
        load_issuers(path, {})
    assert refused.value.issues == [issue]
    # the limits leave room for real inputs: the example catalog and ConfigMap are far inside every one
    for name in ("catalog.yaml", "configmap.yaml"):
        assert load_catalog(ROOT / "plans" / name).metadata.name == "acme-data-api"
    assert (ROOT / "plans" / "catalog.yaml").stat().st_size * 20 < MAX_YAML_BYTES
