"""Where and how invoices are pushed to Stripe: ``TOLLWAY_STRIPE_*`` (docs/payments.md, "Configuration").

Kept apart from ``tollway.settings`` (as ``warehouse.settings`` is) so ``tollway payments push`` needs
nothing else. Without ``TOLLWAY_STRIPE_API_KEY`` nothing is sent anywhere. The key is a ``SecretStr``:
it is never printed, logged or put in a message.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tollway.payments.stripe_mapping import CollectionMethod, PushOptions


class StripePushSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLWAY_STRIPE_", env_file=None, extra="ignore")

    # A secret key (sk_live_…, sk_test_…) or a restricted key with write access to customers and invoices.
    api_key: SecretStr | None = None
    # Where the SDK sends its requests: Stripe's API unless set (tests and the demo: a local fake server).
    api_base: str | None = None
    # charge_automatically: Stripe charges the customer's default payment method; send_invoice: Stripe
    # emails the invoice, due on the document's due date (or days_until_due after finalization).
    collection_method: CollectionMethod = "send_invoice"
    # After the push finalizes an invoice: let Stripe advance it (email it, attempt payment, retry).
    auto_advance: bool = True
    days_until_due: Annotated[int, Field(ge=0, le=730)] = 30
    # Retries of one call on a network error, 409 or 5xx (the same idempotency key each time).
    max_network_retries: Annotated[int, Field(ge=0, le=10)] = 2

    @field_validator("api_base")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"TOLLWAY_STRIPE_API_BASE must be an http(s) URL, not {value!r}")
        return value.rstrip("/")

    def options(self) -> PushOptions:
        return PushOptions(self.collection_method, self.auto_advance, self.days_until_due)
