import contextlib
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.auth import apikey
from tollway.auth.errors import MalformedKey

SCANNER_PATTERN = r"tw_(live|test)_[0-9A-Za-z]{33}"


def test_generated_key_has_prefix_length_and_checksum() -> None:
    key = apikey.generate("live")
    assert key.text.startswith("tw_live_")
    assert len(key.text) == len("tw_live_") + 33
    assert apikey.parse(key.text) == key


def test_secret_carries_at_least_128_bits() -> None:
    assert apikey.SECRET_BYTES * 8 >= 128
    assert 62**apikey.SECRET_CHARS >= 2 ** (apikey.SECRET_BYTES * 8)


def test_keys_match_the_documented_scanner_pattern() -> None:
    import re

    for env in apikey.ENVIRONMENTS:
        assert re.fullmatch(SCANNER_PATTERN, apikey.generate(env).text)


def test_unknown_environment_is_refused() -> None:
    with pytest.raises(ValueError, match="environment"):
        apikey.generate("prod")


def test_repr_never_shows_the_secret() -> None:
    key = apikey.generate("test")
    assert key.text not in repr(key)


@pytest.mark.parametrize(
    "text",
    ["", "tw_live_", "tw_prod_" + "a" * 33, "xx_live_" + "a" * 33, "tw_live_" + "!" * 33, "tw_live_abc", "a" * 10_000],
)
def test_malformed_keys_are_refused(text: str) -> None:
    with pytest.raises(MalformedKey):
        apikey.parse(text)


@given(st.binary(min_size=20, max_size=20), st.sampled_from(apikey.ENVIRONMENTS))
def test_roundtrip(seed: bytes, env: str) -> None:
    key = apikey.generate(env, random_bytes=lambda n: seed[:n])
    assert apikey.parse(key.text).text == key.text


@given(
    st.binary(min_size=20, max_size=20),
    st.integers(min_value=8, max_value=40),
    st.sampled_from(string.ascii_letters + string.digits),
)
def test_any_single_character_typo_fails_the_checksum(seed: bytes, position: int, replacement: str) -> None:
    key = apikey.generate("live", random_bytes=lambda n: seed[:n]).text
    if key[position] == replacement:
        return
    typo = key[:position] + replacement + key[position + 1 :]
    with pytest.raises(MalformedKey):
        apikey.parse(typo)


@given(st.binary(min_size=20, max_size=20), st.integers(min_value=8, max_value=39))
def test_adjacent_transpositions_fail_the_checksum(seed: bytes, position: int) -> None:
    key = apikey.generate("live", random_bytes=lambda n: seed[:n]).text
    swapped = key[:position] + key[position + 1] + key[position] + key[position + 2 :]
    if swapped == key:
        return
    with pytest.raises(MalformedKey):
        apikey.parse(swapped)


@given(st.text(max_size=60))
def test_parse_never_crashes_on_arbitrary_text(text: str) -> None:
    with contextlib.suppress(MalformedKey):
        apikey.parse(text)
