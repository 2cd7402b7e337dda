-- Cluster variant of migrations/0012_payment_events.sql (macros {cluster}, {shard}, {replica}; Keeper).
-- payment_events_local is replicated within a shard; `payment_events` is a Distributed table over it sharded by
-- cityHash64(event_id): every write of an event lands on one shard, so FINAL counts it once. Same columns and
-- key as the single-node table.
CREATE TABLE IF NOT EXISTS {database}.payment_events_local ON CLUSTER '{cluster}'
(
    event_id            String,
    provider            LowCardinality(String),
    type                LowCardinality(String),
    created             DateTime64(3, 'UTC'),
    invoice_id          String,
    customer_id         String,
    provider_invoice_id String,
    status              LowCardinality(String),
    outcome             LowCardinality(String),
    detail              String,
    received_at         DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/payment_events_local', '{replica}', received_at)
ORDER BY (event_id);

CREATE TABLE IF NOT EXISTS {database}.payment_events ON CLUSTER '{cluster}'
AS {database}.payment_events_local
ENGINE = Distributed('{cluster}', {database}, payment_events_local, cityHash64(event_id));
