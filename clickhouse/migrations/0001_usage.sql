-- The usage table: one row per request per version (1 = decision, 2 = completed from Envoy's access log).
-- ReplacingMergeTree(version) keeps the highest version per (customer_id, ts, request_id) once parts merge;
-- until then both versions (and exact replays) coexist, so every reader uses `usage FINAL`.
-- loaded_at (server time of the insert) drives the incremental rollup refresh; its minmax index lets
-- `WHERE loaded_at >= …` skip granules.
CREATE TABLE IF NOT EXISTS {database}.usage
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
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (customer_id, ts, request_id);
