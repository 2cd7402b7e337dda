"""Hand-off to a payment provider: finalized invoices pushed to Stripe (docs/payments.md)."""
