-- Cluster variant of migrations/0007_credit_ledger.sql (macros {cluster}, {shard}, {replica}; Keeper).
-- credit_ledger_local holds the entries, replicated within a shard; `credit_ledger` is a Distributed table
-- over it, sharded by cityHash64(customer_id): every write of an entry id lands on one shard, so
-- `credit_ledger FINAL` counts it once. Same columns and keys as the single-node table.
CREATE TABLE IF NOT EXISTS {database}.credit_ledger_local ON CLUSTER '{cluster}'
(
    entry_id    String,
    customer_id String,
    ts          DateTime64(3, 'UTC'),
    kind        LowCardinality(String),   -- grant, void, expiry, rollover, burn, return, adjustment
    grant_id    String,
    amount      Decimal(38, 6),
    unit        LowCardinality(String),
    request_id  String,
    actor       String,
    note        String,
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/credit_ledger_local', '{replica}', recorded_at)
ORDER BY (customer_id, entry_id);

CREATE TABLE IF NOT EXISTS {database}.credit_ledger ON CLUSTER '{cluster}'
AS {database}.credit_ledger_local
ENGINE = Distributed('{cluster}', {database}, credit_ledger_local, cityHash64(customer_id));
