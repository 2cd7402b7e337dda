"""One fixture per kind of mistake: each issue names the file, the line and column of the offending node, its value."""

from pathlib import Path

import pytest

from tollway.plans.errors import CatalogError, CatalogIssue
from tollway.plans.loader import load_catalog, load_catalog_text

FIXTURES = Path(__file__).parents[2] / "fixtures" / "catalogs"

# file → [(line, token on that line where the issue points, part of the message, rendered value or None)]
EXPECTED: dict[str, list[tuple[int, str, str, str | None]]] = {
    "unknown-key.yaml": [(11, "burts", "unknown field 'burts' (allowed: name, limit, per, window", "burts")],
    "wrong-type.yaml": [(12, '"10"', "plans.free.limits[0].limit: expected an integer", '"10"')],
    "missing-field.yaml": [
        (
            14,
            "{id: platform",
            "plans.free.pricing.charges[0]: missing required field 'amount'",
            "{id: platform, model: flat}",
        )
    ],
    "bad-identifier.yaml": [
        (5, "Items_Read", "features.Items_Read: name must be an identifier", "Items_Read"),
        (9, "Items_Read", "plans.free.features[0]: must be an identifier", "Items_Read"),
    ],
    "duplicate-key.yaml": [(12, "free", "plans.free: duplicate key (first at line 8)", "free")],
    "yaml-syntax.yaml": [(7, ":", "YAML syntax error: expected ',' or ']'", '"limits: []"')],
    "unknown-feature.yaml": [(9, "items-raed", "unknown feature 'items-raed'; did you mean", "items-raed")],
    "unknown-meter.yaml": [(13, "request}", "unknown meter 'request'; did you mean 'requests'?", "request")],
    "bad-money.yaml": [
        (17, "-49.00", "plans.pro.pricing.charges[1].amount: money must be a finite amount ≥ 0", "-49.00"),
        (18, '"4.9e1"', "charges[2].amount: money must be a plain decimal", '"4.9e1"'),
    ],
    "tiers-not-ascending.yaml": [(21, "500", "tiers[1].up_to: tiers must ascend", "500")],
    "null-up-to-not-last.yaml": [
        (21, "null", "tiers[1].up_to: only the last tier may have up_to: null", "null"),
        (22, "5000", "tiers[2].up_to: the last tier needs up_to: null", "5000"),
    ],
    "duplicate-policy.yaml": [
        (14, "monthly", "plans.free.quotas[0].name: policy name already used by plans.free.limits[1]", "monthly")
    ],
    "route-in-two-features.yaml": [
        (11, '"/v1/items/{item}"', "route already belongs to feature 'items-read'", "GET /v1/items/{item}")
    ],
    "bad-api-version.yaml": [(1, "tollway.dev/v2", "apiVersion: expected 'tollway.dev/v1'", "tollway.dev/v2")],
    "bad-duration.yaml": [(11, "15 minutes", "limits[0].window: expected a window such as 10s", "15 minutes")],
    "limit-on-response-meter.yaml": [
        (15, "egress}", "plans.free.quotas[0].meter: limits and quotas are checked before the request", "egress")
    ],
    "meter-feature-unknown.yaml": [
        (
            5,
            "{unit: requests",
            "meters.requests: `field` applies only to unit response_json",
            "{unit: requests, field: usage.n}",
        ),
        (9, "reprots", "meters.tokens.features[1]: unknown feature 'reprots'; did you mean 'reports'?", "reprots"),
    ],
    "configmap-with-error.yaml": [(17, "fortnight", "plans.free.limits[0].per: expected 'second'", "fortnight")],
    "several-errors.yaml": [
        (5, "{unit", "meters.tokens: a response_json meter needs `field`", "{unit: response_json}"),
        (8, "-1", "features.read.cost: must be at least 0", "-1"),
        (9, "get", "features.read.routes[0].methods[0]: expected an upper-case HTTP method", "get"),
        (12, "write", "plans.free.features[1]: unknown feature 'write'", "write"),
        (13, "fail_sometimes", "plans.free.outage_policy: expected 'fail_closed' or 'fail_open'", "fail_sometimes"),
        (15, "0,", "plans.free.limits[0].limit: must be at least 1", "0"),
        (17, "usd", "plans.free.pricing.currency: expected an ISO 4217 currency code", "usd"),
        (20, "tiered", "charges[0].model: expected one of 'flat', 'per_unit'", "tiered"),
        (22, "platform", "discounts[0].applies_to: unknown charge 'platform'", "platform"),
    ],
    "prepaid-references.yaml": [
        (19, "{unit", "plans.no-pricing.prepaid: a prepaid plan needs `pricing`", None),
        (20, "{amount", "plans.no-pricing.spend_cap: a spend cap needs `pricing`", None),
        (
            22,
            "credit}",
            "unknown unit 'credit': use the plan's currency USD or a credit unit; did you mean 'credits'?",
            "credit",
        ),
        (25, "EUR", "prepaid.unit: the plan is priced in USD: its balance must be in USD or a credit unit", "EUR"),
        (
            28,
            "euro-credits",
            "prepaid.unit: credit unit 'euro-credits' is worth EUR, but the plan is priced in USD",
            "euro-credits",
        ),
        (33, "platform", "prepaid.charges[0]: charge 'platform' cannot burn in real time: a flat fee", "platform"),
        (33, "bulk", "prepaid.charges[1]: charge 'bulk' cannot burn in real time: a volume charge", "bulk"),
        (33, "calls, egress", "prepaid.charges[3]: charge listed twice", "calls"),
        (
            33,
            "egress",
            "charge 'egress' cannot burn in real time: its meter 'egress' (response_bytes) is known only after",
            "egress",
        ),
        (
            33,
            "tokens",
            "charge 'tokens' cannot burn in real time: its meter 'tokens' (response_json) is known only after",
            "tokens",
        ),
        (
            33,
            "ingress",
            "charge 'ingress' cannot burn in real time: its meter 'ingress' (request_bytes) does not burn at admission",
            "ingress",
        ),
        (
            33,
            "cals]",
            "prepaid.charges[7]: unknown charge 'cals': name a charge of this plan; did you mean 'calls'?",
            "cals",
        ),
        (45, '"10.001"', "plans.too-fine.spend_cap.amount: USD has 2 decimal places", "10.001"),
        (
            50,
            '"0.0000001"',
            "charge 'calls' burns in real time, in micro-units (0.000001) of USD: 0.0000001 USD is not a whole number",
            "0.0000001",
        ),
        (
            61,
            '"0.01"',
            "tiers[0].flat_amount: charge 'calls' burns in real time, in micro-units (0.000001) of thirds: 0.01 USD",
            "0.01",
        ),
        (65, '"2000"', "plans.in-dust.spend_cap.amount: is more than 1000000000 dust", "2000"),
        (
            70,
            '"1001"',
            "package_amount: charge 'pack' burns in real time, and 1001 USD = 1001000000 dust is more than",
            "1001",
        ),
    ],
    "prepaid-reserve.yaml": [
        (15, "5,", "prepaid.reserve.requests: a reserve applies only to meters known after the response", "5"),
        (15, "2,", "meter 'search-units' (cost) is known at admission", "2"),
        (
            15,
            "100,",
            "plans.on-admission.prepaid.reserve.tokns: unknown meter 'tokns'; did you mean 'tokens'?",
            "tokns",
        ),
        (15, "10}", "meter 'ingress' (request_bytes) is not known from the response", "10"),
        (22, "0,", "plans.bad-quantities.prepaid.reserve.tokens: must be at least 1", "0"),
        (22, "2.5", "plans.bad-quantities.prepaid.reserve.egress: expected an integer", "2.5"),
        (29, "-4000", "plans.negative.prepaid.reserve.tokens: must be at least 1", "-4000"),
        (
            36,
            "tokens]",
            "charge 'tokens' cannot burn in real time: its meter 'tokens' (response_json) is known only after the "
            "response, so it cannot burn at admission without a reserve (prepaid.reserve: {tokens: <quantity>})",
            "tokens",
        ),
    ],
    "prepaid-structure.yaml": [
        (5, "7}", "credit_units.credits.decimals: must be at most 6", "7"),
        (6, '"0"', "credit_units.free.value: must be above 0", '"0"'),
        (7, "usd", "credit_units.cents.currency: expected an ISO 4217 currency code", "usd"),
        (8, '"2000000000"', "credit_units.huge.value: must be at most 1000000000", '"2000000000"'),
        (16, '"0.0000001"', "plans.prepaid.prepaid.overrun: must have at most 6 decimal places", '"0.0000001"'),
        (17, '"0"', "plans.prepaid.spend_cap.amount: must be above 0", '"0"'),
        (24, '"1000000001"', "plans.capped.prepaid.overrun: must be at most 1000000000", '"1000000001"'),
        (24, "chrges", "plans.capped.prepaid.chrges: unknown field 'chrges'; did you mean 'charges'?", "chrges"),
        (25, '"1000000000.01"', "plans.capped.spend_cap.amount: must be at most 1000000000", '"1000000000.01"'),
        (32, "cals]", "plans.third.prepaid.charges[0]: unknown charge 'cals'", "cals"),
        (
            44,
            '"0.0000001"',
            "plans.fourth.pricing.charges[0].unit_amount: charge 'calls' burns in real time",
            "0.0000001",
        ),
    ],
}


def test_every_fixture_has_expectations() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in FIXTURES.glob("*.yaml"))


def _issues(name: str) -> list[CatalogIssue]:
    with pytest.raises(CatalogError) as caught:
        load_catalog(FIXTURES / name)
    return caught.value.issues


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_issues(name: str) -> None:
    path = FIXTURES / name
    lines = path.read_text().splitlines()
    issues = _issues(name)
    assert len(issues) == len(EXPECTED[name]), "\n".join(map(str, issues))
    for issue, (line, token, message, value) in zip(issues, EXPECTED[name], strict=True):
        column = lines[line - 1].index(token) + 1
        assert issue.file == str(path)
        assert (issue.line, issue.column) == (line, column), str(issue)
        assert message in issue.message
        assert issue.value == value
        got = f" (got: {value})" if value is not None else ""
        assert str(issue) == f"{path}:{line}:{column}: {issue.message}{got}"


def test_catalog_error_lists_every_issue_in_file_order() -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(FIXTURES / "several-errors.yaml")
    lines = str(caught.value).splitlines()
    assert len(lines) == len(EXPECTED["several-errors.yaml"])
    assert [int(line.split(":")[1]) for line in lines] == sorted(int(line.split(":")[1]) for line in lines)


def test_meter_features_are_checked_when_everything_else_is_valid() -> None:
    """Same fixture minus its structural error: the reference check runs on the validated catalog too."""
    path = FIXTURES / "meter-feature-unknown.yaml"
    text = path.read_text().replace("{unit: requests, field: usage.n}", "{unit: requests}")
    text = text.replace("[reports, reprots]", "[reports, reprots, reports]")
    with pytest.raises(CatalogError) as caught:
        load_catalog_text(text, str(path))
    assert [(i.line, i.column, i.message) for i in caught.value.issues] == [
        (9, 25, "meters.tokens.features[1]: unknown feature 'reprots'; did you mean 'reports'?"),
        (9, 34, "meters.tokens.features[2]: feature listed twice"),
    ]
