-- Cluster variant of migrations/0011_credit_notes.sql (macros {cluster}, {shard}, {replica}; Keeper).
-- credit_notes_local holds the rows, replicated within a shard; `credit_notes` is a Distributed table
-- over it, sharded by cityHash64(invoice_id) like `invoices`: every write of a credit note lands on one
-- shard, so `credit_notes FINAL` counts it once. Same columns and keys as the single-node table.
CREATE TABLE IF NOT EXISTS {database}.credit_notes_local ON CLUSTER '{cluster}'
(
    credit_note_id String,
    number         String,
    invoice_id     String,
    customer_id    String,
    currency       LowCardinality(String),
    issued_on      Date,
    issued_at      DateTime64(6, 'UTC'),
    total          Decimal(38, 9),
    document       String,
    version        UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/credit_notes_local', '{replica}', version)
ORDER BY (invoice_id, credit_note_id);

CREATE TABLE IF NOT EXISTS {database}.credit_notes ON CLUSTER '{cluster}'
AS {database}.credit_notes_local
ENGINE = Distributed('{cluster}', {database}, credit_notes_local, cityHash64(invoice_id));
