import http_sf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.extproc.ratelimit_headers import AdvertisedPolicy, FieldShape, ratelimit_headers
from tollway.ratelimit import PolicyState
from tollway.structured_fields import sf_string


def test_fields_parse_as_structured_field_lists() -> None:
    policies = [
        AdvertisedPolicy("burst", 100, 1, 42, 1),
        AdvertisedPolicy("monthly", 100000, 2592000, 99958, 1728000),
        AdvertisedPolicy("egress", 10**9, 2592000, 5, 7, unit="response_bytes"),
    ]
    headers = dict(ratelimit_headers(policies))
    parsed_policy = http_sf.parse(headers["ratelimit-policy"].encode(), tltype="list")
    assert parsed_policy == [
        ("burst", {"q": 100, "w": 1}),
        ("monthly", {"q": 100000, "w": 2592000}),
        ("egress", {"q": 10**9, "w": 2592000, "qu": "content-bytes"}),
    ]
    parsed_state = http_sf.parse(headers["ratelimit"].encode(), tltype="list")
    assert parsed_state == [
        ("burst", {"r": 42, "t": 1}),
        ("monthly", {"r": 99958, "t": 1728000}),
        ("egress", {"r": 5, "t": 7}),
    ]


def test_negative_numbers_are_floored_at_zero() -> None:
    headers = dict(ratelimit_headers([AdvertisedPolicy("x", 1, 1, -3, -1)]))
    assert http_sf.parse(headers["ratelimit"].encode(), tltype="list") == [("x", {"r": 0, "t": 0})]


def test_no_policies_no_headers() -> None:
    assert ratelimit_headers([]) == ()


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30))
def test_any_printable_name_roundtrips(name: str) -> None:
    assert http_sf.parse(sf_string(name).encode(), tltype="item")[0] == name


def test_non_ascii_names_are_refused() -> None:
    with pytest.raises(ValueError, match="structured-field"):
        sf_string("café")


_policy_state = st.builds(
    PolicyState,
    name=st.sampled_from(["burst", "per-minute", "monthly", 'odd "name"\\x']),
    limit=st.integers(0, 10**12),
    window_s=st.integers(1, 10**8),
    remaining=st.integers(-(10**6), 10**12),
    reset_s=st.integers(-5, 10**8),
    exceeded=st.booleans(),
    used=st.integers(0, 10**12),
    reset_ms=st.integers(0, 10**11),
)


@given(
    st.lists(st.tuples(_policy_state, st.booleans(), st.sampled_from(["requests", "response_bytes"])), max_size=4),
    st.lists(st.tuples(st.integers(-(10**6), 10**12), st.integers(-5, 10**8)), min_size=4, max_size=4),
)
def test_field_shape_gives_what_ratelimit_headers_gives(
    policies: list[tuple[PolicyState, bool, str]], later: list[tuple[int, int]]
) -> None:
    """The shape is built from one verdict of a check and reused for the next ones: for any later states
    of the same policies it formats exactly the fields built from scratch."""
    shown = [
        (i, AdvertisedPolicy(s.name, s.limit, s.window_s, s.remaining, s.reset_s, unit))
        for i, (s, shadow, unit) in enumerate(policies)
        if not shadow
    ]
    shape = FieldShape(shown)
    states = [s._replace(remaining=r, reset_s=t) for (s, _, _), (r, t) in zip(policies, later, strict=False)]
    expected = ratelimit_headers(
        [p._replace(remaining=states[i].remaining, reset_s=states[i].reset_s) for i, p in shown]
    )
    assert shape.fields(states) == expected
