"""Webhook endpoints: the model, URL validation against SSRF, event-type filters and signing secrets (pure,
but for ``resolve_and_check``, which asks the resolver).

An endpoint is a URL the dispatcher POSTs events to, with an optional filter of event types (empty: all
of them), an enabled flag and the dispatcher's view of its health (``failing_since``, ``disabled_at`` and
``disabled_reason``). Its id is ``ep_`` and 24 hex digits (96 random bits).

**URLs** (``validate_url``): an absolute ``https`` URL (``http`` only with ``TOLLWAY_WEBHOOKS_ALLOW_HTTP``),
no user name or password, no fragment, ASCII only (an internationalized host in its ``xn--`` form), at most
``MAX_URL_CHARS`` characters. A host that is ``localhost`` (or ``*.localhost``) or a literal IP address in
a range that is not globally routable — loopback, link-local, private, unique-local, unspecified,
multicast, reserved, shared address space (CGNAT, 100.64/10), documentation — is refused unless
``TOLLWAY_WEBHOOKS_ALLOW_PRIVATE``; so is an IPv4 address not written as four decimals (``127.1``,
``0x7f.0.0.1``, ``2130706433``: resolvers read them as addresses). A host *name* cannot be judged when the
endpoint is registered — its DNS answer may change (DNS rebinding) — so the dispatcher checks the
addresses it resolves to at every connection (``resolve_and_check``) and connects to those addresses.

**Secrets** (Standard Webhooks): ``whsec_`` and the base64 of 24 random bytes, the HMAC-SHA256 key of the
``webhook-signature`` header. Shown once (on create and on rotate), stored only encrypted
(``SecretBox``: AES-256-GCM under a key derived with HKDF-SHA256 from the pepper, the endpoint id as
associated data), never logged. A rotation keeps the previous secret for an overlap (default 24 h, at
most 7 days) during which both sign: the header then carries two ``v1,`` signatures separated by a space,
and a receiver holding either secret verifies (``signature_header``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tollway.notifications.events import EVENT_TYPES

ID_PREFIX: Final = "ep_"
ID_PATTERN: Final = re.compile(r"^ep_[0-9a-f]{24}$")
MAX_URL_CHARS: Final = 2048
MAX_DESCRIPTION_CHARS: Final = 500
MAX_EVENT_TYPE_CHARS: Final = 64
MAX_FILTERS: Final = len(EVENT_TYPES)
"""A filter names each type at most once: more entries than there are types is refused."""
MAX_REASON_CHARS: Final = 500
DEFAULT_OVERLAP: Final = timedelta(hours=24)
MAX_OVERLAP: Final = timedelta(days=7)
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (a prefix, not a secret)
SECRET_BYTES: Final = 24
SECRET_PATTERN: Final = re.compile(r"^whsec_[A-Za-z0-9+/]{32}$")
_HKDF_INFO: Final = b"tollway webhook endpoint secret v1"
_SEALED_PREFIX: Final = "v1."
_LABEL: Final = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_LABEL: Final = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_CGNAT: Final = ipaddress.ip_network("100.64.0.0/10")
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
# Not left to the Python version's tables (they changed in 3.11.10 / 3.12.4): IETF protocol assignments,
# benchmarking, "this network", the 6to4 relay anycast, IPv6 site-local and the IPv6 documentation range.
_SPECIAL: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.0.0/24", "198.18.0.0/15", "0.0.0.0/8", "192.88.99.0/24", "fec0::/10", "3fff::/20")
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EndpointError(ValueError):
    """Bad endpoint input; ``field`` names what was wrong (``url``, ``event_types``, ``description``...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnsafeAddress(EndpointError):
    """A host or resolved address the dispatcher must not connect to (SSRF)."""

    def __init__(self, message: str) -> None:
        super().__init__("url", message)


class SecretUnreadable(ValueError):
    """A stored secret that does not decrypt: sealed under another pepper, or altered."""


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """What the development settings allow: ``http`` URLs, private and loopback addresses."""

    allow_http: bool = False
    allow_private: bool = False


STRICT: Final = UrlPolicy()
"""Production: https only, public addresses only."""


# --- URLs and addresses -----------------------------------------------------------------------------


def refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not one to send webhooks to (``"loopback"``, ``"private"``...), None if it is
    globally routable. An IPv6 address carrying an IPv4 address (IPv4-mapped, 6to4, NAT64 ``64:ff9b::/96``)
    is judged as the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            address = embedded
    checks = (
        ("unspecified", address.is_unspecified),
        ("special-purpose", any(address in network for network in _SPECIAL)),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("shared (CGNAT)", isinstance(address, ipaddress.IPv4Address) and address in _CGNAT),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    for name, hit in checks:
        if hit:
            return name
    return None


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def validate_url(url: str, policy: UrlPolicy = STRICT) -> str:
    """``url`` if it is one webhooks may be sent to under ``policy``; else ``EndpointError`` (field ``url``)
    saying what is wrong. Only literal addresses are judged here; names are checked at connect time."""
    if not isinstance(url, str) or not url:
        raise EndpointError("url", "the URL is empty")
    if len(url) > MAX_URL_CHARS:
        raise EndpointError("url", f"the URL has {len(url)} characters; at most {MAX_URL_CHARS}")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise EndpointError(
            "url", "the URL may hold only printable ASCII without spaces (percent-encode; hosts in xn-- form)"
        )
    if "\\" in url:
        raise EndpointError("url", "the URL may not contain a backslash")
    if "#" in url:
        raise EndpointError("url", "the URL may not have a fragment (#...)")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise EndpointError("url", "the URL is malformed (unbalanced brackets around the host?)") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not url[len(scheme) :].startswith("://"):
        raise EndpointError("url", "the URL must be absolute and start with https://")
    if scheme == "http" and not policy.allow_http:
        raise EndpointError(
            "url", "the URL must use https (http only with TOLLWAY_WEBHOOKS_ALLOW_HTTP, for development)"
        )
    if "@" in parts.netloc:
        raise EndpointError("url", "the URL may not carry a user name or password")
    try:
        port = parts.port
    except ValueError:
        raise EndpointError("url", "the URL's port is not a number from 1 to 65535") from None
    if port == 0:
        raise EndpointError("url", "the URL's port is not a number from 1 to 65535")
    host = (parts.hostname or "").lower()
    if not host:
        raise EndpointError("url", "the URL has no host")
    address = _literal_address(host)
    if parts.netloc.startswith("[") != isinstance(address, ipaddress.IPv6Address):
        raise EndpointError(
            "url", f"the URL's host {host!r} is not valid: an IPv6 address goes in brackets, nothing else"
        )
    if address is None:
        _check_host_name(host, policy)
    elif not policy.allow_private and (why := refusal(address)) is not None:
        raise UnsafeAddress(
            f"the URL's host {host} is a {why} address; only public addresses are allowed "
            "(TOLLWAY_WEBHOOKS_ALLOW_PRIVATE allows others, for development)"
        )
    return url


def _check_host_name(host: str, policy: UrlPolicy) -> None:
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise EndpointError("url", f"the URL's host {host!r} is not a valid host name")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        # Not a name (no top-level domain is numeric): an address in a form resolvers accept.
        raise EndpointError(
            "url", f"the URL's host {host!r} is not a valid host name; write an IPv4 address as a.b.c.d"
        )
    if not policy.allow_private and (name == "localhost" or name.endswith(".localhost")):
        raise UnsafeAddress(
            f"the URL's host {host} is loopback; only public addresses are allowed "
            "(TOLLWAY_WEBHOOKS_ALLOW_PRIVATE allows others, for development)"
        )


def check_resolved(addresses: Iterable[str | IPAddress], *, allow_private: bool = False) -> list[IPAddress]:
    """The addresses a host name resolved to, parsed, if the dispatcher may connect to **every one** of them;
    else ``UnsafeAddress`` naming the first that is refused (a name with one private address among public
    ones is refused: the connection could land on any). ``allow_private`` (``TOLLWAY_WEBHOOKS_ALLOW_PRIVATE``)
    accepts every address. An empty answer is refused too: there is nothing safe to connect to."""
    parsed: list[IPAddress] = []
    for raw in addresses:
        address = raw if isinstance(raw, ipaddress.IPv4Address | ipaddress.IPv6Address) else _literal_address(raw)
        if address is None:
            raise UnsafeAddress(f"{raw!r} is not an IP address")
        if not allow_private and (why := refusal(address)) is not None:
            raise UnsafeAddress(f"the host resolves to {address}, a {why} address; not sent")
        parsed.append(address)
    if not parsed:
        raise UnsafeAddress("the host resolves to no address")
    return parsed


async def resolve_and_check(host: str, port: int, allow_private: bool) -> list[IPAddress]:
    """Resolve ``host`` (``getaddrinfo``, in the event loop's executor) and check every address with
    ``check_resolved``: call it at **every connection** to an endpoint and connect to one of the returned
    addresses — never resolve the name a second time — so a DNS answer that changes after the endpoint
    was registered, or between the check and the connection (DNS rebinding), cannot reach a private
    address. (Send the URL's host name in the ``Host`` header and TLS SNI, and verify the certificate
    against it.) Raises ``UnsafeAddress`` for a refused address, ``EndpointError`` (field ``url``) when
    the name does not resolve."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise EndpointError("url", f"cannot resolve {host!r}: {exc}") from None
    found: list[str] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        text = str(sockaddr[0])
        if text not in found:
            found.append(text)
    return check_resolved(found, allow_private=allow_private)


# --- filters and descriptions -------------------------------------------------------------------------


def validate_event_types(types: Sequence[str]) -> tuple[str, ...]:
    """An event-type filter: each a type of ``EVENT_TYPES`` (an empty filter: every type), at most
    ``MAX_FILTERS`` entries; duplicates collapse. Returned in catalogue order."""
    if isinstance(types, str) or not isinstance(types, Sequence):
        raise EndpointError("event_types", "event_types is a list of event types")
    if len(types) > MAX_FILTERS:
        raise EndpointError("event_types", f"event_types has {len(types)} entries; at most {MAX_FILTERS}")
    for value in types:
        if not isinstance(value, str):
            raise EndpointError("event_types", "event_types is a list of event types (strings)")
        if len(value) > MAX_EVENT_TYPE_CHARS:
            raise EndpointError("event_types", f"an event type has at most {MAX_EVENT_TYPE_CHARS} characters")
        if value not in EVENT_TYPES:
            raise EndpointError("event_types", f"unknown event type {value!r}; known types: {', '.join(EVENT_TYPES)}")
    chosen = set(types)
    return tuple(t for t in EVENT_TYPES if t in chosen)


def validate_description(text: str) -> str:
    if not isinstance(text, str):
        raise EndpointError("description", "the description is text")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise EndpointError("description", f"the description has at most {MAX_DESCRIPTION_CHARS} characters")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in text):
        raise EndpointError("description", "the description may not contain control characters")
    return text


def validate_overlap(overlap: timedelta) -> timedelta:
    if not timedelta(0) <= overlap <= MAX_OVERLAP:
        raise EndpointError("overlap", "the overlap is from 0 to 7 days")
    return overlap


def new_endpoint_id() -> str:
    return ID_PREFIX + secrets.token_hex(12)


def is_endpoint_id(value: str) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


# --- secrets ----------------------------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for."""
    if not SECRET_PATTERN.fullmatch(secret):
        raise ValueError("not a whsec_ secret")
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: ``v1,`` + base64(HMAC-SHA256(key, ``id.timestamp.body``))."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()


def signature_header(secrets_: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header: one signature per live secret, separated by spaces."""
    return " ".join(sign(secret, webhook_id, timestamp, body) for secret in secrets_)


class SecretBox:
    """Seals endpoint secrets for storage: AES-256-GCM, the key derived from the pepper with HKDF-SHA256
    (its own ``info``, so it is no other use's key), a random 96-bit nonce per seal, the endpoint id as
    associated data (a sealed secret moved to another endpoint does not open). Sealed form:
    ``v1.`` + base64url(nonce ‖ ciphertext ‖ tag)."""

    __slots__ = ("_aead",)

    def __init__(self, pepper: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(pepper)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, secret: str, endpoint_id: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), endpoint_id.encode())
        return _SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode("ascii")

    def open(self, sealed: str, endpoint_id: str) -> str:
        try:
            if not sealed.startswith(_SEALED_PREFIX):
                raise ValueError("unknown format")
            raw = base64.urlsafe_b64decode(sealed.removeprefix(_SEALED_PREFIX).encode("ascii"))
            return self._aead.decrypt(raw[:12], raw[12:], endpoint_id.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error, UnicodeError):
            raise SecretUnreadable(
                f"the secret of endpoint {endpoint_id} does not decrypt (sealed under another pepper?); "
                "rotate it to issue a new one"
            ) from None


# --- the endpoint -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealedSecret:
    """A secret as stored: sealed, when it was made, and (for the previous one) when it stops signing."""

    sealed: str
    created_at: datetime
    expires_at: datetime | None = None

    def live_at(self, now: datetime) -> bool:
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    url: str
    description: str
    event_types: tuple[str, ...]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    secret: SealedSecret
    previous_secret: SealedSecret | None = None
    failing_since: datetime | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None

    def accepts(self, event_type: str) -> bool:
        """Whether events of ``event_type`` go to this endpoint (by its filter; enabled or not)."""
        return not self.event_types or event_type in self.event_types

    def state(self) -> str:
        """``enabled``, ``failing`` (enabled, deliveries failing since ``failing_since``) or ``disabled``."""
        if not self.enabled:
            return "disabled"
        return "failing" if self.failing_since is not None else "enabled"

    def live_secrets(self, now: datetime) -> list[SealedSecret]:
        """The secrets that sign at ``now``: the current one, and the previous one during its overlap."""
        live = [self.secret]
        if self.previous_secret is not None and self.previous_secret.live_at(now):
            live.append(self.previous_secret)
        return live

    def signing_secrets(self, box: SecretBox, now: datetime) -> list[str]:
        """The ``whsec_`` secrets to sign with at ``now``, current first (``signature_header``).
        ``SecretUnreadable`` when the current one does not decrypt (sealed under another pepper: rotate
        it); a previous one that does not decrypt is left out (the current one signs)."""
        signing = [box.open(self.secret.sealed, self.id)]
        for previous in self.live_secrets(now)[1:]:
            try:
                signing.append(box.open(previous.sealed, self.id))
            except SecretUnreadable:
                continue
        return signing

    def view(self, now: datetime) -> dict[str, object]:
        """What the API and CLI show: never a secret (sealed or not)."""
        previous = self.previous_secret
        return {
            "endpoint_id": self.id,
            "url": self.url,
            "description": self.description,
            "event_types": list(self.event_types),
            "enabled": self.enabled,
            "state": self.state(),
            "failing_since": _instant(self.failing_since),
            "disabled_at": _instant(self.disabled_at),
            "disabled_reason": self.disabled_reason,
            "created_at": _instant(self.created_at),
            "updated_at": _instant(self.updated_at),
            "secret_created_at": _instant(self.secret.created_at),
            "previous_secret_expires_at": (
                _instant(previous.expires_at) if previous is not None and previous.live_at(now) else None
            ),
        }

    def rotated(self, sealed: str, now: datetime, overlap: timedelta) -> Endpoint:
        """This endpoint with a new current secret; the current one becomes the previous, signing until
        ``now + overlap`` (an overlap of 0 retires it at once)."""
        validate_overlap(overlap)
        old = SealedSecret(self.secret.sealed, self.secret.created_at, now + overlap)
        return replace(self, secret=SealedSecret(sealed, now), previous_secret=old, updated_at=now)

    def to_fields(self) -> dict[str, str]:
        """The Redis hash (``notifications.keys.endpoint_key``)."""
        previous = self.previous_secret
        return {
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "event_types": json.dumps(list(self.event_types), separators=(",", ":")),
            "enabled": "1" if self.enabled else "0",
            "created_at": _stamp(self.created_at),
            "updated_at": _stamp(self.updated_at),
            "secret_sealed": self.secret.sealed,
            "secret_created_at": _stamp(self.secret.created_at),
            "previous_sealed": previous.sealed if previous else "",
            "previous_created_at": _stamp(previous.created_at if previous else None),
            "previous_expires_at": _stamp(previous.expires_at if previous else None),
            "failing_since": _stamp(self.failing_since),
            "disabled_at": _stamp(self.disabled_at),
            "disabled_reason": self.disabled_reason or "",
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Endpoint:
        """Read the Redis hash back; ``ValueError`` if it is not an endpoint's."""
        try:
            previous = None
            if fields.get("previous_sealed"):
                previous = SealedSecret(
                    fields["previous_sealed"],
                    _required(fields["previous_created_at"]),
                    _time(fields.get("previous_expires_at", "")),
                )
            types = json.loads(fields.get("event_types") or "[]")
            return cls(
                id=fields["id"],
                url=fields["url"],
                description=fields.get("description", ""),
                event_types=tuple(str(t) for t in types),
                enabled=fields.get("enabled", "1") == "1",
                created_at=_required(fields["created_at"]),
                updated_at=_required(fields["updated_at"]),
                secret=SealedSecret(fields["secret_sealed"], _required(fields["secret_created_at"])),
                previous_secret=previous,
                failing_since=_time(fields.get("failing_since", "")),
                disabled_at=_time(fields.get("disabled_at", "")),
                disabled_reason=fields.get("disabled_reason") or None,
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not an endpoint record: {exc}") from None


def _stamp(value: datetime | None) -> str:
    """Epoch milliseconds ('' for none): what the dispatcher's scripts compare."""
    return "" if value is None else str(int(value.timestamp() * 1000))


def _time(text: str) -> datetime | None:
    return datetime.fromtimestamp(int(text) / 1000, UTC) if text else None


def _required(text: str) -> datetime:
    value = _time(text)
    if value is None:
        raise ValueError("a required time is missing")
    return value


def _instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
