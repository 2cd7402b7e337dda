-- Usage rows keyed by Tollway's own id (issue 13). `request_id`, the last column of the sorting key,
-- used to hold Envoy's x-request-id, which a client chooses when Envoy preserves it
-- (preserve_external_request_id): a client repeating one id merged its requests into one row under FINAL.
-- From this version Tollway mints the row id when it decides (never client input) and writes it to
-- `request_id`, so the key, the engine and every reader stay as they are; Envoy's id moves to the
-- reference column `envoy_request_id`. Rows stored before, and rows a previous version left in a spool,
-- carry Envoy's id in `request_id`: the DEFAULT gives them the same value in `envoy_request_id`.
ALTER TABLE {database}.usage
    ADD COLUMN IF NOT EXISTS envoy_request_id String DEFAULT request_id AFTER request_id;

-- A view's columns are fixed when it is created: recreate `usage_final` (SELECT *) to show the new one.
CREATE OR REPLACE VIEW {database}.usage_final AS
SELECT *
FROM {database}.usage FINAL;
