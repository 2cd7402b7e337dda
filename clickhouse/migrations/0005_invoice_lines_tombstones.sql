-- invoice_lines, rebuilt so that the natural query `SELECT … FROM invoice_lines FINAL WHERE invoice_id = …`
-- returns exactly the invoice's current lines. Until now a re-run of a draft with fewer lines left the
-- surplus lines of the older write behind (same key, older version), and FINAL returned them.
-- The engine gains `is_deleted`: when a write of an invoice has fewer lines than the one it replaces,
-- the writer (src/tollway/billing/invoice_store.py) writes a tombstone (is_deleted = 1, the new version)
-- for each surplus line number, and FINAL leaves those lines out. The engine cannot be changed in place:
-- the current lines are copied into a new table, which takes the name; stale lines are not copied.
CREATE TABLE IF NOT EXISTS {database}.invoice_lines_v2
(
    invoice_id          String,
    line_no             UInt16,
    kind                LowCardinality(String),   -- charge, minimum, discount, adjustment
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
    version             UInt64,                   -- the version of the invoice write the line belongs to
    is_deleted          UInt8 DEFAULT 0           -- 1: a tombstone, the line no longer exists
)
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (invoice_id, line_no);

INSERT INTO {database}.invoice_lines_v2
SELECT invoice_id, line_no, kind, charge_id, discount_id, meter, description, quantity, amount, timing, breakdown,
       quantity_sql, quantity_parameters, version, 0
FROM {database}.invoice_lines FINAL
WHERE (invoice_id, version) IN (SELECT invoice_id, version FROM {database}.invoices FINAL);

RENAME TABLE {database}.invoice_lines TO {database}.invoice_lines_0004, {database}.invoice_lines_v2 TO {database}.invoice_lines;

DROP TABLE IF EXISTS {database}.invoice_lines_0004;
