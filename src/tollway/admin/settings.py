"""Settings of the management API only: ``TOLLWAY_ADMIN_API_*``.

Kept apart from ``tollway.settings`` (the ext_authz server's) like ``tollway.warehouse.settings``: Redis,
the pepper and the catalog come from there, ClickHouse from ``TOLLWAY_CLICKHOUSE_*``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLWAY_ADMIN_API_", env_file=None, extra="ignore")

    # Loopback by default: put it behind your own network policy or an authenticating proxy to expose it.
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 9195
    # Signed links to a customer's usage page: default and longest lifetime.
    page_link_ttl_s: Annotated[int, Field(ge=60, le=30 * 86400)] = 86400
    page_link_max_ttl_s: Annotated[int, Field(ge=60, le=90 * 86400)] = 30 * 86400
