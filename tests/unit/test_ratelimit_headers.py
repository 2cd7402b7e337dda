import http_sf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.extproc.ratelimit_headers import AdvertisedPolicy, ratelimit_headers, sf_string


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
