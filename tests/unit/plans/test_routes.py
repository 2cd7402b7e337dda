from hypothesis import given
from hypothesis import strategies as st

from tollway.plans.routes import RouteEntry, RouteMatch, RouteTable


def entry(methods: str, kind: str, route: str, feature: str = "f", cost: int = 1) -> RouteEntry:
    return RouteEntry(tuple(methods.split(",")), kind, RouteMatch(feature, route, cost))  # type: ignore[arg-type]


TABLE = RouteTable(
    [
        entry("GET,HEAD", "exact", "/v1/items", "list"),
        entry("GET", "template", "/v1/items/{id}", "read"),
        entry("GET", "exact", "/v1/items/special", "special"),
        entry("PUT,DELETE", "template", "/v1/items/{id}", "write"),
        entry("GET", "template", "/v1/{kind}/{id}", "generic"),
        entry("GET", "template", "/v1/{kind}/x", "kind-x"),
        entry("GET", "template", "/v1/x/{id}", "x-id"),
        entry("*", "prefix", "/v1/", "fallback", cost=3),
        entry("*", "prefix", "/v1/items/", "items-prefix"),
        entry("POST", "exact", "/", "root"),
    ]
)


def feature(method: str, path: str) -> str | None:
    found = TABLE.match(method, path)
    return found.feature if found else None


def test_exact_beats_template_beats_prefix() -> None:
    assert feature("GET", "/v1/items") == "list"
    assert feature("GET", "/v1/items/42") == "read"
    assert feature("POST", "/v1/items/42") == "items-prefix"  # no template lists POST: longest prefix
    assert feature("POST", "/v1/other") == "fallback"


def test_more_literal_segments_win_then_literals_first() -> None:
    assert feature("GET", "/v1/users/7") == "generic"
    assert feature("GET", "/v1/users/x") == "kind-x"
    assert feature("GET", "/v1/x/x") == "x-id"  # equal specificity: the literal earlier in the path wins
    assert feature("GET", "/v1/items/x") == "read"  # /v1/items/{id} has two literals, /v1/{kind}/x too: literal first


def test_head_does_not_fall_back_to_get() -> None:
    assert feature("HEAD", "/v1/items") == "list"
    assert feature("HEAD", "/v1/items/42") == "items-prefix"


def test_query_string_and_fragment_are_ignored() -> None:
    assert feature("GET", "/v1/items?page=2") == "list"
    assert feature("GET", "/v1/items/42?x=/y#frag") == "read"
    assert feature("GET", "/v1/items#top") == "list"


def test_placeholders_match_one_non_empty_segment() -> None:
    assert feature("GET", "/v1/items/") == "items-prefix"
    assert feature("DELETE", "/v1/items/a/b") == "items-prefix"


def test_the_match_carries_route_as_written_and_cost() -> None:
    assert TABLE.match("PATCH", "/v1/zzz") == RouteMatch("fallback", "/v1/", 3)
    assert TABLE.match("DELETE", "/v1/items/1") == RouteMatch("write", "/v1/items/{id}", 1)
    assert TABLE.match("GET", "/v2/items") is None
    assert TABLE.match("GET", "/") is None
    assert TABLE.match("POST", "/") == RouteMatch("root", "/", 1)


def test_listing_is_in_precedence_order() -> None:
    routes = [e.match.route for e in TABLE]
    assert routes[:3] == ["/v1/items", "/v1/items/special", "/"]
    assert routes[-2:] == ["/v1/items/", "/v1/"]


def test_empty_table() -> None:
    assert RouteTable([]).match("GET", "/") is None


segment = st.text(alphabet="abcxyz019-_.~%", min_size=1, max_size=6)
template_part = st.one_of(segment, st.just(None))  # None: a placeholder


@given(st.lists(template_part, min_size=1, max_size=5), st.lists(segment, min_size=0, max_size=6))
def test_template_matches_iff_count_and_literals_agree(parts: list[str | None], path: list[str]) -> None:
    template = "/" + "/".join(p if p is not None else f"{{p{i}}}" for i, p in enumerate(parts))
    kind = "template" if None in parts else "exact"
    table = RouteTable([entry("GET", kind, template)])
    expected = len(path) == len(parts) and all(p is None or p == s for p, s in zip(parts, path, strict=False))
    assert (table.match("GET", "/" + "/".join(path)) is not None) == expected
    # and the template itself, with its placeholders filled in, always matches
    filled = "/" + "/".join(p if p is not None else "v" for p in parts)
    assert table.match("GET", filled) is not None
    assert table.match("POST", filled) is None


@given(st.lists(segment, min_size=2, max_size=5))
def test_exact_beats_template_beats_prefix_for_any_path(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    template = "/" + "/".join([*segments[:-1], "{last}"])
    prefix = "/" + segments[0]
    exact = entry("GET", "exact", path, "exact")
    templated = entry("GET", "template", template, "template")
    prefixed = entry("GET", "prefix", prefix, "prefix")
    for entries, winner in (
        ([prefixed, templated, exact], "exact"),
        ([prefixed, templated], "template"),
        ([prefixed], "prefix"),
    ):
        found = RouteTable(entries).match("GET", path)
        assert found is not None
        assert found.feature == winner
