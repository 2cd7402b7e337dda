-- Cluster variant of migrations/0010_invoice_numbers.sql: each finalized invoice's number, issue and due
-- dates (see that file), on the replicated table and on the Distributed table over it, with the same
-- defaults.
ALTER TABLE {database}.invoices_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS number String DEFAULT '';

ALTER TABLE {database}.invoices_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS issued_on Nullable(Date);

ALTER TABLE {database}.invoices_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS due_on Nullable(Date);

ALTER TABLE {database}.invoices ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS number String DEFAULT '';

ALTER TABLE {database}.invoices ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS issued_on Nullable(Date);

ALTER TABLE {database}.invoices ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS due_on Nullable(Date);
