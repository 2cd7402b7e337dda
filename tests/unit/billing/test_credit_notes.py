"""Credit notes (pure): what may be credited of a finalized invoice, amounts in the currency's places,
never more than the invoice (or a line), the idempotency key's id, and the document's shape."""

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.billing.credit_notes import (
    CreditRequest,
    CreditTooLarge,
    InvalidCredit,
    InvoiceNotFinalized,
    LineCredit,
    check_idempotency_key,
    credit_note_id,
    credited,
    draft_credit_note,
    is_retry_of,
    parse_amount,
    remaining,
)

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
ID = "cn_" + "0" * 24


def invoice(total: str = "76.65", status: str = "finalized", currency: str = "USD", **extra: Any) -> dict[str, Any]:
    """An invoice of 76.65: platform 49.00, calls 21.00, egress 6.65 (the one wrongly charged)."""
    return {
        "invoice_id": "in_" + "a" * 24,
        "customer_id": "acme",
        "status": status,
        "currency": currency,
        "lines": [
            {"kind": "charge", "description": "Platform", "amount": "49.00"},
            {"kind": "charge", "description": "Calls", "amount": "21.00"},
            {"kind": "charge", "description": "Egress", "amount": "6.65"},
            {"kind": "discount", "description": "Welcome", "amount": "0.00"},
        ],
        "total": total,
        **extra,
    }


def draft(request: CreditRequest, earlier: list[dict[str, Any]] | None = None, **invoice_fields: Any) -> Any:
    return draft_credit_note(
        invoice(**invoice_fields), earlier or [], request, credit_note_id=ID, issued_at=NOW, issued_on=NOW.date()
    )


def ask(amount: str | None = None, *lines: LineCredit, reason: str = "egress double-counted") -> CreditRequest:
    return CreditRequest("in_" + "a" * 24, reason, amount, tuple(lines))


def test_a_credit_note_restores_a_corrected_amount() -> None:
    # 76.65 invoiced, of which 6.65 (egress) was wrongly charged: 76.65 − 6.65 = 70.00 is what was owed.
    note = draft(ask("6.65"))
    document = note.as_dict()
    assert document["total"] == "6.65"
    assert Decimal(invoice()["total"]) - note.total == Decimal("70.00")
    assert remaining(invoice(), [document]) == Decimal("70.00")
    assert document["lines"] == [{"description": "egress double-counted", "amount": "6.65", "invoice_line": None}]
    assert set(document) == {
        "credit_note_id",
        "number",
        "invoice_id",
        "invoice_number",
        "customer_id",
        "currency",
        "issued_on",
        "issued_at",
        "reason",
        "lines",
        "total",
    }
    assert (document["issued_on"], document["issued_at"]) == ("2026-12-07", "2026-12-07T10:00:00.000000Z")


def test_whole_and_partial_lines() -> None:
    note = draft(ask(None, LineCredit(3), LineCredit(2, "1.5")))
    assert [(line.invoice_line, line.amount) for line in note.lines] == [(3, Decimal("6.65")), (2, Decimal("1.50"))]
    assert note.as_dict()["lines"][0]["description"] == "line 3: Egress"
    assert note.as_dict()["total"] == "8.15"
    # What remains of a line after an earlier credit note: 21.00 − 1.50 = 19.50.
    again = draft(ask(None, LineCredit(2)), [note.as_dict()])
    assert again.total == Decimal("19.50")
    with pytest.raises(CreditTooLarge, match=r"line 3 of invoice .* has 0\.00 USD left to credit"):
        draft(ask(None, LineCredit(3)), [note.as_dict()])
    with pytest.raises(CreditTooLarge, match=r"line 2 .* 19\.50 USD left to credit .*: 19\.51 is more"):
        draft(ask(None, LineCredit(2, "19.51")), [note.as_dict()])


def test_never_more_than_the_invoice_total() -> None:
    first = draft(ask("70.00")).as_dict()
    with pytest.raises(CreditTooLarge, match=r"6.66 USD is larger than what remains .*: 6.65 USD \(total 76.65"):
        draft(ask("6.66"), [first])
    assert draft(ask("6.65"), [first]).total == Decimal("6.65")
    with pytest.raises(CreditTooLarge):
        draft(ask("76.66"))


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("6.655", "more decimal places than USD has (2)"),
        ("0", "is not positive"),
        ("0.00", "is not positive"),
        ("-1", "is not an amount"),
        ("1e3", "is not an amount"),
        ("NaN", "is not an amount"),
        ("Infinity", "is not an amount"),
        ("6,65", "is not an amount"),
        (" 6.65", "is not an amount"),
        ("٦.٦٥", "is not an amount"),
        ("", "is not an amount"),
    ],
)
def test_bad_amounts_are_refused(amount: str, message: str) -> None:
    with pytest.raises(InvalidCredit, match=re.escape(message)):
        draft(ask(amount))


def test_amounts_follow_the_currencys_places() -> None:
    assert parse_amount("6.650", "USD") == Decimal("6.65")
    assert parse_amount("1200", "JPY") == Decimal("1200")
    with pytest.raises(InvalidCredit, match="JPY has \\(0\\)"):
        parse_amount("1.5", "JPY")
    assert parse_amount("1.005", "KWD") == Decimal("1.005")
    note = draft(ask("5"), total="100", currency="JPY")
    assert note.as_dict()["total"] == "5"


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (ask(None, LineCredit(5)), InvalidCredit, "has no line 5 \\(its lines are 1 to 4\\)"),
        (ask(None, LineCredit(0)), InvalidCredit, "has no line 0"),
        (ask(None, LineCredit(4)), InvalidCredit, "line 4 .* amounts to 0.00: nothing to credit"),
        (ask(None, LineCredit(1), LineCredit(1)), InvalidCredit, "line 1 is given twice"),
        (ask("1.00", LineCredit(1)), InvalidCredit, "either an amount or invoice lines"),
        (ask(None), InvalidCredit, "either an amount or invoice lines"),
        (ask("1.00", reason="  "), InvalidCredit, "needs a reason"),
        (ask("1.00", reason="a\nb"), InvalidCredit, "control characters"),
        (ask("1.00", reason="x" * 501), InvalidCredit, "at most 500"),
    ],
)
def test_bad_requests_are_refused(request_: CreditRequest, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        draft(request_)


def test_only_a_finalized_invoice_is_credited() -> None:
    with pytest.raises(InvoiceNotFinalized, match="is a draft"):
        draft(ask("1.00"), status="draft")


def test_the_idempotency_key_gives_the_id_and_a_retry_is_recognised() -> None:
    assert credit_note_id("in_1", "k") == credit_note_id("in_1", "k")
    assert credit_note_id("in_1", "k") != credit_note_id("in_2", "k")
    assert credit_note_id("in_1", "k") != credit_note_id("in_1", "k2")
    assert credit_note_id("in_1", "k").startswith("cn_")
    for bad in ("", "with space", "x" * 256, "é"):
        with pytest.raises(InvalidCredit, match="idempotency key"):
            check_idempotency_key(bad)
    stored = draft(ask(None, LineCredit(3), LineCredit(2, "1.50"))).as_dict()
    assert is_retry_of(stored, ask(None, LineCredit(3), LineCredit(2, "1.5")))
    assert not is_retry_of(stored, ask(None, LineCredit(3), LineCredit(2, "1.49")))
    assert not is_retry_of(stored, ask(None, LineCredit(3)))
    assert not is_retry_of(stored, ask("8.15"))
    assert not is_retry_of(stored, ask(None, LineCredit(3), LineCredit(2, "1.50"), reason="other"))
    by_amount = draft(ask("6.65")).as_dict()
    assert is_retry_of(by_amount, ask("6.650"))
    assert not is_retry_of(by_amount, ask("6.64"))


@given(st.lists(st.integers(min_value=1, max_value=8000), max_size=12))
def test_whatever_is_asked_the_credit_notes_never_exceed_the_invoice(cents: list[int]) -> None:
    issued: list[dict[str, Any]] = []
    for amount in cents:
        text = f"{amount // 100}.{amount % 100:02d}"
        before = credited(issued)
        try:
            issued.append(draft(ask(text), issued).as_dict())
        except CreditTooLarge:
            assert before + Decimal(text) > Decimal("76.65")
        assert credited(issued) <= Decimal("76.65")


@given(st.text(max_size=30))
def test_any_text_is_an_amount_or_a_clear_error(text: str) -> None:
    try:
        value = parse_amount(text, "USD")
    except InvalidCredit as exc:
        message = str(exc)
    else:
        assert value > 0
        assert value == value.quantize(Decimal("0.01"))
        return
    assert any(word in message for word in ("is not an amount", "decimal places", "not positive", "too large"))


def test_the_issue_date_is_the_one_given() -> None:
    assert draft(ask("1.00")).issued_on == date(2026, 12, 7)
