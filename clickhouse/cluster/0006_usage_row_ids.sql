-- Cluster variant of migrations/0006_usage_row_ids.sql: Tollway's own row id in `request_id`, Envoy's
-- x-request-id in the reference column `envoy_request_id` (see that file). The column is added to the
-- replicated tables and to the Distributed table over them, with the same default.
ALTER TABLE {database}.usage_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS envoy_request_id String DEFAULT request_id AFTER request_id;

ALTER TABLE {database}.usage ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS envoy_request_id String DEFAULT request_id AFTER request_id;

-- A view's columns are fixed when it is created: recreate `usage_final` (SELECT *) to show the new one.
CREATE OR REPLACE VIEW {database}.usage_final ON CLUSTER '{cluster}' AS
SELECT *
FROM {database}.usage FINAL;
