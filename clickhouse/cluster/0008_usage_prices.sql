-- Cluster variant of migrations/0008_usage_prices.sql: each request's real-time price and balance unit
-- (see that file), on the replicated tables and on the Distributed table over them.
ALTER TABLE {database}.usage_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS price_micros Int64 DEFAULT 0;

ALTER TABLE {database}.usage_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS balance_unit LowCardinality(String) DEFAULT '';

ALTER TABLE {database}.usage ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS price_micros Int64 DEFAULT 0;

ALTER TABLE {database}.usage ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS balance_unit LowCardinality(String) DEFAULT '';

-- A view's columns are fixed when it is created: recreate `usage_final` (SELECT *) to show the new ones.
CREATE OR REPLACE VIEW {database}.usage_final ON CLUSTER '{cluster}' AS
SELECT *
FROM {database}.usage FINAL;
