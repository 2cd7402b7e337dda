"""Protocol-neutral check request and verdicts exchanged between the Envoy servers and the decision core."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """What Envoy tells us about a downstream request. Header names are lower case."""

    method: str
    path: str
    headers: Mapping[str, str]
    request_id: str = ""


class Allow(NamedTuple):
    """Admit the request: set ``upstream_headers`` (replacing same-named client headers), strip
    ``remove_headers``, and add ``client_headers`` to the eventual response. ``repeats``: the same verdict
    recurs for a caller (no per-request values), so its serialized form may be cached.
    ``remove_query_params``: query parameters to strip (gRPC only: Envoy's HTTP ext_authz cannot)."""

    upstream_headers: Headers
    remove_headers: tuple[str, ...] = ()
    client_headers: Headers = ()
    repeats: bool = True
    remove_query_params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Deny:
    """Refuse the request with this response (a problem document)."""

    status: int
    body: bytes
    headers: Headers = field(default=())
    reason: str = ""  # the refusal's stable slug (metrics, logs); never sent to Envoy as such


Decision = Allow | Deny
