"""The Lua scripts (package data) and the check's SHA-1, computed once.

``outbox.lua`` holds the outbox helpers both scripts share (the event writer: ids, once-markers, bodies);
it is prepended to ``consume.lua`` and to ``settle.lua`` at load, and every SHA is over the final text."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.resources import files

from tollway.notifications.keys import stream_key
from tollway.ratelimit.alerts import alert_args
from tollway.ratelimit.keys import charge_key, grants_key, leases_key, policy_key, spend_key
from tollway.ratelimit.money import KIND_BALANCE, KIND_CAP, KIND_CHARGE, KIND_LEASE, KIND_RESERVE, Money
from tollway.ratelimit.policies import Policy, WindowPolicy
from tollway.ratelimit.refunds import Refund
from tollway.ratelimit.reservations import reservations_key


def _load(name: str) -> str:
    return files("tollway.ratelimit").joinpath(name).read_text(encoding="utf-8")


OUTBOX_LUA = _load("outbox.lua")
SCRIPT = OUTBOX_LUA + _load("consume.lua")
SHA = hashlib.sha1(SCRIPT.encode("utf-8"), usedforsecurity=False).hexdigest()
SETTLE_SCRIPT = OUTBOX_LUA + _load("settle.lua")

KIND_WINDOW = 0
KIND_QUOTA = 1


def script_keys_and_args(
    prefix: str,
    partition: str,
    policies: Sequence[Policy],
    costs: Sequence[int],
    now_ms: int,
    refund: Refund | None = None,
    window_ms: int | None = None,
    money: Money | None = None,
) -> tuple[list[str], list[int | str]]:
    """KEYS and ARGV of one check, in the layout ``consume.lua`` reads: ``now_ms`` (the caller's clock,
    for quota periods), the time of the window buckets (``window_ms``; None, sent empty: the server's
    ``TIME``), then per policy one argument "kind limit cost enforced a b" (window: a = bucket_ms,
    b = buckets; quota: a = period end), followed by " units bucket" when ``refund`` gives units back to
    that policy first (``refund.taken_ms`` is a window time: the one the lease was counted at); then
    ``money``'s arguments (``ratelimit.money``): each charge (" r<units>" when ``refund.charge_units``
    gives some back), the balance, the spend cap, the reservation, the lease record (``money.lease`` taken,
    ``refund.lease`` closed), each with its key; last, only when a policy has
    alerts, the customer's outbox stream and the alert arguments (``ratelimit.alerts``)."""
    keys: list[str] = []
    args: list[int | str] = [now_ms, "" if window_ms is None else window_ms]
    alerting = False
    for i, (policy, cost) in enumerate(zip(policies, costs, strict=True)):
        keys.append(policy_key(prefix, partition, policy))
        if policy.alerting is not None:
            alerting = True
        if isinstance(policy, WindowPolicy):
            arg = f"{KIND_WINDOW} {policy.limit} {cost} {policy.enforced:d} {policy.bucket_ms} {policy.buckets}"
            back = f" {refund.units[i]} {refund.taken_ms // policy.bucket_ms}" if refund and refund.units[i] else ""
        else:
            arg = f"{KIND_QUOTA} {policy.limit} {cost} {policy.enforced:d} {policy.period_end_ms} 0"
            back = f" {refund.units[i]} 0" if refund and refund.units[i] else ""
        args.append(arg + back)
    if money is not None:
        for i, (charge, quantity) in enumerate(zip(money.charges, money.quantities, strict=True)):
            keys.append(charge_key(prefix, partition, charge.name, charge.period_start_ms))
            units = refund.charge(i) if refund is not None else 0
            back = f" r{units}" if units else ""
            args.append(f"{KIND_CHARGE} {quantity} {charge.period_end_ms} {charge.script_arg}{back}")
        if money.balance_period_start_ms is not None:
            keys.append(grants_key(prefix, partition))
            floor = f" {money.floor}" if money.floor else ""
            args.append(f"{KIND_BALANCE} {money.balance_period_start_ms}{floor}")
        cap = money.spend_cap
        if cap is not None:
            keys.append(spend_key(prefix, partition, cap.period_start_ms))
            args.append(f"{KIND_CAP} {cap.cap} {cap.hard:d} {cap.period_end_ms}")
        if money.reserves:
            keys.append(reservations_key(prefix, partition))
            positions = ",".join(str(i + 1) for i, marked in enumerate(money.reserved) if marked)
            cap_start = cap.period_start_ms if cap is not None else -1
            args.append(f"{KIND_RESERVE} {money.row_id} {money.overrun} {cap_start} {positions}")
        close = refund.lease if refund is not None else ""
        if money.lease or close:
            keys.append(leases_key(prefix, partition))
            args.append(f"{KIND_LEASE} {money.lease or '-'} {close or '-'}")
    if alerting or (money is not None and money.alerts is not None):
        keys.append(stream_key(prefix, partition))
        args.extend(alert_args(partition, policies, money))
    return keys, args
