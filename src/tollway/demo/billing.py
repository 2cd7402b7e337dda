"""Stage 5 of ``make demo``: how SaaS teams bill (issue 16), with the CLI on the demo's Valkey and ClickHouse.

Runs once the servers have stopped (the embedded ClickHouse belongs to one process at a time), after
stage 4 billed ``initech`` on ``pro``:

- **a price change is a new plan version**: the demo publishes ``pro`` version 2 (the platform fee 49.00
  → 59.00) in a copy of the catalog (``tollway plans publish`` stamps both versions); ``bill --dry-run``
  shows that it re-prices nobody; a new subscriber (``wayne``) is sold ``pro@2``; ``subscriptions migrate
  --preview`` shows initech's current and next invoice before and after, then the migration moves
  initech to ``pro@2`` from its next period on, its current invoice unchanged;
- **a trial converted early, and an add-on**: ``soylent`` subscribes to ``startup`` on 1 November 2026
  and gets its catalog trial (``startup:trial``, 14 days, free); ``set --end-phase`` converts it on the
  8th at 12:00; 3 calls packs (an add-on) are held from the 11th to the 26th. November's invoice has a
  section per subscription: the trial 0.00, ``startup`` prorated from the conversion, the packs
  prorated (a past month, so the figures are the same whenever the demo runs);
- **a quarterly plan and a coupon carried across invoices**: ``umbrella`` on ``team`` (per calendar
  quarter, a 300.00 welcome coupon) since the start of last quarter: last quarter's invoice, finalized,
  uses 270.00 of the coupon; this quarter's uses the 30.00 left;
- **progressive (threshold) invoicing**: ``stark`` on ``scale`` (an interim invoice whenever 100.00 is
  owed) called the API in stage 2; ``bill --progressive`` issues an interim invoice for what the month
  owes so far, and the month's invoice bills the rest (its total less the interim invoice).

Each step prints what it shows and ``[ok]`` or ``[UNEXPECTED, …]``; :func:`run` returns the number of
unexpected results. :func:`sendable` ends the demo: soylent's November invoice (a past month) finalized,
as the PDF a finance team sends — its path printed, its number and due date read from the stored
document (finalization sets them) and found in the PDF's text.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import yaml

from tollway.plans.versions import BODY_FIELDS

PRICED: Final = "pro"  # the plan whose price changes
OLD_FEE: Final = Decimal("49.00")
NEW_FEE: Final = Decimal("59.00")
EXISTING: Final = "initech"  # on pro since the start of the month (stage 4)
NEWCOMER: Final = "wayne"  # subscribes after the price change
QUARTERLY: Final = ("umbrella", "team")
PROGRESSIVE: Final = ("stark", "scale")
PROGRESSIVE_CALLS: Final = 4  # stark's calls through Envoy in stage 2: 99.00 + 4 × 0.50 = 101.00 ≥ 100.00
# Phases and add-ons: a past month of 30 days (720 h), so the figures are fixed whenever the demo runs.
TRIAL: Final = ("soylent", "startup")  # startup: a 14-day free trial, then 30.00 a month; calls packs on top
TRIAL_MONTH: Final = "2026-11"
CONVERTED: Final = "2026-11-08T12:00:00Z"  # the trial ends early: 7.5 of its 14 days
PACKS: Final = (3, "2026-11-11T00:00:00Z", "2026-11-26T00:00:00Z")  # 3 calls packs (10.00 each) for 15 days
TRIAL_SECTIONS: Final = [  # (section, subtotal): the trial free, the plan 30.00 × 22.5/30, packs 3 × 10.00 × 15/30
    ("startup:trial", Decimal("0.00")),
    ("startup", Decimal("22.50")),
    ("calls-pack × 3", Decimal("15.00")),
]
PUBLISHED: Final = "catalog-pro-2.yaml"  # the catalog with pro's version 2, in the demo's work directory
_WIDTH: Final = 52

SELLER_ENV: Final = {
    "TOLLWAY_SELLER_NAME": "Tollway Demo Ltd",
    "TOLLWAY_SELLER_ADDRESS": '["1 Demo Street", "London EC1A 1AA"]',
    "TOLLWAY_SELLER_COUNTRY": "GB",
    "TOLLWAY_SELLER_TAX_ID": "GB000000000",
    "TOLLWAY_SELLER_EMAIL": "billing@tollway.example",
}
"""The seller the demo's finalized invoices name (``tollway bill --finalize`` needs one: docs/billing.md,
"Numbers, issue and due dates")."""


@dataclass(frozen=True)
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def cli(env: dict[str, str], *args: str) -> Done:
    """``tollway ARGS`` as a user would type it (printed), in the demo's environment."""
    print(f"  $ tollway {' '.join(a for a in args if a != '--json')}")
    done = subprocess.run(
        [sys.executable, "-m", "tollway", *args], env=env, capture_output=True, text=True, check=False
    )
    return Done(done.returncode, done.stdout, done.stderr.strip())


def verdict(label: str, wrong: str | None) -> int:
    print(f"  {label}  [{'ok' if wrong is None else 'UNEXPECTED, ' + wrong}]")
    return int(wrong is not None)


def month_start(now: datetime) -> str:
    return f"{now:%Y-%m}-01T00:00:00Z"


def quarter_months(now: datetime) -> tuple[str, str]:
    """The first months of last calendar quarter and of this one: ``(2026-07, 2026-10)`` in December 2026."""
    first = (now.month - 1) // 3 * 3 + 1
    year, previous = (now.year, first - 3) if first > 3 else (now.year - 1, first + 9)
    return f"{year:04d}-{previous:02d}", f"{now.year:04d}-{first:02d}"


def subscribe(env: dict[str, str], catalog: Path, now: datetime) -> dict[str, object]:
    """Before stage 1: the stage's customers subscribe (and stark gets the key it calls with in stage 2)."""
    last_quarter, _ = quarter_months(now)
    customer, plan = QUARTERLY
    _json(cli(env, "subscriptions", "set", "--customer", customer, "--plan", plan, "--catalog", str(catalog),
              "--start", f"{last_quarter}-01T00:00:00Z", "--json"))  # fmt: skip
    customer, plan = PROGRESSIVE
    key: dict[str, object] = _json(cli(env, "keys", "create", "--customer", customer, "--json"))
    _json(cli(env, "subscriptions", "set", "--customer", customer, "--plan", plan, "--catalog", str(catalog),
              "--start", month_start(now), "--json"))  # fmt: skip
    return key


def _json(done: Done) -> Any:
    if done.code != 0:
        raise SystemExit(f"tollway failed: {done.err}")
    return done.json()


def publish_price_change(catalog: Path, target: Path) -> None:
    """``catalog`` with ``pro``'s body moved under ``versions: {1: …}`` and a version 2 at the new fee,
    written to ``target`` (a plain catalog file, not a ConfigMap)."""
    document = yaml.safe_load(catalog.read_text())
    plans = document.get("plans") if isinstance(document, dict) else None
    if not isinstance(plans, dict) or not isinstance(plans.get(PRICED), dict):
        raise SystemExit(f"{catalog}: stage 5 needs a plain catalog file (not a ConfigMap) with plan {PRICED!r}")
    plan = plans[PRICED]
    body = {name: plan.pop(name) for name in BODY_FIELDS if name in plan}
    newer = copy.deepcopy(body)
    (platform,) = [c for c in newer["pricing"]["charges"] if c["id"] == "platform"]
    if Decimal(str(platform["amount"])) != OLD_FEE:
        raise SystemExit(f"{catalog}: plan {PRICED}'s platform fee is not {OLD_FEE}")
    platform["amount"] = str(NEW_FEE)
    plan["versions"] = {1: body, 2: newer}
    document["metadata"]["version"] = f"{document['metadata']['version']}+{PRICED}-2"
    target.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))


def invoice(env: dict[str, str], invoices: Path, *args: str) -> dict[str, Any] | None:
    """``tollway bill ARGS --out INVOICES``; the (last) invoice document it wrote, its lines printed."""
    done = cli(env, "bill", *args, "--out", str(invoices))
    if done.code != 0 or not done.out.strip():
        print(f"  [UNEXPECTED, tollway bill failed] {done.err}")
        return None
    path = invoices / f"{done.out.splitlines()[-1].split()[0]}.json"
    if not path.is_file():
        print(f"  [UNEXPECTED, no invoice] {done.out.strip()}")
        return None
    document: dict[str, Any] = json.loads(path.read_text())
    for line in document["lines"]:
        print(f"    {line['description']:<{_WIDTH}} {line['quantity'] or '':>8} {line['amount']:>10}")
    print(f"    {'total':<{_WIDTH}} {'':>8} {document['total']:>10} {document['currency']}")
    return document


def _platform(document: dict[str, Any] | None) -> Decimal | None:
    if document is None:
        return None
    amounts = [Decimal(line["amount"]) for line in document["lines"] if line.get("charge_id") == "platform"]
    return amounts[0] if len(amounts) == 1 else None


def versions(env: dict[str, str], catalog: Path, work: Path, invoices: Path, now: datetime) -> tuple[int, Path]:
    """The price change, grandfathering, a new subscriber on the new version, a migration preview and the
    migration. Returns the failures and the catalog with the new version (the one in force from now on)."""
    month = f"{now:%Y-%m}"
    published = work / PUBLISHED
    publish_price_change(catalog, published)
    print(f"  {PRICED} version 2 ({published.name}): the platform fee {OLD_FEE} → {NEW_FEE} a month")
    done = cli(env, "plans", "publish", str(published))
    stamps = done.out.splitlines()
    print("\n".join(f"    {line.split(': ', 1)[-1]}" for line in stamps if f"{PRICED}@" in line))
    print(f"    (and {sum(f'{PRICED}@' not in line for line in stamps)} unversioned plans, each its own version 1)")
    failures = verdict("every version stamped (published: sha256:…)", None if done.code == 0 else done.err)
    priced = {**env, "TOLLWAY_CATALOG": str(catalog)}
    done = cli(priced, "bill", "--period", month, "--dry-run", "--plans", str(published))
    print("\n".join(f"    {line}" for line in [*done.out.splitlines(), *done.err.splitlines()]))
    rows = {line.split()[0]: line.split() for line in done.out.splitlines()[1:] if line.strip()}
    # a customer on a plan without pricing (acme-corp on free) has nothing to re-rate: not a row, exit status 0
    free = not done.err.strip()
    unchanged = done.code == 0 and free and EXISTING in rows and all(r[3] == "0.00" for r in rows.values())
    failures += verdict(
        f"the new version re-prices nobody: {EXISTING} and the others stay on version 1",
        None if unchanged else f"got {done.out or done.err}",
    )

    after = {**env, "TOLLWAY_CATALOG": str(published)}
    sold = cli(after, "subscriptions", "set", "--customer", NEWCOMER, "--plan", PRICED, "--catalog", str(published),
               "--start", month_start(now), "--json")  # fmt: skip
    plan_id = sold.json().get("plan_id") if sold.code == 0 else sold.err
    failures += verdict(f"{NEWCOMER} is sold {plan_id}", None if plan_id == f"{PRICED}@2" else f"wanted {PRICED}@2")
    newcomer = invoice(after, invoices, "--period", month, "--customer", NEWCOMER)
    failures += verdict(
        f"{NEWCOMER} pays {NEW_FEE}", None if _platform(newcomer) == NEW_FEE else f"platform {_platform(newcomer)}"
    )

    target = f"{PRICED}@2"
    preview = cli(after, "subscriptions", "migrate", "--customer", EXISTING, "--to", target, "--preview", "--json")
    periods = preview.json()["preview"][0]["invoices"] if preview.code == 0 else []
    for period in periods:
        old, new = period["before"], period["after"]
        print(
            f"    {period['period']:<8} period from {period['start']}: "
            f"{old['total'] if old else '-'} → {new['total'] if new else '-'} (difference {period['difference']})"
        )
    shape = [(p["period"], p["difference"] == "0.00") for p in periods]
    failures += verdict(
        "preview: the current invoice unchanged, the next one at the new price (nothing written)",
        None if shape == [("current", True), ("next", False)] else f"got {preview.out or preview.err}",
    )
    moved = cli(after, "subscriptions", "migrate", "--customer", EXISTING, "--to", target, "--json")
    migrated = moved.json()["migrated"] if moved.code == 0 else []
    when = migrated[0]["effective_at"] if migrated else moved.err
    next_month = f"{now.year + now.month // 12:04d}-{now.month % 12 + 1:02d}-01T00:00:00Z"
    failures += verdict(
        f"{EXISTING} moves to {target} from {when}, its next period",
        None if migrated and migrated[0]["scheduled"] and when == next_month else f"wanted {next_month}",
    )
    return failures, published


def trial(env: dict[str, str], catalog: Path) -> int:
    """A new subscriber gets its plan's catalog trial (``startup:trial``, 14 days), then converts early with
    ``set --end-phase``: the trial ends then and the plan is charged from then on."""
    customer, plan = TRIAL
    start = f"{TRIAL_MONTH}-01T00:00:00Z"
    sold = cli(env, "subscriptions", "set", "--customer", customer, "--plan", plan, "--catalog", str(catalog),
               "--start", start, "--json")  # fmt: skip
    changes = sold.json()["plan_changes"] if sold.code == 0 else []
    ends = [(c["from"], c["at"], c["to"]) for c in changes if c.get("phase")]
    shown = ", ".join(f"{held} from {start} until {at}, then {to}" for held, at, to in ends) or sold.err
    failures = verdict(
        f"{customer} gets {plan}'s 14-day trial: {shown}",
        None if ends == [(f"{plan}:trial", f"{TRIAL_MONTH}-15T00:00:00Z", plan)] else "wanted a 14-day trial",
    )
    converted = cli(env, "subscriptions", "set", "--customer", customer, "--plan", plan, "--end-phase",
                    "--effective", CONVERTED, "--catalog", str(catalog), "--json")  # fmt: skip
    changes = converted.json()["plan_changes"] if converted.code == 0 else []
    ended = [(c["from"], c["at"], c["to"]) for c in changes]
    return failures + verdict(
        f"it converts early: the trial ends at {CONVERTED}, {plan} from then on",
        None if ended == [(f"{plan}:trial", CONVERTED, plan)] else f"got {converted.out or converted.err}",
    )


def addon(env: dict[str, str], invoices: Path) -> int:
    """The trial's customer buys calls packs mid-month and removes them later; the month's invoice has a
    section per subscription: the trial (free), the plan from the conversion and the packs, each prorated."""
    customer, _ = TRIAL
    quantity, bought, removed = PACKS
    cli(env, "subscriptions", "addon", "--customer", customer, "--addon", "calls-pack",
        "--quantity", str(quantity), "--effective", bought)  # fmt: skip
    done = cli(env, "subscriptions", "addon", "--customer", customer, "--addon", "calls-pack",
               "--quantity", "0", "--effective", removed, "--json")  # fmt: skip
    spans = (
        [(a["addon"], a["quantity"], a["start"], a["end"]) for a in done.json().get("addons", [])]
        if done.code == 0
        else []
    )
    failures = verdict(
        f"{customer} holds calls-pack × {quantity} from {bought} until {removed}",
        None if spans == [("calls-pack", quantity, bought, removed)] else f"got {done.out or done.err}",
    )
    document = invoice(env, invoices, "--period", TRIAL_MONTH, "--customer", customer)
    sections = [] if document is None else [
        (p["plan"] + (f" × {p['quantity']}" if p.get("addon") else ""), Decimal(p["subtotal"]))
        for p in document["plans"]
    ]  # fmt: skip
    for part, (name, subtotal) in zip(document["plans"] if document else [], sections, strict=True):
        held = f"{part['start'][5:16]} .. {part['end'][5:16]}"
        print(f"    section {name:<16} {held:<{_WIDTH - 25}} {part['fraction']:>17} {subtotal:>10}")
    total = sum((amount for _, amount in TRIAL_SECTIONS), Decimal(0))
    wrong = None if sections == TRIAL_SECTIONS and document and Decimal(document["total"]) == total else "see above"
    return failures + verdict(
        f"a section each: the trial {sections[0][1] if sections else '-'}, {TRIAL[1]} prorated from the conversion, "
        f"the packs prorated: {total}",
        wrong,
    )


def quarterly_coupon(env: dict[str, str], invoices: Path, now: datetime) -> int:
    """A quarterly subscription; its welcome coupon used on last quarter's invoice, the rest on this one's."""
    customer, plan = QUARTERLY
    last_quarter, this_quarter = quarter_months(now)
    print(f"  {customer} on {plan} (calendar quarters, a 300.00 welcome coupon) since {last_quarter}-01:")
    first = invoice(env, invoices, "--period", last_quarter, "--customer", customer, "--finalize")
    second = invoice(env, invoices, "--period", this_quarter, "--customer", customer)
    earlier, later = _coupon(first), _coupon(second)
    if earlier is None or later is None:
        return verdict("the coupon on both invoices", "a coupon line is missing")
    (before, left), (carried, rest) = earlier, later
    wrong = None if before == Decimal("300.00") and carried == left > 0 else f"balances {earlier}, {later}"
    return verdict(f"coupon: {before} before the first invoice, {left} carried to the next, {rest} left", wrong)


def _coupon(document: dict[str, Any] | None) -> tuple[Decimal, Decimal] | None:
    if document is None:
        return None
    found = [line["coupon"] for line in document["lines"] if line.get("kind") == "coupon"]
    if len(found) != 1:
        return None
    return Decimal(found[0]["balance_before"]), Decimal(found[0]["balance_after"])


def progressive(env: dict[str, str], invoices: Path, now: datetime) -> int:
    """An interim invoice for what the month owes so far, then the month's invoice less it."""
    customer, plan = PROGRESSIVE
    month = f"{now:%Y-%m}"
    print(f"  {customer} on {plan} (99.00 a month, 0.50 a call, at least 150.00; interim invoice at 100.00):")
    interim = invoice(env, invoices, "--period", month, "--customer", customer, "--progressive")
    if interim is None or not interim.get("interim"):
        return verdict("an interim invoice", "none was issued")
    failures = verdict(f"interim invoice 1: {interim['total']} {interim['currency']}, finalized when issued", None)
    final = invoice(env, invoices, "--period", month, "--customer", customer)
    if final is None:
        return failures + 1
    full = sum(Decimal(line["amount"]) for line in final["lines"] if line.get("kind") != "interim")
    billed = Decimal(interim["total"])
    wrong = None if Decimal(final["total"]) == full - billed else f"total {final['total']}"
    return failures + verdict(
        f"the month's invoice: {full} in all, less the interim {billed}: {final['total']} still due", wrong
    )


def run(env: dict[str, str], catalog: Path, work: Path, invoices: Path, now: datetime) -> int:
    """Stage 5. ``env`` reaches the demo's Valkey and ClickHouse (``TOLLWAY_REDIS_URL``,
    ``TOLLWAY_CLICKHOUSE_DSN``); ``catalog`` is the demo's plan catalog."""
    print(f"\n  A price change: {PRICED} gets a version 2; who pays what?")
    failures, current = versions(env, catalog, work, invoices, now)
    env = {**env, "TOLLWAY_CATALOG": str(current)}  # the catalog in force after the price change
    print(f"\n  A free trial converted early, and an add-on bought mid-month and removed ({TRIAL_MONTH}):")
    failures += trial(env, current)
    failures += addon(env, invoices)
    print("\n  A quarterly plan and a coupon carried across invoices:")
    failures += quarterly_coupon(env, invoices, now)
    print("\n  Progressive invoicing: an interim invoice when the amount due crosses a threshold:")
    failures += progressive(env, invoices, now)
    return failures


def sendable(env: dict[str, str], invoices: Path) -> int:
    """The end of the demo: soylent's November invoice (its period is over) finalized with ``bill
    --finalize --out``, which writes it as JSON, HTML and PDF. Prints the PDF's path, and the number and
    due date from the stored document (set at finalization: ``SELLER_ENV`` configures the seller), and
    checks that the PDF is one and holds them (its text read with pypdf, when installed)."""
    customer, _ = TRIAL
    done = cli(env, "bill", "--period", TRIAL_MONTH, "--customer", customer, "--finalize", "--out", str(invoices))
    if done.code != 0 or not done.out.strip():
        return verdict("the finalized invoice as a PDF", f"tollway bill failed: {done.err}")
    invoice_id = done.out.splitlines()[-1].split()[0]
    document: dict[str, Any] = json.loads((invoices / f"{invoice_id}.json").read_text())
    pdf = invoices / f"{invoice_id}.pdf"
    number, due = document.get("number"), document.get("due_on")
    print(f"    invoice number  {number or '(none)'}")
    print(f"    issued on       {document.get('issued_on') or '-'}")
    print(f"    due on          {due or '(none)'}")
    print(f"    total           {document['total']} {document['currency']}")
    print(f"  invoice PDF: {pdf.resolve()}")
    data = pdf.read_bytes() if pdf.is_file() else b""
    wanted = [str(value) for value in (number, due, document["total"]) if value]
    missing = [value for value in wanted if value not in _pdf_text(data, value)]
    wrong = None
    if document["status"] != "finalized":
        wrong = f"status {document['status']}"
    elif not number or not due:
        wrong = "no invoice number or due date"
    elif not data.startswith(b"%PDF-"):
        wrong = "no PDF written"
    elif missing:
        wrong = f"not in the PDF: {', '.join(missing)}"
    return verdict(f"{customer}'s {TRIAL_MONTH} invoice, finalized, as a PDF (A4) with its number and due date", wrong)


def _pdf_text(data: bytes, fallback: str) -> str:
    """The PDF's text (pypdf, a development dependency); ``fallback`` when pypdf is not installed."""
    try:
        import pypdf
    except ImportError:
        return fallback
    import io

    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages) if data else ""
