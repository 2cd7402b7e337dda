"""The limiter on Redis (or Valkey, or a Redis Cluster): one ``consume.lua`` EVALSHA per check.

Counters (``{p}`` is the prefix, ``tw:`` by default; all keys of one check share the slot of
``{<partition>}``)::

    {p}rl:{<partition>}:<policy>                    hash    bucket index -> units; PEXPIRE W + g on write
    {p}q:{<partition>}:<policy>:<period_start_ms>   string  units this period; expires a day after the period

Window buckets are counted on the Redis server's clock (``TIME`` inside the script, returned with the
verdict as ``Verdict.at_ms``): every Tollway process shares it, so skew between Tollway hosts cannot make
one process miss another's units. On a cluster each shard has its own clock, but a customer's keys share
a slot, so each customer's windows see one clock. Quota periods stay on the caller's ``now_ms``, the clock
that also dates the usage rows billed in those periods. TTLs are relative, so a skewed Redis clock cannot
expire a counter early. ``server_time=False`` counts windows at the caller's ``now_ms`` instead (tests that
drive time, and processes run with an injected clock).

Money (``ratelimit.money``), beside them: real-time charges' period quantities ``{p}cq:…``, the grants
hash ``{p}cr:{<partition>}`` and the period's spend ``{p}sp:…``, read and written by the same script call;
reservations ``{p}rv:{<partition>}`` (``ratelimit.reservations``), written by it and settled by ``settle.lua``.

Events (``ratelimit.alerts``; docs/decisions/0007-exactly-once-threshold-events.md): a check whose policies
have alert levels, or whose plan has money, also names the customer's outbox stream ``{p}ev:{<partition>}``;
the script appends each level crossed and each money event there once (its once-marker
``{p}evo:{<partition>}:<id>``, the funding epoch ``{p}cre:{<partition>}``, all in the customer's slot) and
says how many it appended; then the customer is added to the ready set ``{p}ev:ready`` (another slot),
in a task of its own, never delaying the verdict. A settlement (``settle.lua``) of a reservation whose
record carries its check's money alerts names the stream too and appends the money events of its overrun.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from redis.exceptions import RedisError

from tollway.notifications.keys import stream_key
from tollway.notifications.outbox import announce
from tollway.ratelimit.coalescer import DEFAULT_MAX_BATCH, DirectRunner, PipelineCoalescer, ScriptRunner
from tollway.ratelimit.errors import LimiterUnavailable
from tollway.ratelimit.keys import charge_key, checked_costs, grants_key, spend_key
from tollway.ratelimit.money import Money, MoneyState, decide
from tollway.ratelimit.policies import Policy
from tollway.ratelimit.refunds import Refund
from tollway.ratelimit.reservations import (
    Reservation,
    Settlement,
    check_reservation,
    checked_actual,
    reservations_key,
)
from tollway.ratelimit.script import SETTLE_SCRIPT, script_keys_and_args
from tollway.ratelimit.verdict import Counted, Verdict, build_verdict
from tollway.redis_types import RedisClient

log = logging.getLogger(__name__)

_FORGET = (
    "local v = redis.call('HGET', KEYS[1], ARGV[1]) "
    "if v and string.sub(v, 1, 1) == 'S' then return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0"
)


class RedisLimiter:
    """``Limiter`` on Redis. ``coalesce=False`` sends one EVALSHA per check instead of batching."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str = "tw:",
        coalesce: bool = True,
        max_batch: int = DEFAULT_MAX_BATCH,
        timeout_s: float | None = None,
        server_time: bool = True,
    ) -> None:
        """``timeout_s`` bounds every check: past it, :class:`LimiterUnavailable` (the caller's outage
        policy decides). With coalescing it is one timer per pipeline, not one per check.
        ``server_time``: count windows on the server's clock (False: on the caller's ``now_ms``)."""
        self._prefix = prefix
        self._server_time = server_time
        self._redis = redis
        self._timeout = timeout_s
        self._announcing: set[asyncio.Task[None]] = set()
        self._settle_runner = DirectRunner(redis, SETTLE_SCRIPT, timeout_s=timeout_s)
        self._runner: ScriptRunner = (
            PipelineCoalescer(redis, max_batch=max_batch, timeout_s=timeout_s)
            if coalesce
            else DirectRunner(redis, timeout_s=timeout_s)
        )

    @property
    def runner(self) -> ScriptRunner:
        return self._runner

    @property
    def checks(self) -> int:
        return self._runner.checks

    @property
    def round_trips(self) -> int:
        return self._runner.round_trips

    async def consume(
        self,
        partition: str,
        policies: Sequence[Policy],
        cost: int | Sequence[int],
        now_ms: int,
        refund: Refund | None = None,
        money: Money | None = None,
    ) -> Verdict:
        costs = checked_costs(partition, policies, cost)
        if not policies and money is None:
            return Verdict(admitted=True, states=(), at_ms=now_ms)
        if refund is not None:
            refund.check(policies, money)
        if money is not None and money.reserves:
            check_reservation(money)
        policies = tuple(policies)
        window_ms = None if self._server_time else now_ms
        keys, args = script_keys_and_args(self._prefix, partition, policies, costs, now_ms, refund, window_ms, money)
        reply = await self._runner.run(keys, args)
        try:
            if len(reply) != 2 + len(keys) * 3:
                raise ValueError(f"reply of {len(reply)} numbers for {len(keys)} policies and money arguments")
            if len(args) > len(keys) + 2 and reply[-4] > 0:
                self._announce(partition)  # the script appended threshold events to the customer's outbox
            counted = [Counted(*reply[1 + 3 * i : 4 + 3 * i]) for i in range(len(policies))]
            state = None if money is None else _money_state(money, policies, costs, counted, reply)
            return build_verdict(policies, costs, now_ms, reply[0] == 1, counted, reply[-1], state)
        except ValueError as exc:
            raise LimiterUnavailable(f"unexpected reply from the limiter script: {exc}") from exc

    def _announce(self, partition: str) -> None:
        """Add the customer to the outbox's ready set, off the check's path (fire and forget: the verdict
        never waits for it; a lost announcement is found by the dispatcher's periodic stream scan)."""
        task = asyncio.get_running_loop().create_task(self._add_ready(partition))
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _add_ready(self, partition: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await announce(self._redis, self._prefix, partition)
        except Exception as exc:  # never let a lost announcement reach a check: the scan delivers late
            log.warning("outbox announcement for customer %s failed: %s", partition, type(exc).__name__)

    async def refund(
        self, partition: str, policies: Sequence[Policy], refund: Refund, now_ms: int, money: Money | None = None
    ) -> None:
        if money is not None and (refund.lease or any(refund.charge_units)):
            await self.consume(partition, policies, 0, now_ms, refund, money.scaled(0))
        elif any(refund.units):
            refund.check(policies, money)
            await self.consume(partition, policies, 0, now_ms, Refund(refund.units, refund.taken_ms))

    async def settle(
        self, partition: str, row_id: str, actual: Sequence[int] | Mapping[str, int], now_ms: int
    ) -> Settlement:
        """Settle the reservation of ``row_id`` with the ``actual`` quantities (one per reserved charge, in
        the record's order), exactly once (``ratelimit.reservations``). Two round trips: the record is
        read to name the keys, then ``settle.lua`` settles it if it is still open (and appends the money
        events of its overrun to the customer's outbox when the record carries its check's money alerts;
        then the customer is announced, as by ``consume``). Raises ``LimiterUnavailable`` if Redis cannot
        be reached (nothing or everything was settled: call again)."""
        key = reservations_key(self._prefix, partition)
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._redis.hget(key, row_id)
        except TimeoutError as exc:
            raise LimiterUnavailable(f"no answer within {self._timeout} s") from exc
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if raw is None:
            return Settlement(row_id, "unknown")
        text = raw.decode("ascii") if isinstance(raw, bytes) else str(raw)
        if text.startswith("S"):
            return Settlement.decode(row_id, text)
        record = Reservation.decode(row_id, text)
        quantities = checked_actual(record, actual)
        cap_start = record.cap_period[0] if record.cap_period is not None else None
        keys = [
            key,
            grants_key(self._prefix, partition),
            spend_key(self._prefix, partition, cap_start) if cap_start is not None else key,
            *(charge_key(self._prefix, partition, c.charge.name, c.charge.period_start_ms) for c in record.charges),
        ]
        args: list[int | str] = [now_ms, row_id, " ".join(str(q) for q in quantities)]
        if record.alerts is not None:
            keys.append(stream_key(self._prefix, partition))
            args.append(partition)
        reply = await self._settle_runner.run(keys, args)
        status = {1: "settled", 0: "already"}.get(reply[0], "unknown")
        if status == "unknown":
            return Settlement(row_id, "unknown")
        if len(reply) > 7 and reply[7] > 0:
            self._announce(partition)  # the settlement appended money events to the customer's outbox
        return Settlement(row_id, "settled" if status == "settled" else "already", *reply[1:7])

    async def held_reservations(self) -> dict[str, dict[str, str]]:
        """Every customer's reservations hash (SCAN of ``{p}rv:{*}``; on a cluster, the client's scan)."""
        out: dict[str, dict[str, str]] = {}
        async for raw in self._redis.scan_iter(match=f"{self._prefix}rv:{{*}}", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            partition = key[len(self._prefix) + 4 : -1]
            held = await self.reservations(partition)
            if held:
                out[partition] = held
        return out

    async def forget_settled(self, partition: str, row_id: str) -> bool:
        """Delete the settlement marker of ``row_id`` (never an open record); True if one was deleted."""
        deleted = await self._redis.eval(_FORGET, 1, reservations_key(self._prefix, partition), row_id)
        return bool(deleted)

    async def reservations(self, partition: str) -> dict[str, str]:
        """The customer's reservations hash (row id -> open record or settlement marker)."""
        raw = await self._redis.hgetall(reservations_key(self._prefix, partition))
        return {
            (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
            for k, v in raw.items()
        }

    async def aclose(self) -> None:
        """Wait for checks (and outbox announcements) in flight. The Redis client is the caller's to close."""
        await self._runner.aclose()
        if self._announcing:
            await asyncio.gather(*self._announcing, return_exceptions=True)


def _money_state(
    money: Money, policies: Sequence[Policy], costs: Sequence[int], counted: Sequence[Counted], reply: Sequence[int]
) -> MoneyState:
    """The money side of a verdict from the script's numbers (three per money argument, after the
    policies'), decided as the model does (``money.decide``)."""
    at = 1 + 3 * len(policies)
    charges = len(money.charges)
    before = tuple(reply[at + 3 * i] for i in range(charges))
    price = sum(reply[at + 3 * i + 1] for i in range(charges))
    at += 3 * charges
    balance = burned = None
    if money.prepaid:
        balance, burned = reply[at], reply[at + 1]
        at += 3
    spent = None
    if money.spend_cap is not None:
        spent = reply[at]
        if reply[at + 1] != price:
            raise ValueError(f"the cap was checked against {reply[at + 1]}, the price is {price}")
    fit = not any(
        p.enforced and c > 0 and raw.total + c > p.limit for p, c, raw in zip(policies, costs, counted, strict=True)
    )
    state = decide(money, fit, before, price, balance, spent)
    if burned is not None and burned != (price if reply[0] == 1 else 0):
        raise ValueError(f"burned {burned} for a price of {price} (admitted: {reply[0]})")
    return state
