"""An admitted request reaches the upstream without any credential (issue 13 item 3): every configured
credential header is removed, whichever one carried the winning key and whatever the others hold, and
the configured query parameter too (gRPC; Envoy's HTTP ext_authz cannot rewrite the query)."""

import asyncio
from collections.abc import Mapping

from envoy.service.auth.v3 import external_auth_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.auth.authenticator import Authenticator
from tollway.auth.cache import KeyCache
from tollway.auth.credentials import CredentialSource
from tollway.auth.digest import KeyDigester
from tollway.auth.keyring import Keyring
from tollway.clock import ManualClock
from tollway.extproc.check import Allow, CheckRequest, Decision
from tollway.extproc.decision import DecisionCore
from tollway.extproc.grpc_server import serialize_verdict
from tollway.extproc.http_server import render_response
from tollway.extproc.problems import Refusals

from .fakes import MemoryKeyStore

DIGESTER = KeyDigester(b"s" * 32)
HEADERS = ("authorization", "x-api-key", "x-other-key")


class Setup:
    def __init__(self, source: CredentialSource, forward: bool = False) -> None:
        self.clock = ManualClock()
        self.store = MemoryKeyStore()
        auth = Authenticator(self.store, DIGESTER, KeyCache(self.clock.monotonic), self.clock, source)
        self.core = DecisionCore(auth, Refusals(), forward_credential=forward)
        self.keys = Keyring(self.store, DIGESTER, self.clock)

    async def key(self, customer: str = "acme") -> str:
        return (await self.keys.create(customer)).secret

    async def decide(self, headers: Mapping[str, str], path: str = "/v1/items") -> Decision:
        return await self.core.decide(CheckRequest("GET", path, headers, "r-1"))


def admitted(decision: Decision) -> Allow:
    assert isinstance(decision, Allow), decision
    return decision


def test_a_second_credential_header_is_removed_too() -> None:
    async def scenario() -> None:
        setup = Setup(CredentialSource())
        winner, other = await setup.key("acme"), await setup.key("mallory")
        for headers in (
            {"authorization": f"Bearer {winner}", "x-api-key": other},  # the reported case
            {"authorization": f"Basic {other}", "x-api-key": winner},  # another scheme: not ours, still stripped
            {"x-api-key": winner},
        ):
            allow = admitted(await setup.decide(headers))
            assert dict(allow.upstream_headers)["x-tollway-customer-id"] == "acme"
            assert {"authorization", "x-api-key"} <= set(allow.remove_headers)
            http = render_response(allow, keep_alive=True, head=False).decode()
            assert "x-envoy-auth-headers-to-remove: authorization,x-api-key\r\n" in http
            grpc = external_auth_pb2.CheckResponse.FromString(serialize_verdict(allow))
            assert {"authorization", "x-api-key"} <= set(grpc.ok_response.headers_to_remove)

    asyncio.run(scenario())


def test_the_query_credential_is_removed_over_grpc() -> None:
    async def scenario() -> None:
        setup = Setup(CredentialSource(query_param="api_key"))
        key, other = await setup.key(), await setup.key("mallory")
        for path, headers in ((f"/v1/items?api_key={key}&page=2", {}), ("/v1/items?api_key=x", {"x-api-key": key})):
            allow = admitted(await setup.decide({**headers, "x-other": other}, path))
            assert allow.remove_query_params == ("api_key",)
            grpc = external_auth_pb2.CheckResponse.FromString(serialize_verdict(allow))
            assert list(grpc.ok_response.query_parameters_to_remove) == ["api_key"]
            assert {"authorization", "x-api-key"} <= set(grpc.ok_response.headers_to_remove)
        assert admitted(await setup.decide({"x-api-key": key}, "/v1/items")).remove_query_params == ()

    asyncio.run(scenario())


def test_forward_credential_keeps_them_all() -> None:
    async def scenario() -> None:
        setup = Setup(CredentialSource(query_param="api_key"), forward=True)
        key = await setup.key()
        allow = admitted(await setup.decide({"authorization": f"Bearer {key}", "x-api-key": "x"}, "/v?api_key=y"))
        assert allow.remove_headers == ()
        assert allow.remove_query_params == ()

    asyncio.run(scenario())


@settings(max_examples=60, deadline=None)
@given(
    configured=st.lists(st.sampled_from(HEADERS), min_size=1, unique=True),
    others=st.dictionaries(st.sampled_from(HEADERS), st.sampled_from(["", "x", "Basic abc", "Bearer tw_live_x"])),
)
def test_whichever_header_wins_every_configured_one_is_removed(configured: list[str], others: dict[str, str]) -> None:
    async def scenario() -> None:
        setup = Setup(CredentialSource(headers=tuple(configured)))
        key = await setup.key()
        first = configured[0]  # the first configured header holding a credential wins: the key goes there
        headers = {**others, first: f"Bearer {key}" if first == "authorization" else key}
        allow = admitted(await setup.decide(headers))
        assert set(configured) <= set(allow.remove_headers)

    asyncio.run(scenario())
