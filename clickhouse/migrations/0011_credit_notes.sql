-- Credit notes (src/tollway/billing/credit_note_store.py; docs/billing.md, "Credit notes"): one row per
-- credit note, written once when it is issued and never changed. `document` is the credit note as JSON
-- (billing/credit_notes.py: lines, amounts, reason). The id is derived from the invoice and the caller's
-- idempotency key, so a retried insert writes the same row again: ReplacingMergeTree(version) on
-- (invoice_id, credit_note_id) keeps one, and every reader uses `credit_notes FINAL`. Not partitioned:
-- rows of one credit note must meet in one part for FINAL.
CREATE TABLE IF NOT EXISTS {database}.credit_notes
(
    credit_note_id String,
    number         String,                    -- CN-2026-000007 (billing/numbering.py, series CN)
    invoice_id     String,
    customer_id    String,
    currency       LowCardinality(String),
    issued_on      Date,
    issued_at      DateTime64(6, 'UTC'),
    total          Decimal(38, 9),
    document       String,                    -- the credit note as JSON
    version        UInt64                     -- microseconds since the epoch at write time
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (invoice_id, credit_note_id);
