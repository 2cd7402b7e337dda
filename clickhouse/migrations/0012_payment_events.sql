-- Payment status events from the payment provider (Stripe's signed webhooks; src/tollway/billing/payment_status.py,
-- docs/payments.md#payment-status-from-stripe-webhooks). Append-only history beside the invoices: a finalized
-- invoice's document never changes, its payment status lives here (and, live, in Redis). One row per provider
-- event id: a redelivery writes the same row again (ReplacingMergeTree keeps one; readers use FINAL), and an
-- event once unmatched then matched after a fix keeps its later row.
CREATE TABLE IF NOT EXISTS {database}.payment_events
(
    event_id            String,                   -- the provider's event id (evt_…)
    provider            LowCardinality(String),   -- stripe
    type                LowCardinality(String),   -- invoice.paid, invoice.payment_failed
    created             DateTime64(3, 'UTC'),     -- when the provider created the event (orders events)
    invoice_id          String,                   -- Tollway's invoice id ('' when unmatched)
    customer_id         String,                   -- Tollway's customer id ('' when unmatched)
    provider_invoice_id String,                   -- the provider's invoice id (in_…)
    status              LowCardinality(String),   -- paid, payment_failed
    outcome             LowCardinality(String),   -- applied, stale (an older event), unmatched
    detail              String,                   -- why unmatched
    received_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(received_at)
ORDER BY (event_id);
