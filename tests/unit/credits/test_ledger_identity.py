"""The reconcile identity over random timelines (pure: Redis and the ledger modelled in memory).

Grants are made (entry written, or its write lost), burned (a usage row each), cut by rollovers at
period boundaries, voided (the void writes that grant's missing entries) and swept at expiry by sync
(which writes every missing entry). After every step the Redis figure (Σ remaining + forfeited of held
records) must equal the ledger figure (``ledger.summed`` − burns), unless a grant entry was lost and no
sync or retry has written it since; after a final sync it always holds, and a second sync writes nothing.
Also: amounts typed on the command line, and the stored forms round-trip.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollway.cli.credits import parse_amount
from tollway.credits.grants import GrantState
from tollway.credits.ledger import LedgerEntry, LedgerRow, missing_entries, summed
from tollway.credits.store import CustomerCredits, GrantInfo, Removal
from tollway.credits.units import from_micros

DAY = 86_400_000


class Model:
    def __init__(self) -> None:
        self.records: dict[str, GrantState] = {}
        self.infos: dict[str, GrantInfo] = {}
        self.removals: dict[str, Removal] = {}
        self.ledger: dict[str, LedgerEntry] = {}
        self.burned = 0
        self.lost = False

    def credits(self) -> CustomerCredits:
        return CustomerCredits("acme", dict(self.records), dict(self.infos), dict(self.removals), "USD")

    def rows(self) -> list[LedgerRow]:
        return [LedgerRow(e.entry_id, e.kind, e.grant_id, e.amount) for e in self.ledger.values()]

    def write(self, grant_ids: list[str] | None = None) -> int:
        entries = missing_entries(self.credits(), self.rows(), grant_ids)
        for entry in entries:
            assert entry.entry_id not in self.ledger
            self.ledger[entry.entry_id] = entry
        return len(entries)

    def remove(self, grant_id: str, kind: str, at_ms: int) -> None:
        state = self.records.pop(grant_id)
        self.removals[grant_id] = Removal(
            grant_id,
            kind,
            state.remaining,
            state.forfeited,
            state.rolled_ms,
            at_ms,
            "t",  # type: ignore[arg-type]
        )

    def redis_figure(self) -> int:
        return self.credits().held_total()

    def ledger_figure(self) -> int:
        return summed(self.rows(), self.records) - self.burned


step = st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 10**8), st.sampled_from([None, 0, 10**6, 5 * 10**6]), st.booleans()),
    st.tuples(st.just("burn"), st.integers(0, 20), st.integers(1, 3 * 10**6)),
    st.tuples(st.just("period"), st.integers(1, 40)),
    st.tuples(st.just("void"), st.integers(0, 20)),
    st.tuples(st.just("expire"), st.integers(0, 20)),
    st.tuples(st.just("sync")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_redis_and_the_ledger_agree_over_any_timeline(steps: list[tuple[object, ...]]) -> None:
    model = Model()
    now = 1_700_000_000_000
    count = 0
    for item in steps:
        kind = item[0]
        held = sorted(model.records)
        if kind == "grant":
            _, micros, rollover, lose = item
            count += 1
            grant_id = f"g{count}"
            info = GrantInfo(
                grant_id,
                from_micros(int(micros)),  # type: ignore[call-overload]
                "USD",
                now,
                now + 30 * DAY,
                0,
                from_micros(rollover) if rollover is not None else None,  # type: ignore[arg-type]
                "",
                now,
                "t",
            )
            model.infos[grant_id] = info
            model.records[grant_id] = info.record(now)
            if lose:
                model.lost = True
            else:
                model.write([grant_id])
        elif kind == "burn" and held:
            _, pick, price = item
            grant_id = held[int(pick) % len(held)]  # type: ignore[call-overload]
            state = model.records[grant_id]
            taken = min(state.remaining, int(price))  # type: ignore[call-overload]
            model.records[grant_id] = replace(state, remaining=state.remaining - taken)
            model.burned += taken
        elif kind == "period":
            now += int(item[1]) * DAY  # type: ignore[call-overload]
            model.records = {g: s.rolled_over(now) for g, s in model.records.items()}
        elif kind == "void" and held:
            grant_id = held[int(item[1]) % len(held)]  # type: ignore[call-overload]
            model.remove(grant_id, "voided", now)
            model.write([grant_id])
        elif kind == "expire":
            for grant_id in held:
                expires = model.records[grant_id].expires_ms
                if expires and expires <= now:
                    model.remove(grant_id, "expired", expires)
            model.write()
            model.lost = False
        elif kind == "sync":
            model.write()
            model.lost = False
        if not model.lost:
            assert model.redis_figure() == model.ledger_figure()
    model.write()
    assert model.redis_figure() == model.ledger_figure()
    assert model.write() == 0  # a second sync writes nothing


@given(st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=6, allow_nan=False))
def test_plain_decimals_are_parsed_exactly(value: Decimal) -> None:
    text = format(value, "f")
    assert parse_amount("AMOUNT", text) == value


@given(st.text(max_size=12))
def test_anything_but_ascii_decimal_text_is_refused(text: str) -> None:
    import re

    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
        assert parse_amount("AMOUNT", text) == Decimal(text)
    else:
        with pytest.raises(ValueError, match="not a decimal number in ASCII digits"):
            parse_amount("AMOUNT", text)


@pytest.mark.parametrize("text", ["١٠", "10.", ".5", "1e3", "1_000", " 10", "+5", "NaN", "Infinity", "0x10", "１０"])
def test_lookalike_amounts_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="ASCII digits"):
        parse_amount("AMOUNT", text)


@given(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1e9"), places=2),
    st.one_of(st.none(), st.integers(0, 2**45)),
    st.integers(-(10**6), 10**6),
    st.one_of(st.none(), st.decimals(min_value=Decimal(0), max_value=Decimal("1e9"), places=2)),
    st.text(max_size=30),
)
def test_grant_metadata_round_trips(
    amount: Decimal, expires: int | None, priority: int, rollover: Decimal | None, reason: str
) -> None:
    info = GrantInfo(
        "g", amount, "USD", 1_700_000_000_123, expires, priority, rollover, reason, 1_700_000_000_000, "ops"
    )
    assert GrantInfo.from_json("g", info.to_json()) == info


@given(st.integers(0, 2**53), st.integers(0, 2**53), st.integers(0, 2**45), st.text(max_size=20))
def test_removals_round_trip(remaining: int, forfeited: int, at: int, actor: str) -> None:
    actor = " ".join(actor.split())  # what the store's scripts write: no newline
    removal = Removal("g", "voided", remaining, forfeited, at, at, actor)
    assert Removal.decode("g", removal.encode()) == removal


def test_argparse_never_sees_the_amount_as_an_option() -> None:
    from tollway.cli.main import build_parser

    args = build_parser().parse_args(["credits", "grant", "acme", "-5", "--unit", "USD"])
    assert isinstance(args, argparse.Namespace)
    assert args.amount == "-5"
