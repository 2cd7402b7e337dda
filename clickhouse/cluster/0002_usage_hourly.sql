-- Cluster variant of migrations/0002_usage_hourly.sql: the rollup sharded like usage (by customer_id),
-- so a (customer_id, hour) slice and its groups live on one shard and `usage_hourly FINAL` is exact.
CREATE TABLE IF NOT EXISTS {database}.usage_hourly_local ON CLUSTER '{cluster}'
(
    hour         DateTime('UTC'),
    customer_id  String,
    plan         LowCardinality(String),
    feature      LowCardinality(String),
    meter        LowCardinality(String),
    status_class LowCardinality(String),
    requests     UInt64,
    quantity     Decimal(38, 9),
    refreshed_at DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/usage_hourly_local', '{replica}', refreshed_at)
PARTITION BY toYYYYMM(hour)
ORDER BY (customer_id, hour, plan, feature, meter, status_class);

CREATE TABLE IF NOT EXISTS {database}.usage_hourly ON CLUSTER '{cluster}'
AS {database}.usage_hourly_local
ENGINE = Distributed('{cluster}', {database}, usage_hourly_local, cityHash64(customer_id));

-- One small table replicated to every node (no {shard} in its Keeper path): the refresh watermark is
-- the same wherever the refresher connects.
CREATE TABLE IF NOT EXISTS {database}.rollup_state ON CLUSTER '{cluster}'
(
    name         String,
    watermark    DateTime64(3, 'UTC'),
    slices       UInt64,
    refreshed_at DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/rollup_state', '{replica}', refreshed_at)
ORDER BY name;
