-- Cluster variant of migrations/0009_events_webhook_deliveries.sql (macros {cluster}, {shard}, {replica}; Keeper).
-- events_local and webhook_deliveries_local are replicated within a shard; `events` (sharded by
-- cityHash64(customer_id)) and `webhook_deliveries` (by cityHash64(endpoint_id)) are Distributed tables over
-- them: every write of a key lands on one shard, so FINAL counts it once. Same columns and keys as the
-- single-node tables.
CREATE TABLE IF NOT EXISTS {database}.events_local ON CLUSTER '{cluster}'
(
    id          String,
    type        LowCardinality(String),
    ts          DateTime64(3, 'UTC'),
    customer_id String,
    data        String,
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/events_local', '{replica}', recorded_at)
ORDER BY (customer_id, id);

CREATE TABLE IF NOT EXISTS {database}.events ON CLUSTER '{cluster}'
AS {database}.events_local
ENGINE = Distributed('{cluster}', {database}, events_local, cityHash64(customer_id));

CREATE TABLE IF NOT EXISTS {database}.webhook_deliveries_local ON CLUSTER '{cluster}'
(
    endpoint_id String,
    event_id    String,
    attempt_id  String,
    attempt     UInt16,
    ts          DateTime64(3, 'UTC'),
    status      UInt16,
    outcome     LowCardinality(String),
    duration_ms UInt32,
    error       String,
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/webhook_deliveries_local', '{replica}', recorded_at)
ORDER BY (endpoint_id, event_id, attempt_id);

CREATE TABLE IF NOT EXISTS {database}.webhook_deliveries ON CLUSTER '{cluster}'
AS {database}.webhook_deliveries_local
ENGINE = Distributed('{cluster}', {database}, webhook_deliveries_local, cityHash64(endpoint_id));
