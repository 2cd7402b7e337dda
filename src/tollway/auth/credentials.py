"""Where a request carries its API key: configured headers, and a query parameter only if configured."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

from tollway.auth.errors import MalformedKey, MissingCredential


@dataclass(frozen=True, slots=True)
class PresentedKey:
    """The key text a request presented (unvalidated) and the header that carried it (``None``: query)."""

    text: str
    header: str | None

    def __repr__(self) -> str:
        return f"PresentedKey(header={self.header!r}, text=<hidden>)"


@dataclass(frozen=True, slots=True)
class CredentialSource:
    """``headers`` are lower-case names tried in order. ``authorization`` means the Bearer scheme;
    any other header holds the key as its whole value. ``query_param`` is off unless set: keys in URLs
    end up in logs and browser histories."""

    headers: tuple[str, ...] = ("authorization", "x-api-key")
    query_param: str | None = None

    def extract(self, headers: Mapping[str, str], path: str = "") -> PresentedKey:
        """The presented key. Raises :class:`MissingCredential` when none is sent."""
        for name in self.headers:
            value = headers.get(name)
            if value is None:
                continue
            if name == "authorization":
                scheme, _, token = value.strip().partition(" ")
                if scheme.lower() != "bearer":
                    continue  # another scheme (e.g. Basic) is not ours to judge
                token = token.strip()
            else:
                token = value.strip()
            if not token:
                raise MalformedKey("The API key is empty.")
            return PresentedKey(token, name)
        if self.query_param and "?" in path:
            # The query by hand: urlsplit raises on a path such as "//[x?k=v" (an "IPv6 netloc").
            query = path.partition("?")[2].partition("#")[0]
            values = parse_qs(query, keep_blank_values=True).get(self.query_param)
            if values:
                if not values[0]:
                    raise MalformedKey("The API key is empty.")
                return PresentedKey(values[0], None)
        raise MissingCredential()
