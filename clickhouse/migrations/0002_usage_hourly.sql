-- Hourly rollup of the deduplicated usage rows, one row per
-- (customer_id, hour, plan, feature, meter, status_class). Written only by
-- tollway.warehouse.rollups.refresh_rollups, which recomputes whole (customer_id, hour) slices from
-- `usage FINAL` and writes requests = 0 for groups that disappeared; the newest refreshed_at wins, so
-- read it as `usage_hourly FINAL WHERE requests > 0`.
-- No insert-time materialized view: it would count both versions of a request and every replay.
CREATE TABLE IF NOT EXISTS {database}.usage_hourly
(
    hour         DateTime('UTC'),
    customer_id  String,
    plan         LowCardinality(String),
    feature      LowCardinality(String),
    meter        LowCardinality(String),   -- '' for requests whose meters map is empty
    status_class LowCardinality(String),   -- '2xx', '4xx', '5xx', … or 'none' for status 0
    requests     UInt64,                   -- usage rows (requests) in the group
    quantity     Decimal(38, 9),           -- sum of the meter's quantity
    refreshed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(refreshed_at)
PARTITION BY toYYYYMM(hour)
ORDER BY (customer_id, hour, plan, feature, meter, status_class);

-- The refresh watermark: the highest usage.loaded_at already rolled up, so a restart resumes.
CREATE TABLE IF NOT EXISTS {database}.rollup_state
(
    name         String,
    watermark    DateTime64(3, 'UTC'),
    slices       UInt64,
    refreshed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(refreshed_at)
ORDER BY name;
