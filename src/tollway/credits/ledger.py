"""The credit ledger in ClickHouse (``credit_ledger``, migration 0007): one entry per change of a
customer's balance that is not a request's burn. An adapter: plain functions over a clickhouse-connect
client (synchronous; async callers run them in a thread, e.g. through ``admin.warehouse_access``).

An entry's ``amount`` is signed (positive adds to the balance) with 6 places (micro-units). Entry ids are
deterministic, so a retried command or a re-run job writes each entry once, and the table is a
``ReplacingMergeTree`` ordered by ``(customer_id, entry_id)``: a re-inserted entry replaces itself, and
``credit_ledger FINAL`` counts it once::

    grant:<grant_id>                       + the granted amount, at the grant's creation
    void:<grant_id>                        - what the grant still held when voided
    expiry:<grant_id>                      - what the grant still held at its expiry (written by sync)
    rollover:<grant_id>:<period_start_ms>  - what the period boundary cut (the record's ``forfeited``)

``burn``, ``return`` and ``adjustment`` are kinds for the gateway's own entries. The burn of an admitted
request is its usage row's ``price_micros`` (``usage`` columns ``price_micros`` and ``balance_unit``):
``reconcile`` reads burns from ``usage FINAL``, never from ledger entries of kind ``burn``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

from tollway.credits.store import CustomerCredits, Removal, format_ms
from tollway.credits.units import from_micros, to_micros
from tollway.warehouse.connection import check_identifier, insert_json_rows, query_rows
from tollway.warehouse.errors import WarehouseUnavailable

TABLE: Final = "credit_ledger"
Kind = Literal["grant", "void", "expiry", "rollover", "burn", "return", "adjustment"]
KINDS: Final = ("grant", "void", "expiry", "rollover", "burn", "return", "adjustment")
NOT_SUMMED: Final = frozenset({"burn"})
"""Kinds reconcile leaves out of the ledger's sum: burns are counted from the usage rows."""


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    entry_id: str
    customer_id: str
    ts_ms: int
    kind: Kind
    grant_id: str
    amount: Decimal
    unit: str
    request_id: str = ""
    actor: str = ""
    note: str = ""

    def json_row(self) -> bytes:
        return (
            json.dumps(
                {
                    "entry_id": self.entry_id,
                    "customer_id": self.customer_id,
                    "ts": format_ms(self.ts_ms).replace("T", " ").removesuffix("Z"),
                    "kind": self.kind,
                    "grant_id": self.grant_id,
                    "amount": format(self.amount, "f"),
                    "unit": self.unit,
                    "request_id": self.request_id,
                    "actor": self.actor,
                    "note": self.note,
                },
                ensure_ascii=True,
            ).encode("ascii")
            + b"\n"
        )


@dataclass(frozen=True, slots=True)
class LedgerRow:
    entry_id: str
    kind: str
    grant_id: str
    amount: Decimal


def grant_entry_id(grant_id: str) -> str:
    return f"grant:{grant_id}"


def removal_entry_id(removal: Removal) -> str:
    return f"{'void' if removal.kind == 'voided' else 'expiry'}:{removal.grant_id}"


def rollover_entry_id(grant_id: str, period_start_ms: int) -> str:
    return f"rollover:{grant_id}:{period_start_ms}"


def missing_entries(
    credits: CustomerCredits, existing: Sequence[LedgerRow], grant_ids: Iterable[str] | None = None
) -> list[LedgerEntry]:
    """The entries Redis state calls for that the ledger lacks (of ``grant_ids`` only, when given): each
    grant's creation, its void or expiry, and the rollover cut the ledger has not recorded yet."""
    have = {row.entry_id for row in existing}
    wanted = set(credits.records) | set(credits.infos) | set(credits.removals)
    if grant_ids is not None:
        wanted &= set(grant_ids)
    customer = credits.customer_id
    out: list[LedgerEntry] = []
    for grant_id in sorted(wanted):
        info = credits.infos.get(grant_id)
        unit = info.unit if info else credits.unit
        if info is not None and grant_entry_id(grant_id) not in have:
            out.append(
                LedgerEntry(
                    grant_entry_id(grant_id),
                    customer,
                    info.created_ms,
                    "grant",
                    grant_id,
                    info.amount,
                    unit,
                    actor=info.created_by,
                    note=info.reason,
                )
            )
        record = credits.records.get(grant_id)
        removal = credits.removals.get(grant_id) if record is None else None
        forfeited, rolled_ms = (
            (record.forfeited, record.rolled_ms)
            if record is not None
            else (removal.forfeited, removal.rolled_ms)
            if removal is not None
            else (0, 0)
        )
        rollover_id = rollover_entry_id(grant_id, rolled_ms)
        if forfeited and rollover_id not in have:
            recorded = -sum((r.amount for r in existing if r.kind == "rollover" and r.grant_id == grant_id), Decimal(0))
            cut = from_micros(forfeited) - recorded
            if cut:
                out.append(LedgerEntry(rollover_id, customer, rolled_ms, "rollover", grant_id, -cut, unit))
        if removal is not None and removal_entry_id(removal) not in have:
            kind: Kind = "void" if removal.kind == "voided" else "expiry"
            out.append(
                LedgerEntry(
                    removal_entry_id(removal),
                    customer,
                    removal.at_ms,
                    kind,
                    grant_id,
                    -from_micros(removal.remaining),
                    unit,
                    actor=removal.actor,
                )
            )
    return out


# --- ClickHouse --------------------------------------------------------------------------------------


def _table(database: str) -> str:
    return f"{check_identifier(database)}.{TABLE}"


def check_table(client: Any, database: str) -> None:
    """``WarehouseUnavailable`` unless the ledger table exists (the migrations have run)."""
    found = query_rows(client, "EXISTS TABLE {db:Identifier}.credit_ledger", {"db": check_identifier(database)})
    if not found or not found[0][0]:
        raise WarehouseUnavailable(
            f"table {database}.{TABLE} does not exist: run `tollway db migrate` against this ClickHouse"
        )


def insert_entries(client: Any, database: str, entries: Sequence[LedgerEntry]) -> int:
    """Write ``entries`` (re-writing one already there changes nothing under FINAL)."""
    if not entries:
        return 0
    return insert_json_rows(client, check_identifier(database), TABLE, b"".join(e.json_row() for e in entries))


def customer_rows(client: Any, database: str, customer_id: str) -> list[LedgerRow]:
    rows = query_rows(
        client,
        f"SELECT entry_id, kind, grant_id, amount FROM {_table(database)} FINAL "  # noqa: S608 (checked identifier)
        "WHERE customer_id = {customer:String} ORDER BY entry_id",
        {"customer": customer_id},
    )
    return [LedgerRow(str(r[0]), str(r[1]), str(r[2]), Decimal(r[3])) for r in rows]


def all_rows(client: Any, database: str, customer_id: str | None = None) -> dict[str, list[LedgerRow]]:
    """Every customer's ledger rows (or one customer's), by customer."""
    where = "WHERE customer_id = {customer:String} " if customer_id is not None else ""
    rows = query_rows(
        client,
        f"SELECT customer_id, entry_id, kind, grant_id, amount FROM {_table(database)} FINAL "  # noqa: S608
        + where
        + "ORDER BY customer_id, entry_id",
        {"customer": customer_id} if customer_id is not None else None,
    )
    out: dict[str, list[LedgerRow]] = {}
    for r in rows:
        out.setdefault(str(r[0]), []).append(LedgerRow(str(r[1]), str(r[2]), str(r[3]), Decimal(r[4])))
    return out


def usage_burns(client: Any, database: str, customer_id: str | None = None) -> dict[str, int]:
    """Σ ``price_micros`` of the admitted prepaid requests (``balance_unit`` not empty), per customer,
    from ``usage FINAL`` (each request once). Empty when ``usage`` has no ``price_micros`` column yet
    (no request could have burned a balance before it existed)."""
    db = check_identifier(database)
    columns = query_rows(
        client,
        "SELECT count() FROM system.columns WHERE database = {db:String} AND table = 'usage' "
        "AND name IN ('price_micros', 'balance_unit')",
        {"db": db},
    )
    if not columns or int(columns[0][0]) < 2:
        return {}
    where = "AND customer_id = {customer:String} " if customer_id is not None else ""
    rows = query_rows(
        client,
        f"SELECT customer_id, sum(price_micros) FROM {db}.usage FINAL "  # noqa: S608 (checked identifier)
        "WHERE outcome = 'admitted' AND balance_unit != '' " + where + "GROUP BY customer_id",
        {"customer": customer_id} if customer_id is not None else None,
    )
    return {str(r[0]): int(r[1]) for r in rows}


def summed(rows: Sequence[LedgerRow], held: Mapping[str, object]) -> int:
    """The ledger's side of the identity, in micro-units: Σ amount over the entries, except burns (read
    from usage) and the rollover entries of grants still held (their cut is the record's
    ``forfeited``, on the Redis side)."""
    total = Decimal(0)
    for row in rows:
        if row.kind in NOT_SUMMED or (row.kind == "rollover" and row.grant_id in held):
            continue
        total += row.amount
    return to_micros(total)
