-- The credit ledger (src/tollway/credits/ledger.py): one entry per change of a customer's prepaid balance
-- that is not a request's burn (a request's burn is its usage row's price_micros): grants, voids,
-- expiries, rollover cuts, the gateway's returns and adjustments. `amount` is signed (positive adds to
-- the balance), in the balance unit, to the micro-unit. Entry ids are deterministic (`grant:<grant_id>`,
-- `void:<grant_id>`, `expiry:<grant_id>`, `rollover:<grant_id>:<period_start_ms>`), so a retried command
-- or a re-run `tollway credits sync` writes the same row again: ReplacingMergeTree(recorded_at) on
-- (customer_id, entry_id) keeps one, and every reader uses `credit_ledger FINAL`. Not partitioned: rows
-- of one entry id must meet in one part for FINAL.
CREATE TABLE IF NOT EXISTS {database}.credit_ledger
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
ENGINE = ReplacingMergeTree(recorded_at)
ORDER BY (customer_id, entry_id);
