"""The Entitlement Management API (``tollway admin``): customers, API keys, subscriptions, usage,
invoices, an audit log of every change, and a customer's usage and invoice page. See docs/admin-api.md."""
