"""Threshold events of a check, as ``consume.lua`` appends them to the customer's outbox (pure: no I/O).

The limiter script and the model (``ratelimit.model``) detect the same crossings in the same step that
counts them (``notifications.thresholds``: ``before < level <= after`` for an admitted check) and build
the same events with these functions' ids, bodies and times:

* ``quota.threshold_crossed``: id (customer, policy, period start ms, level); period = the quota's.
* ``limit.threshold_crossed``: id (customer, policy, aligned window start ms, level); period = the window
  ``[floor(at / W) × W, + W)`` on the limiter's clock (``thresholds.window_start_ms``), ``at`` the time
  the window buckets were counted at (``Verdict.at_ms``).

Body (``data``; docs/notifications.md): ``plan``, ``feature``, ``policy``, ``limit``, ``used`` (the count
after the check), ``threshold`` (the level, units), ``threshold_label`` (``80%`` or ``9000``),
``period_start``, ``period_end`` (RFC 3339 UTC: ``rfc3339``). ``ts`` is the limiter's time of the check.
An event is appended only if its once-marker (``notifications.keys.once_key``) was not there; the marker
lives until its period ends plus a day (at least a day: ``once_ttl_ms``).

Money events (a check whose ``Money.alerts`` is set: every prepaid or spend-capped plan's), after the
policies' in the outbox, all with ``ts`` the limiter's time and amounts as decimal strings of the unit:

* ``balance.low`` {unit, balance, threshold}: an admitted price took the live balance from at or above a
  threshold to below it (``before >= t > after``); id (customer, threshold micros, funding epoch).
* ``balance.exhausted`` {unit, balance, price}: a price refused for insufficient credits (balance: the
  live balance), or an admitted one that took the balance to 0 or below (balance: after it); id
  (customer, funding epoch).
* ``spend_cap.reached`` {currency, cap, spent, price, soft, period_start, period_end}: the hard cap
  refused a price, or a soft cap was passed (``spent + price > cap``, admitted); ``spent`` before the
  check, ``currency`` the unit the cap is counted in; id (customer, cap period start ms, cap micros).

A reservation's settlement (``settle.lua``, ``settlement_events``) reports its overrun burned the same
way, as a burn of ``price`` = the overrun burned, from the balance and spend left after the settlement's
returns: ``balance.low`` and ``balance.exhausted`` as for an admitted price, ``spend_cap.reached`` when
it takes the spend past the cap (soft or hard: an overrun is burned, never refused), with the same ids.

The funding epoch (``ratelimit.keys.funding_key``) is bumped by every grant or top-up (credits.store), so
a top-up that lifts the balance back above a threshold lets it fire again. Balance markers live
``ONCE_TTL_MS``; a cap's until its period ends plus a day.

Script arguments (only for a check with alerting policies or money alerts, after the money arguments):
one more key, the customer's outbox stream (``notifications.keys.stream_key``), with the argument
``6 <plan> <feature> <customer>`` (``-`` for a check without alerting policies), then, without keys, the
money alerts ``8 <unit> <cap period start ms | -1> <threshold>,… | -`` and one argument per alerting
policy ``7 <position, 1-based> <period start ms, 0 for a window> <level>:<label>,… <policy name>``. The
reply's three numbers for the stream key: (events appended, 0, 0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from tollway.credits.units import format_micros
from tollway.notifications.events import Event, event_id, threshold_event_id
from tollway.notifications.thresholds import window_start_ms
from tollway.ratelimit.money import Money, MoneyState
from tollway.ratelimit.policies import Policy, WindowPolicy
from tollway.ratelimit.reservations import ReservedAlerts

KIND_ALERTS: Final = 6
KIND_ALERTING_POLICY: Final = 7
KIND_MONEY_ALERTS: Final = 8
DAY_MS: Final = 86_400_000
QUOTA_CROSSED: Final = "quota.threshold_crossed"
LIMIT_CROSSED: Final = "limit.threshold_crossed"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(ms: int) -> str:
    """UTC time of ``ms`` (epoch milliseconds) as RFC 3339 with ``Z``: whole seconds without a fraction,
    else three digits (``2026-12-01T00:00:00Z``, ``2026-12-01T00:00:00.250Z``), as the script writes it."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + "Z"


def once_ttl_ms(period_end_ms: int, now_ms: int) -> int:
    """How long the once-marker of a crossing in a period ending at ``period_end_ms`` lives: until a day
    after the period ends, at least a day."""
    return max(period_end_ms + DAY_MS - now_ms, DAY_MS)


def data_text(data: dict[str, Any]) -> str:
    """An event body as the outbox stores it (``Event.stream_fields``: compact, sorted keys)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def crossing_period(policy: Policy, at_ms: int) -> tuple[int, int]:
    """The (start, end) ms of the period a crossing of ``policy`` at ``at_ms`` (the limiter's time)
    belongs to: the quota's period, or the aligned window."""
    if isinstance(policy, WindowPolicy):
        start = window_start_ms(at_ms, policy.window_ms)
        return start, start + policy.window_ms
    return policy.period_start_ms, policy.period_end_ms


def crossing_events(
    customer_id: str, policy: Policy, before: int, after: int, at_ms: int
) -> list[tuple[Event, int, int]]:
    """The events of ``policy``'s levels that a count going from ``before`` to ``after`` crosses, each
    with the period end it belongs to (for the once-marker's lifetime) and its level; ``at_ms``: the
    limiter's time of the check (the event's ``ts``)."""
    alerting = policy.alerting
    if alerting is None or after <= before:
        return []
    out: list[tuple[Event, int, int]] = []
    start, end = crossing_period(policy, at_ms)
    kind = LIMIT_CROSSED if isinstance(policy, WindowPolicy) else QUOTA_CROSSED
    for level, label in zip(alerting.levels, alerting.labels, strict=True):
        if before < level <= after:
            data = {
                "plan": alerting.plan,
                "feature": alerting.feature,
                "policy": policy.name,
                "limit": policy.limit,
                "used": after,
                "threshold": level,
                "threshold_label": label,
                "period_start": rfc3339(start),
                "period_end": rfc3339(end),
            }
            event_id = threshold_event_id(kind, customer_id, policy.name, start, level)
            out.append((Event(event_id, kind, at_ms, customer_id, data), end, level))
    return out


def money_events(
    customer_id: str, money: Money, state: MoneyState, fit: bool, admitted: bool, epoch: int, at_ms: int
) -> list[Event]:
    """The money events of a check (``fit``: every enforced policy fitted; ``state``: its money side;
    ``epoch``: the customer's funding epoch), each with its once-marker's lifetime from ``at_ms``."""
    alerts = money.alerts
    price = state.price
    if alerts is None or not fit or price <= 0:
        return []
    out: list[Event] = []
    before = state.balance
    if before is not None:
        if admitted:
            out += _burn_events(customer_id, alerts.unit, alerts.low, before, before - price, price, epoch, at_ms)
        elif state.refused == "insufficient-credits" and before < price:  # not a lease's floor
            out.append(_exhausted(customer_id, alerts.unit, before, price, epoch, at_ms))
    cap = money.spend_cap
    spent = state.spent
    if cap is not None and spent is not None and spent + price > cap.cap:
        soft = not cap.hard
        if (soft and admitted) or (not soft and state.refused == "spend-cap-reached"):
            period = (cap.period_start_ms, cap.period_end_ms)
            out.append(_cap_reached(customer_id, alerts.unit, period, cap.cap, cap.hard, spent, price, at_ms))
    return out


def settlement_events(
    customer_id: str,
    alerts: ReservedAlerts,
    balance: int | None,
    spent: int | None,
    cap_period: tuple[int, int] | None,
    burned: int,
    epoch: int,
    at_ms: int,
) -> list[Event]:
    """The money events of a reservation's settlement that burned ``burned`` (its overrun) from the live
    ``balance`` (None: not prepaid) and onto the cap period's ``spent`` (None: no cap), both as they were
    after the settlement's returns; ``epoch``: the customer's funding epoch; ``at_ms``: the settling time."""
    if burned <= 0:
        return []
    unit = alerts.alerts.unit
    out: list[Event] = []
    if balance is not None:
        out += _burn_events(customer_id, unit, alerts.alerts.low, balance, balance - burned, burned, epoch, at_ms)
    if alerts.cap is not None and cap_period is not None and spent is not None and spent + burned > alerts.cap:
        out.append(_cap_reached(customer_id, unit, cap_period, alerts.cap, alerts.hard, spent, burned, at_ms))
    return out


def _burn_events(
    customer_id: str, unit: str, low: Sequence[int], before: int, after: int, price: int, epoch: int, at_ms: int
) -> list[Event]:
    """A burn of ``price`` that took the live balance from ``before`` to ``after``: ``balance.low`` per
    threshold it went below, then ``balance.exhausted`` if it reached 0 or below."""
    out: list[Event] = []
    for threshold in low:
        if before >= threshold > after:
            data = {"unit": unit, "balance": format_micros(after), "threshold": format_micros(threshold)}
            out.append(
                Event(event_id("balance.low", customer_id, threshold, epoch), "balance.low", at_ms, customer_id, data)
            )
    if after <= 0 < before:
        out.append(_exhausted(customer_id, unit, after, price, epoch, at_ms))
    return out


def _exhausted(customer_id: str, unit: str, balance: int, price: int, epoch: int, at_ms: int) -> Event:
    data = {"unit": unit, "balance": format_micros(balance), "price": format_micros(price)}
    return Event(event_id("balance.exhausted", customer_id, epoch), "balance.exhausted", at_ms, customer_id, data)


def _cap_reached(
    customer_id: str, unit: str, period: tuple[int, int], cap: int, hard: bool, spent: int, price: int, at_ms: int
) -> Event:
    body: dict[str, Any] = {
        "currency": unit,
        "cap": format_micros(cap),
        "spent": format_micros(spent),
        "price": format_micros(price),
        "soft": not hard,
        "period_start": rfc3339(period[0]),
        "period_end": rfc3339(period[1]),
    }
    kind = "spend_cap.reached"
    return Event(event_id(kind, customer_id, period[0], cap), kind, at_ms, customer_id, body)


def alert_args(partition: str, policies: Sequence[Policy], money: Money | None = None) -> list[str]:
    """The script arguments of a check's alerts (empty: none): the context, the money alerts, then one
    per alerting policy (see the module docstring)."""
    out: list[str] = []
    context = "- -"
    for policy in policies:
        if policy.alerting is not None:
            context = f"{policy.alerting.plan} {policy.alerting.feature}"
            break
    out.append(f"{KIND_ALERTS} {context} {partition}")
    if money is not None and money.alerts is not None:
        cap_start = money.spend_cap.period_start_ms if money.spend_cap is not None else -1
        low = ",".join(str(t) for t in money.alerts.low) or "-"
        out.append(f"{KIND_MONEY_ALERTS} {money.alerts.unit} {cap_start} {low}")
    for i, policy in enumerate(policies):
        alerting = policy.alerting
        if alerting is None:
            continue
        start = 0 if isinstance(policy, WindowPolicy) else policy.period_start_ms
        out.append(f"{KIND_ALERTING_POLICY} {i + 1} {start} {alerting.spec} {policy.name}")
    return out
