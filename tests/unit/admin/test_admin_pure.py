"""The management API's pure pieces: the daily chart, cursors, signed page links, audit scrubbing."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tollway.admin.audit import scrub
from tollway.admin.page_links import PageLinkSigner
from tollway.admin.pagination import PageRequest, decode_cursor, decode_offset, encode_cursor, paginate
from tollway.admin.problems import ProblemError
from tollway.admin.scopes import Scope
from tollway.admin.usage_chart import DailyValue, bar_chart, compact

PEPPER = b"p" * 32
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def test_chart_has_one_bar_per_day_with_its_exact_value() -> None:
    days = [
        DailyValue("2026-11-01", Decimal(0)),
        DailyValue("2026-11-02", Decimal(4)),
        DailyValue("2026-11-03", Decimal("2.5")),
    ]
    svg = bar_chart("requests", "requests", days)
    bars = re.findall(r'data-day="([0-9-]+)" data-value="([0-9.]+)"', svg)
    assert bars == [("2026-11-01", "0"), ("2026-11-02", "4"), ("2026-11-03", "2.5")]
    heights = [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([0-9.]+)"', svg)]
    assert heights[0] == 0
    assert heights[1] > heights[2] > 0
    assert heights[2] == pytest.approx(heights[1] * 2.5 / 4, abs=0.1)
    assert "<script" not in svg
    assert "<title>2026-11-02: 4 requests</title>" in svg


def test_chart_escapes_names_and_survives_no_usage() -> None:
    svg = bar_chart('<m>"', "units", [DailyValue("2026-11-01", Decimal(0))])
    assert "<m>" not in svg
    assert 'data-meter="&lt;m&gt;&quot;"' in svg
    assert bar_chart("x", "units", []).endswith("</svg>")


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (Decimal(0), "0"),
        (Decimal(950), "950"),
        (Decimal(1200), "1.2k"),
        (Decimal(3_400_000), "3.4M"),
        (Decimal("0.126"), "0.13"),
        (Decimal(5 * 10**9), "5G"),
    ],
)
def test_axis_labels_are_compact(value: Decimal, label: str) -> None:
    assert compact(value) == label


def test_cursor_round_trip_and_keyset_pages() -> None:
    assert decode_cursor(encode_cursor(["2026-11-25T12:00:00.000Z", "key_1"])) == ["2026-11-25T12:00:00.000Z", "key_1"]
    items = [f"c{n}" for n in range(5)]
    first, cursor = paginate(items, lambda c: (c,), PageRequest(2, None))
    second, cursor2 = paginate(items, lambda c: (c,), PageRequest(2, cursor))
    third, cursor3 = paginate(items, lambda c: (c,), PageRequest(2, cursor2))
    assert (first, second, third, cursor3) == (["c0", "c1"], ["c2", "c3"], ["c4"], None)
    assert decode_offset(encode_cursor(["40"])) == 40
    assert decode_offset(None) == 0


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGpzb24", encode_cursor(["x"]).replace("W", "Z"), "W10"])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(ProblemError) as raised:
        decode_cursor(cursor)
    assert raised.value.status == 400


def test_offsets_must_be_numbers() -> None:
    with pytest.raises(ProblemError):
        decode_offset(encode_cursor(["-1"]))


def test_page_links_are_per_customer_and_expire() -> None:
    signer = PageLinkSigner(PEPPER)
    token = signer.sign("acme", NOW + timedelta(hours=1))
    assert signer.verify("acme", token, NOW)
    assert not signer.verify("globex", token, NOW)
    assert not signer.verify("acme", token, NOW + timedelta(hours=1))
    assert not PageLinkSigner(b"q" * 32).verify("acme", token, NOW)
    expires, signature = token.split(".")
    assert not signer.verify("acme", f"{int(expires) + 3600}.{signature}", NOW)  # a longer life is not signed
    assert not signer.verify("acme", "garbage", NOW)
    assert "p" * 32 not in repr(signer)


def test_scrub_drops_secrets_at_any_depth() -> None:
    before = {"key_id": "k", "api_key": "tw_live_x", "nested": [{"token": "t", "ok": 1}], "digest": "d"}
    assert scrub(before) == {"key_id": "k", "nested": [{"ok": 1}]}


def test_write_scope_includes_read() -> None:
    assert Scope.WRITE.allows(Scope.READ)
    assert Scope.WRITE.allows(Scope.WRITE)
    assert Scope.READ.allows(Scope.READ)
    assert not Scope.READ.allows(Scope.WRITE)
