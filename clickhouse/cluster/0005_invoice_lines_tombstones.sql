-- Cluster variant of ../migrations/0005_invoice_lines_tombstones.sql: invoice_lines_local is rebuilt
-- with `is_deleted` (tombstones for the surplus lines of a re-run with fewer lines), so that
-- `invoice_lines FINAL` returns exactly each invoice's current lines. The current lines are copied
-- through a Distributed table over the new local tables (same sharding key), the local tables swap
-- names, and the Distributed `invoice_lines` (which names its local table) gains the column.
CREATE TABLE IF NOT EXISTS {database}.invoice_lines_local_v2 ON CLUSTER '{cluster}'
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/invoice_lines_local_v2', '{replica}', version, is_deleted)
ORDER BY (invoice_id, line_no);

CREATE TABLE IF NOT EXISTS {database}.invoice_lines_v2 ON CLUSTER '{cluster}'
AS {database}.invoice_lines_local_v2
ENGINE = Distributed('{cluster}', {database}, invoice_lines_local_v2, cityHash64(invoice_id));

INSERT INTO {database}.invoice_lines_v2 SETTINGS insert_distributed_sync = 1
SELECT invoice_id, line_no, kind, charge_id, discount_id, meter, description, quantity, amount, timing, breakdown,
       quantity_sql, quantity_parameters, version, 0
FROM {database}.invoice_lines FINAL
WHERE (invoice_id, version) IN (SELECT invoice_id, version FROM {database}.invoices FINAL);

DROP TABLE IF EXISTS {database}.invoice_lines_v2 ON CLUSTER '{cluster}' SYNC;

RENAME TABLE {database}.invoice_lines_local TO {database}.invoice_lines_local_0004,
             {database}.invoice_lines_local_v2 TO {database}.invoice_lines_local ON CLUSTER '{cluster}';

ALTER TABLE {database}.invoice_lines ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS is_deleted UInt8 DEFAULT 0;

DROP TABLE IF EXISTS {database}.invoice_lines_local_0004 ON CLUSTER '{cluster}' SYNC;
