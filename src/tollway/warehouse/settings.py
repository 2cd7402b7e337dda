"""Where the usage warehouse lives: ``TOLLWAY_CLICKHOUSE_DSN`` and ``TOLLWAY_CLICKHOUSE_DATABASE``.

Kept apart from ``tollway.settings`` so the ``db`` commands (and the metering writer) need nothing
else to be configured.
"""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tollway.warehouse.connection import check_identifier
from tollway.warehouse.errors import InvalidDatabaseName

DEFAULT_DSN = "chdb://./.tollway/chdb"
DEFAULT_DATABASE = "tollway"


class WarehouseSettings(BaseSettings):
    """``dsn``: ``chdb://PATH`` (embedded, relative paths from the working directory) or
    ``http(s)://[user:password@]host[:port]``; ``database``: a plain identifier."""

    model_config = SettingsConfigDict(env_prefix="TOLLWAY_CLICKHOUSE_", env_file=None, extra="ignore")

    dsn: str = DEFAULT_DSN
    database: str = DEFAULT_DATABASE

    @field_validator("database")
    @classmethod
    def _identifier(cls, value: str) -> str:
        try:
            return check_identifier(value)
        except InvalidDatabaseName as exc:
            raise ValueError(str(exc)) from None
