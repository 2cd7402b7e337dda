"""Webhook endpoints, pure: URL validation against SSRF (properties over hosts, addresses and arbitrary
text), event-type filters, the connect-time address check, Standard Webhooks secrets (checked with the
maintained ``standardwebhooks`` library) and their sealing, and the endpoint record."""

import asyncio
import ipaddress
import string
import time
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from tollway.notifications.endpoints import (
    MAX_FILTERS,
    MAX_OVERLAP,
    MAX_URL_CHARS,
    Endpoint,
    EndpointError,
    SealedSecret,
    SecretBox,
    SecretUnreadable,
    UnsafeAddress,
    UrlPolicy,
    check_resolved,
    new_endpoint_id,
    new_secret,
    refusal,
    resolve_and_check,
    signature_header,
    validate_description,
    validate_event_types,
    validate_overlap,
    validate_url,
)
from tollway.notifications.events import EVENT_TYPES

DEV = UrlPolicy(allow_http=True, allow_private=True)
PEPPER = b"p" * 32
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)

REFUSED_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "192.88.99.0/24",
]
REFUSED_V6 = [
    "::1/128",
    "::/128",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
    "2001:db8::/32",
    "3fff::/20",
    "::ffff:10.0.0.0/104",
    "2002:c0a8::/32",
]

label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=20)
public_name = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(label, min_size=1, max_size=4),
    st.sampled_from(["com", "net", "io", "example", "dev"]),
).filter(lambda name: "localhost" not in name.split("."))
path = st.text(string.ascii_letters + string.digits + "/-._~%?=&", max_size=60).map(lambda p: "/" + p)
port = st.one_of(st.just(""), st.integers(1, 65535).map(lambda n: f":{n}"))


def _v4_in(network: str) -> st.SearchStrategy[ipaddress.IPv4Address]:
    return st.ip_addresses(v=4, network=network)  # type: ignore[return-value]


# --- URLs -------------------------------------------------------------------------------------------


@given(public_name, port, path)
def test_a_public_https_url_is_accepted_and_http_only_in_development(host: str, p: str, rest: str) -> None:
    url = f"https://{host}{p}{rest}"
    assert validate_url(url) == url
    plain = f"http://{host}{p}{rest}"
    with pytest.raises(EndpointError, match="https"):
        validate_url(plain)
    assert validate_url(plain, UrlPolicy(allow_http=True)) == plain


@given(st.sampled_from(REFUSED_V4).flatmap(_v4_in), port)
def test_a_private_or_special_ipv4_host_is_refused_unless_allowed(address: ipaddress.IPv4Address, p: str) -> None:
    url = f"https://{address}{p}/hook"
    with pytest.raises(UnsafeAddress, match="TOLLWAY_WEBHOOKS_ALLOW_PRIVATE"):
        validate_url(url)
    assert validate_url(url, UrlPolicy(allow_private=True)) == url


@given(st.sampled_from(REFUSED_V6).flatmap(lambda n: st.ip_addresses(v=6, network=n)))
def test_a_private_or_special_ipv6_host_is_refused_unless_allowed(address: ipaddress.IPv6Address) -> None:
    url = f"https://[{address}]/hook"
    with pytest.raises(UnsafeAddress):
        validate_url(url)
    assert validate_url(url, UrlPolicy(allow_private=True)) == url


@given(st.ip_addresses().filter(lambda a: refusal(a) is None))
def test_a_globally_routable_address_is_accepted(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    assert validate_url(f"https://{host}/x") == f"https://{host}/x"


@given(st.text(max_size=300) | st.builds(lambda s: "https://" + s, st.text(max_size=300)))
def test_any_text_is_accepted_or_refused_with_an_endpoint_error(text: str) -> None:
    try:
        url = validate_url(text, DEV)
    except EndpointError as exc:
        refused: EndpointError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.field == "url"
        assert str(refused)
        return
    assert url.startswith(("https://", "http://"))
    assert "@" not in url.split("/")[2]
    assert "#" not in url
    assert len(url) <= MAX_URL_CHARS
    assert url.isascii()
    assert not any(c.isspace() for c in url)


@given(public_name, path, st.text(string.ascii_letters + string.digits + ":._-", max_size=20))
def test_user_info_and_fragments_are_refused_wherever_they_appear(host: str, rest: str, extra: str) -> None:
    with pytest.raises(EndpointError, match="user name"):
        validate_url(f"https://{extra}@{host}{rest}", DEV)
    with pytest.raises(EndpointError, match="fragment"):
        validate_url(f"https://{host}{rest}#{extra}", DEV)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        ("example.com/hook", "absolute"),
        ("/hook", "absolute"),
        ("https:/example.com", "absolute"),
        ("ftp://example.com/", "absolute"),
        ("javascript:alert(1)", "absolute"),
        ("https://user:pw@example.com/", "user name"),
        ("https://user@example.com/", "user name"),
        ("https://example.com/hook#frag", "fragment"),
        ("https://example.com/" + "a" * MAX_URL_CHARS, "characters"),
        ("https://exa mple.com/", "ASCII"),
        ("https://bücher.example/", "ASCII"),
        ("https://example.com\\@evil.com/", "backslash"),
        ("https://example.com:0/", "port"),
        ("https://example.com:70000/", "port"),
        ("https://example.com:http/", "port"),
        ("https:///hook", "host"),
        ("https://-bad-.example/", "host name"),
        ("https://a..b/", "host name"),
        ("https://127.1/", "a.b.c.d"),
        ("https://2130706433/", "a.b.c.d"),
        ("https://0x7f.0.0.1/", "a.b.c.d"),
        ("https://017700000001/", "a.b.c.d"),
        ("https://[::1/", "malformed"),
        ("https://[example.com]/", "malformed|brackets"),
        ("https://::1/", "bracket|port|host"),
    ],
)
def test_malformed_urls_are_refused_with_a_reason(url: str, says: str) -> None:
    with pytest.raises(EndpointError, match=says):
        validate_url(url, DEV)


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost/",
        "https://LOCALHOST:8443/x",
        "https://localhost./",
        "https://api.localhost/",
        "https://169.254.169.254/latest/meta-data/",  # the cloud metadata address
        "https://[::ffff:127.0.0.1]/",
        "https://[fe80::1%25eth0]/",
        "https://0.0.0.0/",
        "https://[::]/",
    ],
)
def test_loopback_names_and_metadata_addresses_are_refused(url: str) -> None:
    with pytest.raises(UnsafeAddress):
        validate_url(url)
    validate_url(url, UrlPolicy(allow_private=True))


# --- filters, descriptions, overlaps -------------------------------------------------------------------


@given(st.lists(st.sampled_from(EVENT_TYPES), max_size=MAX_FILTERS))
def test_a_filter_of_known_types_is_kept_once_each_in_catalogue_order(types: list[str]) -> None:
    kept = validate_event_types(types)
    assert set(kept) == set(types)
    assert list(kept) == [t for t in EVENT_TYPES if t in types]


@given(st.lists(st.sampled_from(EVENT_TYPES), max_size=5), st.text(max_size=80).filter(lambda t: t not in EVENT_TYPES))
def test_an_unknown_type_is_refused_naming_it(types: list[str], unknown: str) -> None:
    with pytest.raises(EndpointError) as caught:
        validate_event_types([*types, unknown])
    assert caught.value.field == "event_types"


def test_oversized_filters_are_refused() -> None:
    with pytest.raises(EndpointError, match="at most"):
        validate_event_types([*list(EVENT_TYPES), "key.created"])
    with pytest.raises(EndpointError, match="at most 64 characters"):
        validate_event_types(["x" * 10_000])
    with pytest.raises(EndpointError, match="list"):
        validate_event_types("key.created")
    assert validate_event_types([]) == ()


def test_descriptions_and_overlaps_are_bounded() -> None:
    assert validate_description("billing CRM\tprod") == "billing CRM\tprod"
    for bad in ("x" * 501, "line\nbreak", "nul\x00"):
        with pytest.raises(EndpointError):
            validate_description(bad)
    assert validate_overlap(MAX_OVERLAP) == MAX_OVERLAP
    for bad_overlap in (MAX_OVERLAP + timedelta(seconds=1), timedelta(seconds=-1)):
        with pytest.raises(EndpointError):
            validate_overlap(bad_overlap)


# --- connect-time checks -------------------------------------------------------------------------------


def test_check_resolved_refuses_a_name_with_any_private_address() -> None:
    assert [str(a) for a in check_resolved(["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])] == [
        "93.184.215.14",
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    ]
    assert check_resolved(["64:ff9b::808:808"])  # NAT64 of 8.8.8.8: judged as the address it carries
    embedding_private = [["64:ff9b::a00:1"], ["2002:a00:1::1"], ["::ffff:192.168.1.1"], ["192.0.0.8"]]
    for addresses in (["93.184.215.14", "10.1.2.3"], ["::1"], ["100.100.1.1"], [], *embedding_private):
        with pytest.raises(UnsafeAddress):
            check_resolved(addresses)
    assert len(check_resolved(["127.0.0.1", "10.0.0.1"], allow_private=True)) == 2
    with pytest.raises(UnsafeAddress, match="not an IP address"):
        check_resolved(["example.com"], allow_private=True)


@given(st.lists(st.ip_addresses(), min_size=1, max_size=5))
def test_check_resolved_accepts_exactly_lists_of_public_addresses(addresses: list[ipaddress.IPv4Address]) -> None:
    public = all(refusal(a) is None for a in addresses)
    try:
        check_resolved([str(a) for a in addresses])
        accepted = True
    except UnsafeAddress:
        accepted = False
    assert accepted == public


def test_resolve_and_check_refuses_what_localhost_resolves_to() -> None:
    with pytest.raises(UnsafeAddress, match="loopback"):
        asyncio.run(resolve_and_check("localhost", 443, allow_private=False))
    addresses = asyncio.run(resolve_and_check("localhost", 443, allow_private=True))
    assert addresses
    assert all(a.is_loopback for a in addresses)
    assert [str(a) for a in asyncio.run(resolve_and_check("8.8.8.8", 443, allow_private=False))] == ["8.8.8.8"]
    with pytest.raises(UnsafeAddress):
        asyncio.run(resolve_and_check("127.0.0.2", 443, allow_private=False))
    with pytest.raises(EndpointError, match="cannot resolve") as caught:  # no DNS query: the name is invalid
        asyncio.run(resolve_and_check("a" * 64 + ".example", 443, allow_private=False))
    assert not isinstance(caught.value, UnsafeAddress)


# --- secrets ------------------------------------------------------------------------------------------


def test_a_new_secret_is_a_standard_webhooks_secret_that_signs_and_verifies() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(secret) == 6 + 32
    assert secret != new_secret()
    body = b'{"type":"key.created","timestamp":"2026-12-07T10:00:00.000Z","data":{"customer_id":"acme"}}'
    stamp = int(time.time())
    headers = {
        "webhook-id": "evt_0123456789abcdef0123456789abcdef",
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature_header([secret], "evt_0123456789abcdef0123456789abcdef", stamp, body),
    }
    assert standardwebhooks.Webhook(secret).verify(body, headers)["type"] == "key.created"
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(new_secret()).verify(body, headers)


def test_during_the_overlap_both_secrets_sign_and_either_verifies() -> None:
    old, new = new_secret(), new_secret()
    body, stamp = b'{"a":1}', int(time.time())
    header = signature_header([new, old], "msg_1", stamp, body)
    assert header.count("v1,") == 2
    assert " " in header
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": header}
    for secret in (old, new):
        assert standardwebhooks.Webhook(secret).verify(body, headers) == {"a": 1}


def test_the_secret_box_seals_per_endpoint_and_pepper() -> None:
    box = SecretBox(PEPPER)
    secret, endpoint_id = new_secret(), new_endpoint_id()
    sealed = box.seal(secret, endpoint_id)
    assert secret not in sealed
    assert secret.removeprefix("whsec_") not in sealed
    assert sealed != box.seal(secret, endpoint_id)  # a fresh nonce each time
    assert box.open(sealed, endpoint_id) == secret
    with pytest.raises(SecretUnreadable):
        box.open(sealed, new_endpoint_id())  # moved to another endpoint
    with pytest.raises(SecretUnreadable, match="another pepper"):
        SecretBox(b"q" * 32).open(sealed, endpoint_id)
    with pytest.raises(SecretUnreadable):
        box.open(sealed[:-4] + "AAAA", endpoint_id)
    with pytest.raises(SecretUnreadable):
        box.open("garbage", endpoint_id)
    assert "p" * 8 not in repr(box)


# --- the record ------------------------------------------------------------------------------------------


def _endpoint(box: SecretBox, secret: str, **changes: object) -> Endpoint:
    endpoint_id = new_endpoint_id()
    base = Endpoint(
        id=endpoint_id,
        url="https://hooks.example.com/tollway",
        description="crm",
        event_types=("quota.threshold_crossed", "balance.low"),
        enabled=True,
        created_at=NOW,
        updated_at=NOW,
        secret=SealedSecret(box.seal(secret, endpoint_id), NOW),
    )
    return Endpoint(**{**{f: getattr(base, f) for f in Endpoint.__slots__}, **changes})  # type: ignore[arg-type]


def test_the_record_round_trips_and_its_view_holds_no_secret() -> None:
    box, secret = SecretBox(PEPPER), new_secret()
    endpoint = _endpoint(box, secret, failing_since=NOW, disabled_reason=None)
    assert Endpoint.from_fields(endpoint.to_fields()) == endpoint
    view = endpoint.view(NOW)
    assert view["state"] == "failing"
    assert view["event_types"] == ["quota.threshold_crossed", "balance.low"]
    assert secret not in str(view)
    assert endpoint.secret.sealed not in str(view)
    assert endpoint.accepts("balance.low")
    assert not endpoint.accepts("key.created")
    assert _endpoint(box, secret, event_types=()).accepts("key.created")
    with pytest.raises(ValueError, match="not an endpoint record"):
        Endpoint.from_fields({"id": "ep_x"})


def test_a_rotation_signs_with_both_secrets_until_the_overlap_ends() -> None:
    box, old, new = SecretBox(PEPPER), new_secret(), new_secret()
    endpoint = _endpoint(box, old)
    assert endpoint.signing_secrets(box, NOW) == [old]
    later = NOW + timedelta(hours=1)
    rotated = endpoint.rotated(box.seal(new, endpoint.id), later, timedelta(hours=24))
    assert rotated.signing_secrets(box, later) == [new, old]
    assert rotated.signing_secrets(box, later + timedelta(hours=23, minutes=59)) == [new, old]
    assert rotated.signing_secrets(box, later + timedelta(hours=24)) == [new]
    assert rotated.view(later)["previous_secret_expires_at"] == "2026-12-08T11:00:00.000Z"
    assert rotated.view(later + timedelta(days=1))["previous_secret_expires_at"] is None
    assert Endpoint.from_fields(rotated.to_fields()) == rotated
    assert (
        rotated.rotated(box.seal(new_secret(), endpoint.id), later, timedelta(0)).signing_secrets(box, later)[1:] == []
    )
    with pytest.raises(EndpointError):
        endpoint.rotated(box.seal(new, endpoint.id), later, timedelta(days=8))


def test_after_a_pepper_change_the_current_secret_is_unreadable_until_rotated() -> None:
    old_box, new_box, secret = SecretBox(PEPPER), SecretBox(b"q" * 32), new_secret()
    endpoint = _endpoint(old_box, secret)
    with pytest.raises(SecretUnreadable):
        endpoint.signing_secrets(new_box, NOW)
    fresh = new_secret()
    rotated = endpoint.rotated(new_box.seal(fresh, endpoint.id), NOW, timedelta(hours=24))
    assert rotated.signing_secrets(new_box, NOW) == [fresh]  # the old-pepper secret cannot sign: left out
