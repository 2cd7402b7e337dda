-- Cluster variant of migrations/0004_invoices.sql (macros {cluster}, {shard}, {replica}; Keeper).
-- invoices_local and invoice_lines_local hold the rows, replicated within a shard; `invoices` and
-- `invoice_lines` are Distributed tables over them, sharded by cityHash64(invoice_id): every write of an
-- invoice and all its lines land on one shard, so `invoices FINAL` stays correct. Same columns and
-- keys as the single-node tables.
CREATE TABLE IF NOT EXISTS {database}.invoices_local ON CLUSTER '{cluster}'
(
    invoice_id   String,
    customer_id  String,
    plan_id      LowCardinality(String),
    period       String,                        -- the billed month as given: '2026-11'
    period_start DateTime64(6, 'UTC'),
    period_end   DateTime64(6, 'UTC'),
    timezone     String,
    currency     LowCardinality(String),
    status       Enum8('draft' = 1, 'finalized' = 2),
    total        Decimal(38, 9),
    generated_at DateTime64(6, 'UTC'),
    finalized_at Nullable(DateTime64(6, 'UTC')),
    document     String,                        -- the invoice as JSON (what render.py writes)
    version      UInt64                         -- microseconds since the epoch at write time
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/invoices_local', '{replica}', version)
ORDER BY invoice_id;

CREATE TABLE IF NOT EXISTS {database}.invoices ON CLUSTER '{cluster}'
AS {database}.invoices_local
ENGINE = Distributed('{cluster}', {database}, invoices_local, cityHash64(invoice_id));

-- The lines of each write of an invoice; an invoice's current lines are those whose version equals
-- the version of its row in `invoices FINAL` (a re-run with fewer lines leaves older rows behind,
-- with an older version). quantity_sql and quantity_parameters (JSON) reproduce a usage line's quantity.
CREATE TABLE IF NOT EXISTS {database}.invoice_lines_local ON CLUSTER '{cluster}'
(
    invoice_id          String,
    line_no             UInt16,
    kind                LowCardinality(String),   -- charge, minimum, discount
    charge_id           String,
    discount_id         String,
    meter               String,
    description         String,
    quantity            Nullable(Decimal(76, 12)),  -- usage (9 places) or a flat fee's period fraction (12)
    amount              Decimal(38, 9),
    timing              LowCardinality(String),
    breakdown           Array(String),
    quantity_sql        String,
    quantity_parameters String,
    version             UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/invoice_lines_local', '{replica}', version)
ORDER BY (invoice_id, line_no);

CREATE TABLE IF NOT EXISTS {database}.invoice_lines ON CLUSTER '{cluster}'
AS {database}.invoice_lines_local
ENGINE = Distributed('{cluster}', {database}, invoice_lines_local, cityHash64(invoice_id));
