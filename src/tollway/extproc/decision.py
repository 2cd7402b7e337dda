"""The decision core shared by both ext_authz protocols: a :class:`CheckRequest` in, a verdict out.

Stage 1 (authenticate) always runs; stage 2 (entitle: plan, route, limits and quota) runs when a plan
catalog is configured. Domain errors become HTTP refusals only here, at the edge.
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

from tollway.auth.authenticator import Authenticated, Authenticator, PendingLookup
from tollway.auth.errors import AuthError, CredentialStoreUnavailable
from tollway.entitlements.errors import EntitlementError, EntitlementsUnavailable, LimitExceeded
from tollway.entitlements.gate import Admission, EntitlementGate
from tollway.entitlements.rules import PolicyRule
from tollway.extproc.check import Allow, CheckRequest, Decision
from tollway.extproc.problems import Refusals
from tollway.extproc.ratelimit_headers import AdvertisedPolicy, ratelimit_headers
from tollway.ratelimit import Verdict

log = logging.getLogger(__name__)

IDENTITY_HEADER_PREFIX: Final = "x-tollway-"
CUSTOMER_HEADER: Final = "x-tollway-customer-id"
KEY_ID_HEADER: Final = "x-tollway-key-id"
PLAN_HEADER: Final = "x-tollway-plan"
FEATURE_HEADER: Final = "x-tollway-feature"
ROUTE_HEADER: Final = "x-tollway-route"
LIMITS_HEADER: Final = "x-tollway-limits"  # "checked" | "unchecked" (a fail-open plan during an outage)
OVERAGE_HEADER: Final = "x-tollway-overage"  # soft policies this request took past their limit
SHADOW_HEADER: Final = "x-tollway-shadow-exceeded"  # shadow policies exceeded (reported, never enforced)
_ALWAYS_SET: Final = frozenset({CUSTOMER_HEADER, KEY_ID_HEADER})


class Decider(Protocol):
    """What the Envoy-facing servers need: a synchronous fast path, the full async path, and refusals."""

    @property
    def refusals(self) -> Refusals: ...

    def decide_now(self, request: CheckRequest) -> Decision | None: ...

    async def decide(self, request: CheckRequest) -> Decision: ...


def advertised(rules: tuple[PolicyRule, ...], verdict: Verdict) -> list[AdvertisedPolicy]:
    """The policies a client is told about: every enforced or soft one; shadow policies stay internal."""
    return [
        AdvertisedPolicy(state.name, state.limit, state.window_s, state.remaining, state.reset_s, rule.unit)
        for rule, state in zip(rules, verdict.states, strict=True)
        if not rule.shadow
    ]


class DecisionCore:
    """``forward_credential=False`` (the default) strips the header that carried the API key, so the
    secret never reaches the upstream or its logs. ``gate`` is stage 2; without it Tollway only
    authenticates."""

    def __init__(
        self,
        authenticator: Authenticator,
        refusals: Refusals,
        forward_credential: bool = False,
        gate: EntitlementGate | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._refusals = refusals
        self._forward_credential = forward_credential
        self._gate = gate

    @property
    def refusals(self) -> Refusals:
        return self._refusals

    def decide_now(self, request: CheckRequest) -> Decision | None:
        """The verdict if it needs no I/O (a cached key and no stage 2, or a credential refused on its
        face), else ``None``."""
        if self._gate is not None:
            return None  # stage 2 always awaits the limiter: authenticate once, in decide()
        try:
            outcome = self._authenticator.try_cached(request.headers, request.path)
        except AuthError as error:
            return self._refusals.unauthenticated(error, request.request_id)
        if isinstance(outcome, PendingLookup):
            return None
        return self._admit(outcome, request, None)

    async def decide(self, request: CheckRequest) -> Decision:
        request_id = request.request_id
        try:
            outcome = self._authenticator.try_cached(request.headers, request.path)
            if isinstance(outcome, PendingLookup):
                outcome = await self._authenticator.resolve(outcome)
            admission = None
            if self._gate is not None:
                admission = await self._gate.admit(outcome.identity.customer_id, request.method, request.path)
        except AuthError as error:
            return self._refusals.unauthenticated(error, request_id)
        except EntitlementError as error:
            return self._refusals.forbidden(error.reason, error.detail, request_id)
        except LimitExceeded as error:
            verdict = error.verdict
            headers = ratelimit_headers(advertised(error.rules, verdict))
            return self._refusals.quota_exceeded(verdict.violated, verdict.retry_after_s, headers, request_id)
        except CredentialStoreUnavailable as error:
            log.warning("credential store unavailable: %s", error)
            return self._refusals.unavailable("The credential store did not answer in time. Retry shortly.", request_id)
        except EntitlementsUnavailable as error:
            log.warning("entitlements unavailable, failing closed: %s", error)
            return self._refusals.unavailable("Limits could not be checked in time. Retry shortly.", request_id)
        except Exception:
            log.exception("check failed unexpectedly (request id %s)", request_id)
            return self._refusals.internal_error(request_id)
        return self._admit(outcome, request, admission)

    def _admit(self, caller: Authenticated, request: CheckRequest, admission: Admission | None) -> Allow:
        identity = caller.identity
        upstream = [(CUSTOMER_HEADER, identity.customer_id), (KEY_ID_HEADER, identity.key_id)]
        client: tuple[tuple[str, str], ...] = ()
        if admission is not None:
            upstream += [
                (PLAN_HEADER, admission.plan_id),
                (FEATURE_HEADER, admission.feature),
                (ROUTE_HEADER, admission.route),
                (LIMITS_HEADER, "checked" if admission.limits_checked else "unchecked"),
            ]
            verdict = admission.verdict
            if verdict is not None:
                client = ratelimit_headers(advertised(admission.rules, verdict))
                if verdict.soft_exceeded:
                    upstream.append((OVERAGE_HEADER, ",".join(verdict.soft_exceeded)))
                if verdict.shadow_exceeded:
                    upstream.append((SHADOW_HEADER, ",".join(verdict.shadow_exceeded)))
        # Clients must not speak for Tollway: every x-tollway-* header they sent is replaced (the ones set
        # above) or removed (the rest; Envoy applies removals after sets, so a set name is never removed).
        remove = [
            name
            for name in request.headers
            if name.startswith(IDENTITY_HEADER_PREFIX)
            and name not in _ALWAYS_SET
            and all(name != n for n, _ in upstream)
        ]
        if caller.header is not None and not self._forward_credential:
            remove.append(caller.header)
        return Allow(upstream_headers=tuple(upstream), remove_headers=tuple(remove), client_headers=client)
