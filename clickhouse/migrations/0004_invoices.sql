-- Invoices written by `tollway bill` (src/tollway/billing/invoice_store.py).
-- One row per invoice per write: ReplacingMergeTree(version) keeps the newest write of each invoice_id,
-- so read `invoices FINAL`. The invoice id is derived from (customer_id, period_start), so re-running a
-- draft period writes a newer version of the same invoice. A finalized invoice is never written again
-- (the bill job checks its status first).
CREATE TABLE IF NOT EXISTS {database}.invoices
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
ENGINE = ReplacingMergeTree(version)
ORDER BY invoice_id;

-- The lines of each write of an invoice; an invoice's current lines are those whose version equals
-- the version of its row in `invoices FINAL` (a re-run with fewer lines leaves older rows behind,
-- with an older version). quantity_sql and quantity_parameters (JSON) reproduce a usage line's quantity.
CREATE TABLE IF NOT EXISTS {database}.invoice_lines
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
ENGINE = ReplacingMergeTree(version)
ORDER BY (invoice_id, line_no);
