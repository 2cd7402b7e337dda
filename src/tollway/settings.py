"""Runtime settings from ``TOLLWAY_*`` environment variables (and an optional ``.env`` file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tollway.auth.digest import MIN_PEPPER_BYTES


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLWAY_", env_file=None, extra="ignore")

    # Redis / Valkey holding keys (and later limits). redis_timeout_ms bounds every hot-path call;
    # check_deadline_ms is one check's deadline: all its waits together (key lookup, subscription, lease,
    # limiter call), so the plan's outage policy answers before Envoy's ext_authz timeout (200 ms) does.
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "tw:"
    redis_cluster: bool = False
    redis_timeout_ms: Annotated[int, Field(ge=5, le=5000)] = 100
    check_deadline_ms: Annotated[int, Field(ge=5, le=10_000)] = 150
    # While Redis cannot be reached, a key record or subscription read at most this long ago is served
    # from its last-known copy (limits: each plan's outage_policy); 0 turns it off (fail closed at once).
    stale_max_s: Annotated[float, Field(ge=0, le=86400)] = 300.0
    # Capacity leases (docs/entitlements.md): the longest a busy customer's lease of limit units lasts;
    # 0 turns leases off (every check is one Redis call, coalesced per event-loop iteration).
    lease_max_ms: Annotated[int, Field(ge=0, le=1000)] = 100
    redis_max_connections: Annotated[int, Field(ge=1, le=10_000)] = 256

    # The HMAC pepper: from TOLLWAY_PEPPER, or a file (a mounted Kubernetes secret) via TOLLWAY_PEPPER_FILE.
    pepper: SecretStr | None = None
    pepper_file: Path | None = None

    # ext_authz servers. A port of 0 disables that protocol.
    host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 9191
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 9192
    # GET /healthz (catalog version and digest). Loopback by default; 0 = off. Worker i uses port + i.
    admin_port: Annotated[int, Field(ge=0, le=65535)] = 9193
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    shutdown_grace_s: Annotated[float, Field(ge=0, le=300)] = 10.0
    max_header_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 65536
    max_body_bytes: Annotated[int, Field(ge=0, le=64 << 20)] = 1 << 20

    # Where keys are read from. Query parameters are off unless named here.
    key_headers: Annotated[tuple[str, ...], NoDecode] = ("authorization", "x-api-key")
    key_query_param: str | None = None
    # Keep the API key from the upstream (its logs, its own auth). Set true only if the upstream needs it.
    forward_credential: bool = False

    # In-process key cache. Revocations are announced over pub/sub; the TTL bounds a missed announcement.
    # Unknown keys are remembered apart (their own bound and TTL): a flood of them never evicts a known key,
    # and a key created after a failed lookup is found within key_negative_cache_ttl_s at the latest.
    key_cache_ttl_s: Annotated[float, Field(ge=0, le=1.0)] = 1.0
    key_negative_cache_ttl_s: Annotated[float, Field(ge=0, le=1.0)] = 1.0
    key_cache_max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    key_negative_cache_max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000

    # OAuth 2.0 bearer tokens (JWT) as a second credential: the trusted issuers (a YAML file or ConfigMap,
    # read at start; see docs/authentication.md). Unset: API keys only. Tokens larger than
    # jwt_max_token_bytes are refused before parsing; verified tokens are cached (by digest) until they
    # expire, at most jwt_cache_max_ttl_s; a check waits at most jwt_key_wait_ms for an issuer's JWKS (and
    # never past its deadline, check_deadline_ms).
    jwt_issuers: Path | None = None
    jwt_max_token_bytes: Annotated[int, Field(ge=1024, le=65536)] = 8192
    jwt_cache_max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    jwt_cache_max_ttl_s: Annotated[float, Field(ge=0, le=86400)] = 300.0
    jwt_key_wait_ms: Annotated[int, Field(ge=5, le=5000)] = 150

    # Stage 2: the plan catalog (a YAML file or a ConfigMap manifest, e.g. a mounted ConfigMap volume).
    # Unset: Tollway only authenticates. Watched for changes every catalog_poll_s seconds.
    catalog: Path | None = None
    catalog_poll_s: Annotated[float, Field(gt=0, le=60)] = 0.5

    # Stage 3, metering. Unset spool_dir: no usage is recorded. Every process of a host writes rows to its
    # own segment in this directory (fsync'ed every spool_fsync_interval_s); one loader per directory
    # (the first process to take its lock, when loader=auto) inserts them into ClickHouse
    # (TOLLWAY_CLICKHOUSE_DSN / TOLLWAY_CLICKHOUSE_DATABASE). See docs/usage-tracking.md.
    # spool_max_bytes bounds the rows not yet loaded (the files: that plus under a segment per writer); it
    # must be at least one segment, and should be at least writers × segment bytes (docs/usage-tracking.md).
    spool_dir: Path | None = None
    spool_max_bytes: Annotated[int, Field(ge=1 << 20)] = 4 << 30
    spool_segment_bytes: Annotated[int, Field(ge=1 << 16)] = 64 << 20
    spool_fsync_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # When the spool is full (ClickHouse away for long): refuse with 503 (fail_closed), or admit unrecorded.
    spool_full_policy: Literal["fail_closed", "admit"] = "fail_closed"
    loader: Literal["auto", "off"] = "auto"
    # With loader=auto, a process that did not get the loader lock retries it this often: when the loader's
    # process is gone (exited, killed), another one loads the spool within this time.
    loader_takeover_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    loader_poll_s: Annotated[float, Field(gt=0, le=60)] = 0.2
    # Time between inserts unless a batch is full: fewer, larger inserts (ClickHouse's preference).
    loader_insert_interval_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    loader_batch_bytes: Annotated[int, Field(ge=1 << 16, le=1 << 30)] = 16 << 20
    rollup_interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Reservations (prepaid.reserve): settled from the access log; one not settled within this is settled
    # from its usage row, closed at its reserve or released by the sweeper, which looks every interval.
    reservation_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 900.0
    reservation_sweep_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Envoy's access-log stream and the ext_proc body meter (gRPC). 0 = off.
    metering_port: Annotated[int, Field(ge=0, le=65535)] = 9194
    # GET /tollway/v1/usage for callers, routed by Envoy to this port (0: off). Served by the process that
    # loads usage into ClickHouse (the loader); with metering off it is not served.
    usage_port: Annotated[int, Field(ge=0, le=65535)] = 9196
    # Plans with usage_headers: true get Tollway-Usage/Tollway-Cost on every admit, read at most this often.
    usage_headers_refresh_s: Annotated[float, Field(gt=0, le=3600)] = 5.0

    # Webhook endpoints (docs/webhook-endpoints.md), for development only: accept http:// endpoint URLs,
    # and endpoints on (or resolving to) loopback, private, link-local and other non-public addresses.
    webhooks_allow_http: bool = False
    webhooks_allow_private: bool = False

    problem_type_base: str = "https://tollway.dev/problems/"
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"  # one JSON object per line (with request_id), or text

    # Stripe's signed webhooks (docs/payments.md#payment-status-from-stripe-webhooks): the endpoint's signing
    # secret (whsec_…). Unset: the management API answers POST /payments/stripe/webhook with 503, records nothing.
    stripe_webhook_secret: SecretStr | None = None

    @field_validator("key_headers", mode="before")
    @classmethod
    def _split_headers(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            names = tuple(str(v).strip().lower() for v in value if str(v).strip())
            if not names:
                raise ValueError("at least one key header is needed")
            return names
        return value

    @model_validator(mode="after")
    def _one_pepper_source(self) -> Settings:
        if self.pepper is not None and self.pepper_file is not None:
            raise ValueError("set TOLLWAY_PEPPER or TOLLWAY_PEPPER_FILE, not both")
        return self

    @model_validator(mode="after")
    def _spool_holds_a_segment(self) -> Settings:
        if self.spool_max_bytes < self.spool_segment_bytes:
            raise ValueError(
                f"TOLLWAY_SPOOL_MAX_BYTES ({self.spool_max_bytes}) is smaller than one segment "
                f"(TOLLWAY_SPOOL_SEGMENT_BYTES, {self.spool_segment_bytes}): make it at least the number of "
                "processes writing to the spool × the segment size (docs/usage-tracking.md)"
            )
        return self

    def pepper_bytes(self) -> bytes:
        """The pepper, checked for length. Raises ``ValueError`` naming the setting when it is absent."""
        if self.pepper_file is not None:
            source = f"TOLLWAY_PEPPER_FILE ({self.pepper_file})"
            try:
                raw = self.pepper_file.read_bytes().strip()
            except OSError as exc:
                raise ValueError(f"cannot read {source}: {exc.strerror}") from None
        elif self.pepper is not None and self.pepper.get_secret_value():
            source = "TOLLWAY_PEPPER"
            raw = self.pepper.get_secret_value().encode()
        else:
            raise ValueError(
                "no pepper configured: set TOLLWAY_PEPPER (at least 32 bytes, e.g. `openssl rand -hex 32`) "
                "or TOLLWAY_PEPPER_FILE"
            )
        if len(raw) < MIN_PEPPER_BYTES:
            raise ValueError(f"{source}: the pepper must be at least {MIN_PEPPER_BYTES} bytes")
        return raw
