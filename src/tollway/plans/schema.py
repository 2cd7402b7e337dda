"""The catalog's structure as pydantic models: types, ranges and the rules local to one object.

Rules that span objects (references, unique names, route conflicts, tier order) live in ``checks``
so that each can point at the exact node at fault. Every model forbids unknown keys and is strict:
no string-to-number coercion, no 1.0-as-integer. Money is ``Decimal`` (see ``Money``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Final, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tollway.plans.alerts import Alerts
from tollway.plans.fields import Identifier, Money, NonNegativeInt, PositiveInt, StrictModel
from tollway.plans.money import CreditUnit, Prepaid, SpendCap
from tollway.plans.paths import PathPattern, parse_path, parse_prefix
from tollway.plans.pricing import Currency, Pricing, RoundingMode

_WINDOW: Final = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_STATUS: Final = re.compile(r"[1-5](?:xx|[0-9]{2})")
_FIELD_PATH: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+))*")
MAX_WINDOW_SECONDS: Final = 31 * 86400
PER_SECONDS: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})


def parse_window(text: str) -> int:
    """``10s``, ``15m``, ``2h``, ``1d`` or combinations in that order (``1h30m``) → seconds. Raises ValueError."""
    match = _WINDOW.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a window: use e.g. 10s, 15m, 2h, 1d or 1h30m")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


# --- meters ------------------------------------------------------------------------------------------


def _status_pattern(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and not _STATUS.fullmatch(value):
        raise PydanticCustomError("status_pattern", "expected an HTTP status (429) or a class (5xx)")
    return value


StatusPattern = Annotated[str, BeforeValidator(_status_pattern)]


class Billable(StrictModel):
    """Which responses count. Default: everything below 500."""

    exclude_statuses: list[StatusPattern] = Field(default_factory=lambda: ["5xx"])

    def counts(self, status: int) -> bool:
        text = str(status)
        return not any(p == text or (p.endswith("xx") and p[0] == text[0]) for p in self.exclude_statuses)


MeterUnit = Literal["requests", "request_bytes", "response_bytes", "cost", "response_json"]


class Meter(StrictModel):
    """What one request adds to a meter. ``features`` limits the meter to those features' requests (default:
    every request). A ``response_json`` meter reads ``field`` from the JSON body of the responses of its
    ``features``, which it must name (reading a body costs an Envoy ext_proc call per request)."""

    unit: MeterUnit
    field: str | None = None
    features: list[Identifier] | None = Field(default=None, min_length=1)
    billable: Billable = Field(default_factory=Billable)
    description: str | None = None

    @field_validator("field")
    @classmethod
    def _field_path(cls, value: str | None) -> str | None:
        if value is not None and not _FIELD_PATH.fullmatch(value):
            raise PydanticCustomError("field_path", "expected a dotted JSON path such as usage.total_tokens")
        return value

    @model_validator(mode="after")
    def _field_only_for_json(self) -> Meter:
        if self.unit == "response_json":
            missing = [
                hint
                for name, hint in (
                    ("field", "`field` (e.g. usage.total_tokens)"),
                    ("features", "`features` (the features whose responses carry the field)"),
                )
                if getattr(self, name) is None
            ]
            if missing:
                raise PydanticCustomError("field_missing", f"a response_json meter needs {' and '.join(missing)}")
            return self
        if self.field is not None:
            raise PydanticCustomError("field_unexpected", "`field` applies only to unit response_json")
        return self


# --- features ----------------------------------------------------------------------------------------


def _method(value: str) -> str:
    if value != "*" and value not in HTTP_METHODS:
        raise PydanticCustomError("method", "expected an upper-case HTTP method (GET, POST, …) or *")
    return value


Method = Annotated[str, AfterValidator(_method)]


class Route(StrictModel):
    """Requests a feature covers: ``methods`` plus exactly one of ``path`` (exact or template) or ``prefix``."""

    methods: list[Method] = Field(min_length=1)
    path: str | None = None
    prefix: str | None = None
    cost: NonNegativeInt | None = None

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("methods_repeated", "a method is listed twice")
        if "*" in value and len(value) > 1:
            raise PydanticCustomError("methods_star", "* already covers every method: list it alone")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None:
            _pattern_or_error(parse_path, value)
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None:
            _pattern_or_error(parse_prefix, value)
        return value

    @model_validator(mode="after")
    def _one_pattern(self) -> Route:
        if (self.path is None) == (self.prefix is None):
            raise PydanticCustomError("route_pattern", "a route needs exactly one of `path` or `prefix`")
        return self

    @property
    def pattern(self) -> PathPattern:
        return parse_path(self.path) if self.path is not None else parse_prefix(self.prefix or "")


def _pattern_or_error(parse: Callable[[str], PathPattern], value: str) -> None:
    try:
        parse(value)
    except ValueError as exc:
        raise PydanticCustomError("route_path", str(exc)) from None


_SCOPE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token


def _scope(value: str) -> str:
    if not _SCOPE.fullmatch(value):
        raise PydanticCustomError("scope", "a scope is printable ASCII without spaces, quotes or backslashes")
    return value


Scope = Annotated[str, AfterValidator(_scope)]


class Feature(StrictModel):
    """``scopes``: OAuth scopes a bearer token must grant (every one listed) to call this feature's routes.
    They apply to token callers only; API keys carry no scopes."""

    display_name: str | None = None
    description: str | None = None
    cost: NonNegativeInt = 1
    routes: list[Route] = Field(default_factory=list)
    scopes: list[Scope] | None = Field(default=None, min_length=1)

    @field_validator("scopes")
    @classmethod
    def _unique_scopes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise PydanticCustomError("scopes_repeated", "a scope is listed twice")
        return value

    @model_serializer(mode="wrap")
    def _without_unset_scopes(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # A catalog without scopes keeps the digest it had before features could name any.
        data: dict[str, object] = handler(self)
        if self.scopes is None:
            data.pop("scopes", None)
        return data


# --- limits and quotas -------------------------------------------------------------------------------

Enforcement = Literal["hard", "soft"]


class RateLimit(StrictModel):
    """A sliding window of fixed width. Its name is the RateLimit-Policy name."""

    name: Identifier
    limit: PositiveInt
    per: Literal["second", "minute", "hour", "day"] | None = None
    window: str | None = None
    enforcement: Enforcement = "hard"
    meter: Identifier | None = None
    features: list[Identifier] | None = None
    shadow: bool = False
    # Threshold alerts (limit.threshold_crossed, once per level per aligned window; docs/notifications.md).
    alerts: Alerts | None = None

    @model_serializer(mode="wrap")
    def _without_unset_alerts(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # A catalog without alerts keeps the digest it had before policies could declare any.
        return _drop_unset(handler(self), self, ("alerts",))

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            seconds = parse_window(value)
        except ValueError:
            raise PydanticCustomError("window", "expected a window such as 10s, 15m, 2h, 1d or 1h30m") from None
        if not 1 <= seconds <= MAX_WINDOW_SECONDS:
            raise PydanticCustomError("window_range", "a window is from 1s to 31d (longer spans are quotas)")
        return value

    @model_validator(mode="after")
    def _one_width(self) -> RateLimit:
        if (self.per is None) == (self.window is None):
            raise PydanticCustomError("limit_width", "a limit needs exactly one of `per` or `window`")
        return self

    @property
    def window_seconds(self) -> int:
        return PER_SECONDS[self.per] if self.per is not None else parse_window(self.window or "")


class Quota(StrictModel):
    """An allowance per billing period of the customer's subscription. Its name is a RateLimit-Policy name."""

    name: Identifier
    limit: PositiveInt
    enforcement: Enforcement = "hard"
    meter: Identifier | None = None
    features: list[Identifier] | None = None
    shadow: bool = False
    # Threshold alerts (quota.threshold_crossed, once per level per billing period; docs/notifications.md).
    alerts: Alerts | None = None

    @model_serializer(mode="wrap")
    def _without_unset_alerts(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return _drop_unset(handler(self), self, ("alerts",))


# --- plans and the catalog ---------------------------------------------------------------------------


_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")


def _published(value: str) -> str:
    if not _DIGEST.fullmatch(value):
        raise PydanticCustomError(
            "published_digest", "expected the digest `tollway plans publish` stamps: sha256: and 64 hex digits"
        )
    return value


PublishedDigest = Annotated[str, AfterValidator(_published)]
"""``sha256:`` + hex of a published plan version's priced and enforced content (``plans.versions``)."""


VersionNumber = Annotated[int, Field(ge=1, le=1_000_000)]
"""A plan version's number: ``pro@<n>`` (``plans.versions.MAX_VERSION``)."""


MAX_PHASE_LENGTH: Final = 3660
"""A phase is at most this many days or periods long (ten years of days)."""


class Phase(StrictModel):
    """A phase a new subscription to the plan runs through before the plan itself (``plans.phases``):
    ``days`` (local days from its start) or ``periods`` (intervals of the subscription's billing
    period from its start) long; ``free`` (a trial: the plan's features, limits and quotas at no
    charge, with no prepaid balance or spend cap) or ``percent_off`` (a ramp: the plan's pricing with
    that discount off each invoice part). Compiled into the plan ``<plan id>:<id>``."""

    id: Identifier
    days: PositiveInt | None = None
    periods: PositiveInt | None = None
    free: Literal[True] | None = None
    percent_off: Money | None = None

    @field_validator("days", "periods")
    @classmethod
    def _length(cls, value: int | None) -> int | None:
        if value is not None and value > MAX_PHASE_LENGTH:
            raise PydanticCustomError("phase_length", f"a phase is at most {MAX_PHASE_LENGTH} days or periods long")
        return value

    @field_validator("percent_off")
    @classmethod
    def _percent(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not Decimal(0) < value < Decimal(100):
            raise PydanticCustomError(
                "phase_percent", "percent_off must be above 0 and below 100 (a phase at no charge is `free: true`)"
            )
        return value

    @model_validator(mode="after")
    def _one_length_one_price(self) -> Phase:
        if (self.days is None) == (self.periods is None):
            raise PydanticCustomError("phase_length", "a phase needs exactly one of `days` or `periods`")
        if (self.free is None) == (self.percent_off is None):
            raise PydanticCustomError("phase_price", "a phase needs exactly one of `free: true` or `percent_off`")
        return self

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return _drop_unset(handler(self), self, ("days", "periods", "free", "percent_off"))


class PlanVersion(StrictModel):
    """One version of a plan: what a subscription sold at it is priced and entitled by (``plans.versions``).

    ``published``: the digest stamped when the version was published; from then on its content may not
    change unless ``correction`` says why (``tollway plans validate`` refuses an edit in place)."""

    display_name: str | None = None
    description: str | None = None
    features: list[Identifier] = Field(default_factory=list)
    outage_policy: Literal["fail_closed", "fail_open"] = "fail_closed"
    limits: list[RateLimit] = Field(default_factory=list)
    quotas: list[Quota] = Field(default_factory=list)
    pricing: Pricing | None = None
    usage_headers: bool = False
    prepaid: Prepaid | None = None
    spend_cap: SpendCap | None = None
    published: PublishedDigest | None = None
    correction: str | None = Field(default=None, min_length=1)
    # Trials and ramps a new subscription runs through first (docs/catalog-reference.md#phases).
    phases: list[Phase] | None = Field(default=None, min_length=1)

    @model_serializer(mode="wrap")
    def _without_unset_money(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return _drop_unset(handler(self), self, ("prepaid", "spend_cap", "published", "correction", "phases"))


MAX_ADDON_QUANTITY: Final = 1_000_000
"""The most of one add-on a subscription may hold (and the default ``max_quantity``)."""


class AddOnTerms(StrictModel):
    """What makes a plan an add-on (docs/catalog-reference.md#add-ons): bought on top of a base plan that
    lists it in ``addons``, held with a ``quantity`` (1 to ``max_quantity``). Its quotas add (times the
    quantity) to the base plan's quotas of the same name, its features join the base plan's, and each of
    its rate limits either is combined with the base plan's limit of the same name by the strictest
    (``limits: strictest``, the default) or replaces it (``limits: replace``)."""

    max_quantity: Annotated[int, Field(ge=1, le=MAX_ADDON_QUANTITY)] = 1
    limits: Literal["strictest", "replace"] = "strictest"


OVERDUE_PLAN_ID: Final = re.compile(r"[a-z0-9][a-z0-9_-]*(?:@[1-9][0-9]{0,6})?")


def _overdue_plan_id(value: str) -> str:
    if not OVERDUE_PLAN_ID.fullmatch(value):
        raise PydanticCustomError(
            "overdue_plan", "expected a plan id of this catalog (e.g. free, or a version such as free@2)"
        )
    return value


class Overdue(StrictModel):
    """What a customer of the plan gets at the gateway while one of their invoices is overdue (its payment
    failed: docs/payments.md#overdue-customers-at-the-gateway): the answers of another plan of the catalog
    (``plan: free``), or a 402 refusal (``refuse: true``). Exactly one of them."""

    plan: Annotated[str, AfterValidator(_overdue_plan_id)] | None = None
    refuse: Literal[True] | None = None

    @model_validator(mode="after")
    def _one_answer(self) -> Overdue:
        if (self.plan is None) == (self.refuse is None):
            raise PydanticCustomError(
                "overdue_answer", "overdue needs exactly one of `plan: <plan id>` or `refuse: true`"
            )
        return self

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return _drop_unset(handler(self), self, ("plan", "refuse"))


class Plan(PlanVersion):
    """A plan: its body (the fields of :class:`PlanVersion`) is its own version 1, which ``published`` /
    ``correction`` may protect, unless it lists ``versions`` (docs/catalog-reference.md#plan-versions;
    rules and compilation in ``plans.versions``). ``usage_headers``: tell callers on every admitted
    response what this period has used and cost so far (docs/entitlements.md); ``prepaid`` and
    ``spend_cap``: money at the gateway (docs/catalog-reference.md#prepaid-plans-and-spend-caps).
    ``addon``: this plan is an add-on; ``addons``: the add-ons a subscriber of this plan may buy
    (docs/catalog-reference.md#add-ons; rules in ``plans.addons``). ``overdue``: what a customer with an
    overdue invoice gets at the gateway (``plans.overdue``). All three are the plan's, whatever its
    versions."""

    versions: dict[VersionNumber, PlanVersion] | None = Field(default=None, min_length=1)
    addon: AddOnTerms | None = None
    addons: list[Identifier] | None = None
    # What a customer gets at the gateway while an invoice of theirs is overdue (docs/catalog-reference.md#overdue).
    overdue: Overdue | None = None

    @model_serializer(mode="wrap")
    def _without_unset_money(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        # A plan without them keeps the digest it had before plans could be prepaid, capped, versioned,
        # phased, sold with add-ons or declare an overdue policy.
        return _drop_unset(
            handler(self),
            self,
            ("prepaid", "spend_cap", "published", "correction", "versions", "phases", "addon", "addons", "overdue"),
        )


def _drop_unset(data: dict[str, object], model: object, names: tuple[str, ...]) -> dict[str, object]:
    for name in names:
        if not getattr(model, name):
            data.pop(name, None)
    return data


class Metadata(StrictModel):
    name: Identifier
    version: str = Field(min_length=1)
    description: str | None = None


class Rounding(StrictModel):
    """How invoice lines are rounded, for the whole catalog (``mode``) and per currency (``currencies``,
    which wins). A plan's own ``pricing.rounding`` wins over both. Default: ``half_even``."""

    mode: RoundingMode | None = None
    currencies: dict[Currency, RoundingMode] = Field(default_factory=dict)

    def for_currency(self, currency: str) -> RoundingMode | None:
        return self.currencies.get(currency, self.mode)


class Catalog(StrictModel):
    """A whole catalog as validated structurally; ``loader`` adds the cross-reference checks."""

    api_version: Literal["tollway.dev/v1"] = Field(alias="apiVersion")
    kind: Literal["PlanCatalog"]
    metadata: Metadata
    meters: dict[Identifier, Meter] = Field(default_factory=dict)
    features: dict[Identifier, Feature] = Field(default_factory=dict)
    plans: dict[Identifier, Plan] = Field(min_length=1)
    credit_units: dict[Identifier, CreditUnit] = Field(default_factory=dict)
    # Rounding of invoice lines for the catalog or per currency (docs/billing.md#rounding-mode).
    rounding: Rounding | None = None

    @model_serializer(mode="wrap")
    def _without_unset_money(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        return _drop_unset(handler(self), self, ("credit_units", "rounding"))

    @model_validator(mode="after")
    def _resolve_rounding(self) -> Catalog:
        """Each priced plan that does not say how to round gets the catalog's mode for its currency, so
        that ``billing.rating.rate`` (which sees only the plan's pricing) rounds as the catalog says."""
        rounding = self.rounding
        if rounding is None:
            return self
        plans = dict(self.plans)
        for plan_id, plan in self.plans.items():
            pricing = plan.pricing
            if pricing is None or pricing.rounding is not None:
                continue
            mode = rounding.for_currency(pricing.currency)
            if mode is not None:
                plans[plan_id] = plan.model_copy(update={"pricing": pricing.model_copy(update={"rounding": mode})})
        return self.model_copy(update={"plans": plans})
