-- Cluster variant of migrations/0001_usage.sql. Needs the server macros {cluster}, {shard} and
-- {replica} (config.xml <macros>) and ClickHouse Keeper. `{database}` is replaced by Tollway; the
-- other braces are ClickHouse macros, expanded by each server.
--
-- usage_local holds the rows, replicated within a shard. `usage` is a Distributed table over it,
-- sharded by cityHash64(customer_id): every version and replay of a request (same customer_id) lands
-- on the same shard, so `usage FINAL` (run as usage_local FINAL on every shard) stays correct.
-- Writers insert into `usage` with distributed_foreground_insert = 1 (see clickhouse/README.md).
CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER '{cluster}';

CREATE TABLE IF NOT EXISTS {database}.usage_local ON CLUSTER '{cluster}'
(
    request_id          String,
    ts                  DateTime64(3, 'UTC'),
    customer_id         String,
    subject             String,
    plan                LowCardinality(String),
    feature             LowCardinality(String),
    route               LowCardinality(String),
    method              LowCardinality(String),
    status              UInt16,
    outcome             Enum8('admitted' = 1, 'refused' = 2),
    reason              LowCardinality(String),
    limits_checked      Bool,
    request_bytes       UInt64,
    response_bytes      UInt64,
    upstream_latency_ms Float64,
    meters              Map(LowCardinality(String), Decimal(38, 9)),
    version             UInt8,
    loaded_at           DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX loaded_at_minmax loaded_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/usage_local', '{replica}', version)
PARTITION BY toYYYYMM(ts)
ORDER BY (customer_id, ts, request_id);

CREATE TABLE IF NOT EXISTS {database}.usage ON CLUSTER '{cluster}'
AS {database}.usage_local
ENGINE = Distributed('{cluster}', {database}, usage_local, cityHash64(customer_id));
