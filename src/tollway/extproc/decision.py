"""The decision core shared by both ext_authz protocols: a :class:`CheckRequest` in, a verdict out.

Authentication is stage 1; later stages (entitlements, limits) plug in here. Domain errors become HTTP
refusals only here, at the edge.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

from tollway.auth.authenticator import Authenticated, Authenticator, PendingLookup
from tollway.auth.errors import AuthError, CredentialStoreUnavailable
from tollway.extproc.check import Allow, CheckRequest, Decision
from tollway.extproc.problems import Refusals

log = logging.getLogger(__name__)

IDENTITY_HEADER_PREFIX: Final = "x-tollway-"
CUSTOMER_HEADER: Final = "x-tollway-customer-id"
KEY_ID_HEADER: Final = "x-tollway-key-id"
_SET_BY_TOLLWAY: Final = frozenset({CUSTOMER_HEADER, KEY_ID_HEADER})


class Decider(Protocol):
    """What the Envoy-facing servers need: a synchronous fast path, the full async path, and refusals."""

    @property
    def refusals(self) -> Refusals: ...

    def decide_now(self, request: CheckRequest) -> Decision | None: ...

    async def decide(self, request: CheckRequest) -> Decision: ...


class DecisionCore:
    """``forward_credential=False`` (the default) strips the header that carried the API key, so the
    secret never reaches the upstream or its logs."""

    def __init__(self, authenticator: Authenticator, refusals: Refusals, forward_credential: bool = False) -> None:
        self._authenticator = authenticator
        self._refusals = refusals
        self._forward_credential = forward_credential

    @property
    def refusals(self) -> Refusals:
        return self._refusals

    def decide_now(self, request: CheckRequest) -> Decision | None:
        """The verdict if it needs no I/O (cached key, or a credential refused on its face), else ``None``."""
        try:
            outcome = self._authenticator.try_cached(request.headers, request.path)
        except AuthError as error:
            return self._refusals.unauthenticated(error, request.request_id)
        if isinstance(outcome, PendingLookup):
            return None
        return self._admit(outcome, request)

    async def decide(self, request: CheckRequest) -> Decision:
        request_id = request.request_id
        try:
            outcome = self._authenticator.try_cached(request.headers, request.path)
            if isinstance(outcome, PendingLookup):
                outcome = await self._authenticator.resolve(outcome)
        except AuthError as error:
            return self._refusals.unauthenticated(error, request_id)
        except CredentialStoreUnavailable as error:
            log.warning("credential store unavailable: %s", error)
            return self._refusals.store_unavailable(error, request_id)
        except Exception:
            log.exception("check failed unexpectedly (request id %s)", request_id)
            return self._refusals.internal_error(request_id)
        return self._admit(outcome, request)

    def _admit(self, caller: Authenticated, request: CheckRequest) -> Allow:
        # Clients must not speak for Tollway: every x-tollway-* header they sent is replaced or removed.
        remove = [
            name for name in request.headers if name.startswith(IDENTITY_HEADER_PREFIX) and name not in _SET_BY_TOLLWAY
        ]
        if caller.header is not None and not self._forward_credential:
            remove.append(caller.header)
        identity = caller.identity
        return Allow(
            upstream_headers=((CUSTOMER_HEADER, identity.customer_id), (KEY_ID_HEADER, identity.key_id)),
            remove_headers=tuple(remove),
        )
