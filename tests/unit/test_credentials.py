import pytest

from tollway.auth.credentials import CredentialSource
from tollway.auth.errors import MalformedKey, MissingCredential

SOURCE = CredentialSource()


def test_bearer_token_is_read() -> None:
    assert SOURCE.extract({"authorization": "Bearer tw_live_abc"}).text == "tw_live_abc"
    assert SOURCE.extract({"authorization": "bearer   tw_live_abc  "}).text == "tw_live_abc"


def test_x_api_key_is_read() -> None:
    assert SOURCE.extract({"x-api-key": "tw_live_abc"}).text == "tw_live_abc"


def test_other_authorization_schemes_fall_through() -> None:
    with pytest.raises(MissingCredential):
        SOURCE.extract({"authorization": "Basic dXNlcjpwYXNz"})
    assert SOURCE.extract({"authorization": "Basic x", "x-api-key": "k"}).text == "k"


@pytest.mark.parametrize("headers", [{"authorization": "Bearer "}, {"authorization": "Bearer"}, {"x-api-key": " "}])
def test_empty_key_is_malformed(headers: dict[str, str]) -> None:
    with pytest.raises(MalformedKey):
        SOURCE.extract(headers)


def test_query_string_is_ignored_unless_configured() -> None:
    with pytest.raises(MissingCredential):
        SOURCE.extract({}, "/v1/items?api_key=tw_live_abc")
    configured = CredentialSource(query_param="api_key")
    assert configured.extract({}, "/v1/items?api_key=tw_live_abc").text == "tw_live_abc"
    with pytest.raises(MalformedKey):
        configured.extract({}, "/v1/items?api_key=")


def test_configured_headers_only() -> None:
    source = CredentialSource(headers=("x-custom-key",))
    assert source.extract({"x-custom-key": "k"}).text == "k"
    with pytest.raises(MissingCredential):
        source.extract({"authorization": "Bearer k"})
