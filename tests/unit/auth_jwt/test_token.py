"""Parsing a bearer value into JWT parts: size first, strict base64url, JSON objects, a real algorithm."""

import base64
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.jwt_issuer import LocalIssuer, SigningKey
from tollway.auth.jwt.errors import DisallowedAlgorithm, MalformedToken, TokenError, TokenTooLarge
from tollway.auth.jwt.token import looks_like_jwt, parse_token

KEY = SigningKey.rsa("k1")
IDP = LocalIssuer([KEY])


def b64(data: object) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged(header: object, claims: object, signature: bytes = b"sig") -> str:
    return f"{b64(header)}.{b64(claims)}.{b64(signature)}"


def test_a_signed_token_parses_into_its_parts() -> None:
    token = IDP.token("acme")
    parsed = parse_token(token)
    assert (parsed.algorithm, parsed.kid) == ("RS256", "k1")
    assert parsed.claims["sub"] == "acme"
    assert parsed.signing_input == token.rsplit(".", 1)[0].encode()
    assert "acme" not in repr(parsed)


def test_api_keys_never_look_like_tokens() -> None:
    assert not looks_like_jwt("tw_live_" + "A" * 33)
    assert looks_like_jwt(IDP.token())


def test_an_oversized_token_is_refused_before_it_is_read() -> None:
    huge = "a" * (64 * 1024)  # not even a JWT: the size alone refuses it
    with pytest.raises(TokenTooLarge, match="8192 bytes"):
        parse_token(huge)
    with pytest.raises(TokenTooLarge):
        parse_token(IDP.token(padding="x" * 9000))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.b", MalformedToken),
        ("a.b.c.d", MalformedToken),
        ("a.b.c.d.e", MalformedToken),
        ("!!!.e30.c2ln", MalformedToken),  # not base64url
        ("eyJhbGciOiJSUzI1NiJ9=.e30.c2ln", MalformedToken),  # padding
        ("eyJhbGciOiJSUzI1NiJ9.e30.c2lnx", MalformedToken),  # 5 characters mod 4 == 1
        (f"{b64([1, 2])}.e30.c2ln", MalformedToken),  # header not an object
        (f"{b64({'alg': 'RS256'})}.{b64(b'not json')}.c2ln", MalformedToken),
        (forged({"alg": "RS256"}, {"a": 1}, b""), MalformedToken),  # no signature
        (forged({}, {"a": 1}), MalformedToken),  # no alg
        (forged({"alg": "RS256", "kid": 7}, {}), MalformedToken),
        (forged({"alg": "none"}, {"sub": "acme"}, b""), DisallowedAlgorithm),
        (forged({"alg": "NoNe"}, {"sub": "acme"}), DisallowedAlgorithm),
        (forged({"alg": "HS1"}, {"sub": "acme"}), DisallowedAlgorithm),
        (forged({"alg": "RS256", "crit": ["exp"]}, {}), TokenError),
    ],
)
def test_malformed_tokens_are_refused_with_a_reason(text: str, expected: type[TokenError]) -> None:
    with pytest.raises(expected) as caught:
        parse_token(text)
    assert text not in str(caught.value)


def test_duplicate_members_and_non_json_numbers_are_malformed() -> None:
    header = b64({"alg": "RS256"})
    duplicate = base64.urlsafe_b64encode(b'{"sub":"acme","sub":"admin"}').rstrip(b"=").decode()
    with pytest.raises(MalformedToken):
        parse_token(f"{header}.{duplicate}.c2ln")
    infinite = base64.urlsafe_b64encode(b'{"exp":Infinity}').rstrip(b"=").decode()
    with pytest.raises(MalformedToken):
        parse_token(f"{header}.{infinite}.c2ln")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_bearer_text_is_parsed_or_refused_with_a_token_error(text: str) -> None:
    with contextlib.suppress(TokenError):  # anything else (ValueError, UnicodeError …) fails the test
        parse_token(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z0-9_-]{0,40}", fullmatch=True), min_size=3, max_size=3))
def test_any_three_base64url_segments_are_parsed_or_refused(parts: list[str]) -> None:
    with contextlib.suppress(TokenError):
        parse_token(".".join(parts))
