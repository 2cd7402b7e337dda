-- Invoice numbers, issue and due dates (issue 17; src/tollway/billing/documents.py, docs/billing.md
-- "Numbers, issue and due dates"). `tollway bill` sets them on the row of an invoice it finalizes, as in its
-- document (`number`, `issued_on`, `due_on`); drafts, and every row written before this version, keep the
-- defaults: an empty number and null dates. The document stays the whole invoice: these columns are for
-- queries (an invoice by its number, what is due when).
ALTER TABLE {database}.invoices
    ADD COLUMN IF NOT EXISTS number String DEFAULT '';

ALTER TABLE {database}.invoices
    ADD COLUMN IF NOT EXISTS issued_on Nullable(Date);

ALTER TABLE {database}.invoices
    ADD COLUMN IF NOT EXISTS due_on Nullable(Date);
