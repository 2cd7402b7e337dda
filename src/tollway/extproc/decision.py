"""The decision core shared by both ext_authz protocols: a :class:`CheckRequest` in, a verdict out.

Stage 1 (authenticate) always runs; stage 2 (entitle: plan, route, limits and quota) runs when a plan
catalog is configured. Domain errors become HTTP refusals only here, at the edge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import Final, Protocol

from tollway.auth.authenticator import Authenticated, Authenticator
from tollway.auth.errors import AuthError, CredentialStoreUnavailable
from tollway.credits.units import format_micros, from_micros
from tollway.entitlements.checks import Check
from tollway.entitlements.errors import (
    EntitlementError,
    EntitlementsUnavailable,
    LimitExceeded,
    MissingScope,
    PaymentOverdue,
    PaymentRequired,
)
from tollway.entitlements.gate import Admission, EntitlementGate
from tollway.entitlements.rules import PolicyRule
from tollway.extproc.check import Allow, CheckRequest, Decision, Deny
from tollway.extproc.faults import log_unexpected
from tollway.extproc.problems import Refusals
from tollway.extproc.ratelimit_headers import AdvertisedPolicy, FieldShape, ratelimit_headers
from tollway.notifications.budgets import BUDGETS_PATH
from tollway.ratelimit import Verdict
from tollway.structured_fields import sf_string
from tollway.usage.recorder import UsageRecorder
from tollway.usage.report_server import USAGE_PATH
from tollway.usage.row import new_row_id
from tollway.usage.usage_headers import UsageHeaders

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
# With metering on: when Tollway decided (epoch ms) and the route's cost weight. Both reach the access log
# through Envoy's dynamic metadata, so the response row completes the decision row without a lookup.
DECIDED_AT_HEADER: Final = "x-tollway-decided-at"
COST_HEADER: Final = "x-tollway-cost"
# With metering on: the usage row's id, minted here (never Envoy's x-request-id, which a client can choose when
# Envoy preserves it), so the access log completes exactly this request's row.
USAGE_ID_HEADER: Final = "x-tollway-usage-id"
# With a real-time price: ``<micro-units> [<balance unit>]`` (no unit: a postpaid spend), for the access log's
# row (the decision row carries it already).
PRICE_HEADER: Final = "x-tollway-price"
# On admits of prepaid plans: the balance left, its unit and what this request burned (RFC 9651 dictionary of
# decimal strings: prices finer than sf-decimal's 3 places stay exact).
BALANCE_FIELD: Final = "tollway-balance"
SPEND_CAP: Final = "spend_cap"  # the name x-tollway-overage gives a soft spend cap this request went past
_ALWAYS_SET: Final = frozenset({CUSTOMER_HEADER, KEY_ID_HEADER})
_MAX_SHAPES: Final = 10_000
METERING_UNAVAILABLE: Final = "metering-unavailable"


class Decider(Protocol):
    """What the Envoy-facing servers need: a synchronous fast path, the full async path, and refusals."""

    @property
    def refusals(self) -> Refusals: ...

    def decide_now(self, request: CheckRequest) -> Decision | None: ...

    async def decide(self, request: CheckRequest) -> Decision: ...


def advertised(rules: tuple[PolicyRule, ...], verdict: Verdict) -> list[AdvertisedPolicy]:
    """The policies a client is told about: every enforced or soft one; shadow policies stay internal."""
    return [policy for _, policy in _advertised(rules, verdict)]


def _advertised(rules: tuple[PolicyRule, ...], verdict: Verdict) -> list[tuple[int, AdvertisedPolicy]]:
    return [
        (index, AdvertisedPolicy(state.name, state.limit, state.window_s, state.remaining, state.reset_s, rule.unit))
        for index, (rule, state) in enumerate(zip(rules, verdict.states, strict=True))
        if not rule.shadow
    ]


class DecisionCore:
    """``forward_credential=False`` (the default) strips every configured credential header from an
    admitted request — whichever carried the credential, and whatever the others hold — and the
    configured query parameter (gRPC only), so no secret reaches the upstream or its logs. ``gate`` is
    stage 2; without it Tollway only authenticates. ``recorder`` is stage 3: every verdict is written to
    the usage spool before it is returned (``wall_ms`` is the decision timestamp source; the server
    passes the injected clock's).
    ``usage_headers`` adds ``Tollway-Usage``/``Tollway-Cost`` to admits of plans that enable them.
    ``check_timeout_s``: one deadline for all the waits of a check on the async path (key lookup,
    subscription, leases, limiter call), so a plan's outage policy answers before Envoy gives up
    (None: each wait has only its own bound)."""

    def __init__(
        self,
        authenticator: Authenticator,
        refusals: Refusals,
        forward_credential: bool = False,
        gate: EntitlementGate | None = None,
        recorder: UsageRecorder | None = None,
        wall_ms: Callable[[], int] | None = None,
        usage_headers: UsageHeaders | None = None,
        check_timeout_s: float | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._check_timeout = check_timeout_s
        self._refusals = refusals
        self._forward_credential = forward_credential
        self._gate = gate
        self._recorder = recorder
        self._wall_ms = wall_ms or _system_ms
        self._usage_headers = usage_headers
        self._shapes: dict[Check, FieldShape] = {}
        source = authenticator.source
        self._strip_headers: tuple[str, ...] = () if forward_credential else source.headers
        self._strip_query: str | None = None if forward_credential else source.query_param

    @property
    def refusals(self) -> Refusals:
        return self._refusals

    @property
    def authenticator(self) -> Authenticator:
        return self._authenticator

    def decide_now(self, request: CheckRequest) -> Decision | None:
        """The verdict if it needs no I/O (a cached key, and with stage 2 a cached subscription and no
        limit or a capacity lease that covers the request; or a credential refused on its face), else
        ``None``: call :meth:`decide`."""
        if self._recorder is not None and self._recorder.refuses_new_requests:
            self._recorder.spool.refuse()  # this refusal's own row cannot be written either
            return self._metering_unavailable(request)
        caller: Authenticated | None = None
        try:
            outcome = self._authenticator.try_cached(request.headers, request.path)
            if not isinstance(outcome, Authenticated):
                return None  # a key record to look up, or a token issuer's keys to fetch
            caller = outcome
            admission = None
            if self._gate is not None and not _open_to_every_caller(request.path):
                identity = outcome.identity
                admission = self._gate.admit_now(identity.customer_id, request.method, request.path, identity.scopes)
                if admission is None:
                    return None
        except AuthError as error:
            return self._refused(self._refusals.unauthenticated(error, request.request_id), error.reason, request)
        except MissingScope as error:
            return self._insufficient_scope(error, request, caller)
        except PaymentOverdue as error:
            return self._payment_overdue(error, request, caller)
        except EntitlementError as error:
            return self._refused(
                self._refusals.forbidden(error.reason, error.detail, request.request_id), error.reason, request, caller
            )
        return self._admit(outcome, request, admission)

    async def decide(self, request: CheckRequest) -> Decision:
        request_id = request.request_id
        if self._recorder is not None and self._recorder.refuses_new_requests:
            self._recorder.spool.refuse()  # this refusal's own row cannot be written either
            return self._metering_unavailable(request)
        caller: Authenticated | None = None
        timeout = self._check_timeout
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        # Minted before the gate: a reservation is keyed by the row id the usage row will carry.
        row_id = new_row_id()
        try:
            outcome = self._authenticator.try_cached(request.headers, request.path)
            if not isinstance(outcome, Authenticated):
                outcome = await self._authenticator.resolve(outcome, deadline)
            caller = outcome
            admission = None
            if self._gate is not None and not _open_to_every_caller(request.path):
                identity = outcome.identity
                admission = await self._gate.admit(
                    identity.customer_id, request.method, request.path, identity.scopes, deadline, row_id
                )
        except AuthError as error:
            return self._refused(self._refusals.unauthenticated(error, request_id), error.reason, request)
        except MissingScope as error:
            return self._insufficient_scope(error, request, caller)
        except PaymentOverdue as error:
            return self._payment_overdue(error, request, caller)
        except EntitlementError as error:
            return self._refused(
                self._refusals.forbidden(error.reason, error.detail, request_id), error.reason, request, caller
            )
        except PaymentRequired as error:
            return self._payment_required(error, request, caller)
        except LimitExceeded as error:
            verdict = error.verdict
            headers = ratelimit_headers(advertised(error.rules, verdict))
            deny = self._refusals.quota_exceeded(verdict.violated, verdict.retry_after_s, headers, request_id)
            return self._refused(
                deny, error.reason, request, caller, error.plan_id, error.feature, error.route, error.cost
            )
        except CredentialStoreUnavailable as error:  # the key store, or a token issuer's JWKS
            log.warning("%s: %s", error.reason, error)
            return self._refused(self._refusals.unavailable(error.detail, request_id), error.reason, request)
        except EntitlementsUnavailable as error:
            log.warning("entitlements unavailable, failing closed: %s", error)
            deny = self._refusals.unavailable("Limits could not be checked in time. Retry shortly.", request_id)
            return self._refused(deny, error.reason, request, caller)
        except Exception as error:  # a fault of Tollway's, never client input: 500, logged without its message
            log_unexpected(error, request_id)
            return self._refused(self._refusals.internal_error(request_id), "internal-error", request, caller)
        return self._admit(outcome, request, admission, row_id)

    def _refused(
        self,
        deny: Deny,
        reason: str,
        request: CheckRequest,
        caller: Authenticated | None = None,
        plan: str = "",
        feature: str = "",
        route: str = "",
        cost: int = 1,
    ) -> Deny:
        recorder = self._recorder
        if recorder is not None:
            customer, subject = (caller.identity.customer_id, caller.identity.key_id) if caller else ("", "")
            recorder.refused(
                new_row_id(),
                request.request_id,
                self._wall_ms(),
                request.method,
                deny.status,
                reason,
                len(deny.body),
                customer,
                subject,
                plan,
                feature,
                route,
                cost,
            )
        return replace(deny, reason=reason)

    def _payment_required(self, error: PaymentRequired, request: CheckRequest, caller: Authenticated | None) -> Deny:
        money = error.money
        unit = error.balance_unit or error.currency
        deny = self._refusals.payment_required(
            error.reason,
            unit,
            from_micros(money.price),
            None if money.balance is None else from_micros(money.balance),
            None if money.spent is None else from_micros(money.spent),
            None if money.cap is None else from_micros(money.cap),
            request.request_id,
        )
        return self._refused(deny, error.reason, request, caller, error.plan_id, error.feature, error.route, error.cost)

    def _payment_overdue(self, error: PaymentOverdue, request: CheckRequest, caller: Authenticated | None) -> Deny:
        deny = self._refusals.payment_overdue(error.detail, request.request_id)
        return self._refused(deny, error.reason, request, caller, error.plan_id)

    def _insufficient_scope(self, error: MissingScope, request: CheckRequest, caller: Authenticated | None) -> Deny:
        deny = self._refusals.insufficient_scope(error.scopes, error.detail, request.request_id)
        return self._refused(deny, error.reason, request, caller, error.plan_id, error.feature, error.route)

    def _metering_unavailable(self, request: CheckRequest) -> Deny:
        """The spool is full under the fail_closed policy: 503, counted as reason ``metering-unavailable``
        (its row is counted in the spool's ``rows_refused``, not written)."""
        deny = self._refusals.unavailable(
            "Usage cannot be recorded right now, so the request is not admitted. Retry shortly.",
            request.request_id,
            slug=METERING_UNAVAILABLE,
        )
        return replace(deny, reason=METERING_UNAVAILABLE)

    def _admit(
        self, caller: Authenticated, request: CheckRequest, admission: Admission | None, row_id: str = ""
    ) -> Decision:
        identity = caller.identity
        upstream = [(CUSTOMER_HEADER, identity.customer_id), (KEY_ID_HEADER, identity.key_id)]
        client: tuple[tuple[str, str], ...] = ()
        recorder = self._recorder
        if recorder is not None:
            ts_ms = self._wall_ms()
            row_id = row_id or new_row_id()
            if admission is None:
                recorded = recorder.admitted(
                    row_id, request.request_id, ts_ms, request.method, identity.customer_id, identity.key_id
                )
            else:
                price, unit = _price_of(admission)
                recorded = recorder.admitted(
                    row_id,
                    request.request_id,
                    ts_ms,
                    request.method,
                    identity.customer_id,
                    identity.key_id,
                    admission.plan_id,
                    admission.feature,
                    admission.route,
                    admission.cost,
                    admission.limits_checked,
                    price,
                    unit,
                )
                upstream.append((COST_HEADER, str(admission.cost)))
                if price or unit:
                    upstream.append((PRICE_HEADER, f"{price} {unit}" if unit else str(price)))
            if not recorded and recorder.refuses_new_requests:
                return self._metering_unavailable(request)
            upstream += ((DECIDED_AT_HEADER, str(ts_ms)), (USAGE_ID_HEADER, row_id))
        if admission is not None:
            upstream += [
                (PLAN_HEADER, admission.plan_id),
                (FEATURE_HEADER, admission.feature),
                (ROUTE_HEADER, admission.route),
                (LIMITS_HEADER, "checked" if admission.limits_checked else "unchecked"),
            ]
            verdict = admission.verdict
            if verdict is not None:
                client = self._ratelimit_fields(admission, verdict)
                money = verdict.money
                overage = verdict.soft_exceeded
                if money is not None:
                    if money.over_cap:
                        overage += (SPEND_CAP,)
                    balance = money.balance
                    if balance is not None and admission.check is not None:
                        # admitted, so the price was burned: what is left is the balance less the price
                        client += (_balance_field(balance - money.price, money.price, admission.check.balance_unit),)
                if overage:
                    upstream.append((OVERAGE_HEADER, ",".join(overage)))
                if verdict.shadow_exceeded:
                    upstream.append((SHADOW_HEADER, ",".join(verdict.shadow_exceeded)))
            if self._usage_headers is not None:  # plans with usage_headers: true
                client += self._usage_headers.fields(identity.customer_id, admission.plan_id)
        # Clients must not speak for Tollway: every x-tollway-* header they sent is replaced (the ones set
        # above) or removed (the rest; Envoy applies removals after sets, so a set name is never removed).
        remove = (
            [
                name
                for name in request.headers
                if name.startswith(IDENTITY_HEADER_PREFIX)
                and name not in _ALWAYS_SET
                and all(name != n for n, _ in upstream)
            ]
            if IDENTITY_HEADER_PREFIX in "\n".join(request.headers)  # one C-level scan; rarely true
            else []
        )
        # Every configured credential header, not only the one that won: a second key (or a token beside a
        # key) must not reach the upstream either. Removing an absent header is a no-op for Envoy.
        remove += self._strip_headers
        strip_query = self._strip_query
        return Allow(
            upstream_headers=tuple(upstream),
            remove_headers=tuple(remove),
            client_headers=client,
            repeats=recorder is None,
            remove_query_params=(strip_query,) if strip_query is not None and "?" in request.path else (),
        )

    def _ratelimit_fields(self, admission: Admission, verdict: Verdict) -> tuple[tuple[str, str], ...]:
        """``RateLimit-Policy`` and ``RateLimit`` for an admit, from the field shape of its check (the
        static part, built once per check)."""
        check = admission.check
        shape = self._shapes.get(check) if check is not None else None
        if shape is None:
            shape = FieldShape(_advertised(admission.rules, verdict))
            if check is not None:
                if len(self._shapes) >= _MAX_SHAPES:
                    self._shapes.clear()
                self._shapes[check] = shape
        return shape.fields(verdict.states)


def _price_of(admission: Admission) -> tuple[int, str]:
    """What an admitted request burned (prepaid: with its balance unit) or spent (postpaid: no unit)."""
    verdict = admission.verdict
    money = verdict.money if verdict is not None else None
    if money is None:
        return 0, ""
    check = admission.check
    return money.price, check.balance_unit if check is not None and money.balance is not None else ""


def _balance_field(remaining: int, price: int, unit: str) -> tuple[str, str]:
    """``Tollway-Balance: remaining="99.9996", unit="credits", cost="0.0004"`` (micro-units in)."""
    return BALANCE_FIELD, f'remaining="{format_micros(remaining)}"{_unit_and_cost(unit, price)}'


@lru_cache(maxsize=1024)
def _unit_and_cost(unit: str, price: int) -> str:
    """The part of the balance field that repeats for every request of a check: formatted once."""
    return f', unit={sf_string(unit)}, cost="{format_micros(price)}"'


def _open_to_every_caller(path: str) -> bool:
    """Tollway's own endpoints for callers (``GET /tollway/v1/usage``, ``/tollway/v1/usage/budgets``):
    authenticated like any call, but no plan feature grants them, no limit counts them and no meter bills them."""
    return path.startswith(USAGE_PATH) and path.split("?", 1)[0] in (USAGE_PATH, BUDGETS_PATH)


def _system_ms() -> int:
    return time.time_ns() // 1_000_000
